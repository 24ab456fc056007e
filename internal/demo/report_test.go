package demo

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestBuildReport: the backlogged window and its rate from hand-made samples.
func TestBuildReport(t *testing.T) {
	ms := time.Millisecond
	samples := []progressSample{
		{at: 100 * ms, produced: 1000, ended: 0, creates: 0},
		{at: 1000 * ms, produced: 1000, ended: 10, creates: 5},    // first call: start-up 1s
		{at: 3000 * ms, produced: 1000, ended: 400, creates: 405}, // backlog 600 > 200
		{at: 5000 * ms, produced: 1000, ended: 850, creates: 805}, // backlog 150: over
		{at: 6000 * ms, produced: 1000, ended: 1000, creates: 900},
	}
	want := Report{Creates: 900, Startup: time.Second, Backlogged: true, WindowStart: time.Second, WindowEnd: 3 * time.Second,
		WindowCalls: 400, Rate: 200, Tail: 3 * time.Second, Drained: 6 * time.Second}
	if diff := cmp.Diff(want, buildReport(samples, 200, 6*time.Second)); diff != "" {
		t.Fatalf("report (-want +got):\n%s", diff)
	}
	want = Report{Creates: 5, Startup: time.Second, Drained: time.Second}
	if diff := cmp.Diff(want, buildReport(samples[:2], 200, time.Second)); diff != "" {
		t.Fatalf("no window yet (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(Report{}, buildReport(nil, 200, 0)); diff != "" {
		t.Fatalf("no samples (-want +got):\n%s", diff)
	}
}

func TestQuantile(t *testing.T) {
	r := Report{Latencies: []time.Duration{1, 2, 3, 4}}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0, 1}, {0.5, 2}, {0.75, 3}, {0.99, 4}, {1, 4}} {
		if got := r.Quantile(tc.q); got != tc.want {
			t.Errorf("quantile %v of 1..4 = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := (Report{}).Quantile(0.5); got != 0 {
		t.Errorf("quantile of no samples = %v", got)
	}
}
