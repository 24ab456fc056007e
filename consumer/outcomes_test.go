package consumer

import (
	"testing"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/metrics"
	"github.com/chatgroupd/chatgroupd/metrics/metricstest"
)

// TestOutcomeCounters: records are counted by outcome and event type; a record without a parsed
// event is counted by the type its value names when that is known, else as unknown.
func TestOutcomeCounters(t *testing.T) {
	m := metrics.NewNop()
	o := newOutcomeCounters(m)
	renamed := event.NewRenamed("e", "a", "old", "new")
	o.applied(renamed, 0.5, true)
	o.applied(renamed, 0, false) // no occurred_at nor record time: counted, not observed
	o.inc(metrics.OutcomeDuplicate, renamed, nil)
	o.inc(metrics.OutcomeInvalid, nil, []byte(`{"event_type":"contact_group.deleted","group_name":""}`))
	o.inc(metrics.OutcomeInvalid, nil, []byte(`{"event_type":"contact_group.archived"}`))
	o.inc(metrics.OutcomeInvalid, nil, []byte(`not json`))
	for _, tc := range []struct {
		outcome, typ string
		want         float64
	}{
		{metrics.OutcomeApplied, "contact_group.renamed", 2},
		{metrics.OutcomeDuplicate, "contact_group.renamed", 1},
		{metrics.OutcomeInvalid, "contact_group.deleted", 1},
		{metrics.OutcomeInvalid, metrics.EventTypeUnknown, 2},
		{metrics.OutcomeApplied, "contact_group.created", 0},
	} {
		if got := metricstest.CollectorSum(m.EventsProcessed, metrics.LabelOutcome, tc.outcome, metrics.LabelEventType, tc.typ); got != tc.want {
			t.Errorf("events_processed_total{outcome=%s,event_type=%s} = %v, want %v", tc.outcome, tc.typ, got, tc.want)
		}
	}
	if got := metricstest.CollectorSum(m.EventE2E, metrics.LabelEventType, "contact_group.renamed"); got != 1 {
		t.Errorf("event_e2e_seconds_count{renamed} = %v, want 1", got)
	}
	if !knownOutcome(metrics.OutcomeExhausted) || knownOutcome("stalled") {
		t.Error("knownOutcome disagrees with metrics.Outcomes")
	}
}
