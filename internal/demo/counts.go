package demo

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// counts is a snapshot of the service's own counters.
type counts struct {
	consumed  float64
	outcomes  map[string]float64
	dlq       map[string]float64 // "reason code"
	creates   float64
	processed float64
}

// deadLettered is the records that ended on the DLQ topic.
func (c counts) deadLettered() float64 {
	return c.outcomes[metrics.OutcomeInvalid] + c.outcomes[metrics.OutcomeRejected] +
		c.outcomes[metrics.OutcomePartial] + c.outcomes[metrics.OutcomeExhausted]
}

// snapshot reads the service's counters off the collectors it updates, so no metric is looked
// up by name.
func (d *run) snapshot() counts {
	c := counts{outcomes: map[string]float64{}, dlq: map[string]float64{}}
	m := d.metrics
	for _, s := range collect(m.EventsConsumed) {
		c.consumed += s.GetCounter().GetValue()
	}
	for _, s := range collect(m.EventsProcessed) {
		c.outcomes[label(s, metrics.LabelOutcome)] += s.GetCounter().GetValue()
		c.processed += s.GetCounter().GetValue()
	}
	for _, s := range collect(m.DLQRecords) {
		c.dlq[label(s, metrics.LabelReason)+" "+label(s, metrics.LabelCode)] += s.GetCounter().GetValue()
	}
	for _, s := range collect(m.APIRequests) {
		if label(s, metrics.LabelAPI) == im.APICreate {
			c.creates += s.GetCounter().GetValue()
		}
	}
	return c
}

// collect returns the current series of c.
func collect(c prometheus.Collector) []*dto.Metric {
	ch := make(chan prometheus.Metric)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	var out []*dto.Metric
	for m := range ch { // drained to the end: the goroutine above always finishes
		var s dto.Metric
		if m.Write(&s) == nil {
			out = append(out, &s)
		}
	}
	return out
}

// label is the value of m's label name ("" when it has none).
func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
