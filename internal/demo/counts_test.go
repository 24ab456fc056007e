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
	m.EventsProcessed.WithLabelValues(metrics.OutcomeApplied, "contact_group.created").Add(6)
	m.EventsProcessed.WithLabelValues(metrics.OutcomeDuplicate, "contact_group.renamed").Add(1)
	m.EventsProcessed.WithLabelValues(metrics.OutcomeInvalid, metrics.EventTypeUnknown).Add(2)
	m.EventsProcessed.WithLabelValues(metrics.OutcomeRejected, "contact_group.deleted").Add(1)
	m.DLQRecords.WithLabelValues("invalid", "", metrics.EventTypeUnknown).Add(2)
	m.DLQRecords.WithLabelValues("rejected", "51010", "contact_group.created").Add(1)
	m.APIRequests.WithLabelValues(im.APICreate, "0").Add(5)
	m.APIRequests.WithLabelValues(im.APICreate, "50004").Add(2)
	m.APIRequests.WithLabelValues(im.APIGet, "0").Add(3)
	got := (&run{metrics: m}).snapshot()
	want := counts{
		consumed: 10, processed: 10, creates: 7,
		outcomes: map[string]float64{"applied": 6, "duplicate": 1, "invalid": 2, "rejected": 1, "partial": 0, "exhausted": 0},
		applied: map[string]float64{"contact_group.created": 6, "contact_group.renamed": 0, "contact_group.contacts_added": 0,
			"contact_group.contacts_removed": 0, "contact_group.deleted": 0},
		dlq: map[string]float64{"invalid ": 2, "rejected 51010": 1},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(counts{})); diff != "" {
		t.Fatalf("snapshot (-want +got):\n%s", diff)
	}
	if got.deadLettered() != 3 {
		t.Errorf("dead-lettered %v, want 3", got.deadLettered())
	}
}
