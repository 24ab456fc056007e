package demo

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// TestSnapshot: the counters the summary reads are the ones the service updates, by label.
func TestSnapshot(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry(), "test", false)
	m.EventsConsumed.Add(10)
	m.EventsProcessed.WithLabelValues(metrics.OutcomeApplied).Add(6)
	m.EventsProcessed.WithLabelValues(metrics.OutcomeDuplicate).Add(1)
	m.EventsProcessed.WithLabelValues(metrics.OutcomeInvalid).Add(2)
	m.EventsProcessed.WithLabelValues(metrics.OutcomeRejected).Add(1)
	m.DLQRecords.WithLabelValues("invalid", "").Add(2)
	m.DLQRecords.WithLabelValues("rejected", "51010").Add(1)
	m.APIRequests.WithLabelValues(im.APICreate, "0").Add(5)
	m.APIRequests.WithLabelValues(im.APICreate, "50004").Add(2)
	m.APIRequests.WithLabelValues(im.APIGet, "0").Add(3)
	got := (&run{metrics: m}).snapshot()
	want := counts{
		consumed: 10, processed: 10, creates: 7,
		outcomes: map[string]float64{"applied": 6, "duplicate": 1, "invalid": 2, "rejected": 1},
		dlq:      map[string]float64{"invalid ": 2, "rejected 51010": 1},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(counts{})); diff != "" {
		t.Fatalf("snapshot (-want +got):\n%s", diff)
	}
	if got.deadLettered() != 3 {
		t.Errorf("dead-lettered %v, want 3", got.deadLettered())
	}
}
