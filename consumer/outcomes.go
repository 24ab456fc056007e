package consumer

import (
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// outcomeCounters counts records that ended in EventsProcessed, by outcome and event type, and
// applied ones in EventE2E by type; each child is looked up once.
type outcomeCounters struct {
	processed *prometheus.CounterVec
	e2e       *prometheus.HistogramVec
	mu        sync.Mutex
	children  map[[2]string]prometheus.Counter
}

func newOutcomeCounters(m *metrics.Metrics) *outcomeCounters {
	return &outcomeCounters{processed: m.EventsProcessed, e2e: m.EventE2E, children: map[[2]string]prometheus.Counter{}}
}

// inc counts one record of type t (read from value when ev is nil: an invalid record) that
// ended with outcome.
func (o *outcomeCounters) inc(outcome string, ev *event.Event, value []byte) {
	k := [2]string{outcome, typeLabel(ev, value)}
	o.mu.Lock()
	c := o.children[k]
	if c == nil {
		c = o.processed.WithLabelValues(k[0], k[1])
		o.children[k] = c
	}
	o.mu.Unlock()
	c.Inc()
}

// applied counts an applied event and observes its end-to-end seconds.
func (o *outcomeCounters) applied(ev *event.Event, seconds float64, known bool) {
	o.inc(metrics.OutcomeApplied, ev, nil)
	if known {
		o.e2e.WithLabelValues(typeLabel(ev, nil)).Observe(seconds)
	}
}

// knownOutcome reports whether o is an EventsProcessed outcome.
func knownOutcome(o string) bool { return slices.Contains(metrics.Outcomes(), o) }

// typeLabel is the event_type label of a record: ev's type, else the one its value names when
// that is known, else metrics.EventTypeUnknown.
func typeLabel(ev *event.Event, value []byte) string {
	t := event.PeekType(value)
	if ev != nil {
		t = ev.EventType
	}
	if t.Known() {
		return string(t)
	}
	return metrics.EventTypeUnknown
}
