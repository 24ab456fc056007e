package metrics_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// TestEventTypesAreEvents: the event_type label values are exactly the event package's types
// (metrics keeps its own list so that it does not import event).
func TestEventTypesAreEvents(t *testing.T) {
	var want []string
	for _, typ := range event.Types() {
		want = append(want, string(typ))
	}
	if diff := cmp.Diff(want, metrics.EventTypes()); diff != "" {
		t.Fatalf("metrics.EventTypes (-event.Types +metrics):\n%s", diff)
	}
}
