package ratelimit

import (
	"testing"
	"time"
)

// TestDemandHold walks the consumer's calls through rebalances and checks the demand reported
// at each step against the live one.
func TestDemandHold(t *testing.T) {
	t0 := time.Unix(1_900_000_000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	type step struct {
		ms     int
		set    bool // a Partitions call (owned, demand) rather than a Demand(live) query
		owned  int
		demand int // Partitions: the demand then; Demand: the live one
		want   int // Demand's answer
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"a rebalance that keeps the partitions holds the demand until Settle after set-up", []step{
			{ms: 0, set: true, owned: 2, demand: 2},
			{ms: 5000, set: true, owned: 0, demand: 200}, // the generation ends, callers still waiting
			{ms: 5010, demand: 52, want: 200},
			{ms: 5040, set: true, owned: 2, demand: 52}, // set up again
			{ms: 5300, demand: 12, want: 200},
			{ms: 6039, demand: 12, want: 200},
			{ms: 6040, demand: 12, want: 12}, // Settle after set-up
			{ms: 6100, demand: 200, want: 200},
		}},
		{"a next generation without partitions releases at once", []step{
			{ms: 0, set: true, owned: 3},
			{ms: 1000, set: true, owned: 0, demand: 200},
			{ms: 1010, demand: 40, want: 200},
			{ms: 1050, set: true, owned: 0, demand: 40},
			{ms: 1051, demand: 40, want: 40},
			{ms: 1500, demand: 2, want: 2},
		}},
		{"with no set-up (a shutdown drain, a long join) the hold ends Max after the generation", []step{
			{ms: 0, set: true, owned: 1},
			{ms: 100, set: true, owned: 0, demand: 150},
			{ms: 2099, demand: 7, want: 150},
			{ms: 2100, demand: 7, want: 7},
			{ms: 2200, set: true, owned: 1, demand: 7}, // a late set-up does not revive it
			{ms: 2300, demand: 7, want: 7},
		}},
		{"a set-up late in the hold keeps the Max bound", []step{
			{ms: 0, set: true, owned: 1},
			{ms: 100, set: true, owned: 0, demand: 150},
			{ms: 1900, set: true, owned: 1, demand: 3},
			{ms: 2099, demand: 3, want: 150},
			{ms: 2100, demand: 3, want: 3},
		}},
		{"a replica that owned nothing holds nothing", []step{
			{ms: 0, set: true, owned: 0, demand: 9},
			{ms: 10, demand: 2, want: 2},
			{ms: 20, set: true, owned: 0, demand: 9},
			{ms: 30, demand: 2, want: 2},
		}},
		{"a live demand above the held one is reported", []step{
			{ms: 0, set: true, owned: 1},
			{ms: 100, set: true, owned: 0, demand: 30},
			{ms: 200, demand: 120, want: 120},
			{ms: 300, demand: 10, want: 30},
		}},
		{"a second rebalance within Settle carries the held demand over", []step{
			{ms: 0, set: true, owned: 2},
			{ms: 100, set: true, owned: 0, demand: 200},
			{ms: 150, set: true, owned: 2, demand: 20},
			{ms: 400, set: true, owned: 0, demand: 20}, // ends again before its callers queued
			{ms: 450, set: true, owned: 2, demand: 20},
			{ms: 1449, demand: 20, want: 200},
			{ms: 1450, demand: 20, want: 20},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h DemandHold
			for i, s := range tc.steps {
				if s.set {
					h.Partitions(at(s.ms), s.owned, s.demand)
					continue
				}
				if got := h.Demand(at(s.ms), s.demand); got != s.want {
					t.Fatalf("step %d at %d ms: demand %d with live %d, want %d", i, s.ms, got, s.demand, s.want)
				}
			}
		})
	}
}

// TestDemandHoldDurations: Settle and Max replace the defaults.
func TestDemandHoldDurations(t *testing.T) {
	t0 := time.Unix(1_900_000_000, 0)
	h := DemandHold{Settle: 100 * time.Millisecond, Max: 300 * time.Millisecond}
	h.Partitions(t0, 1, 0)
	h.Partitions(t0, 0, 80)
	if got := h.Demand(t0.Add(299*time.Millisecond), 1); got != 80 {
		t.Fatalf("before Max: %d, want 80", got)
	}
	if got := h.Demand(t0.Add(300*time.Millisecond), 1); got != 1 {
		t.Fatalf("at Max: %d, want the live 1", got)
	}
	h.Partitions(t0.Add(time.Second), 1, 0)
	h.Partitions(t0.Add(2*time.Second), 0, 80)
	h.Partitions(t0.Add(2*time.Second), 1, 0)
	if got := h.Demand(t0.Add(2*time.Second+99*time.Millisecond), 1); got != 80 {
		t.Fatalf("before Settle: %d, want 80", got)
	}
	if got := h.Demand(t0.Add(2*time.Second+100*time.Millisecond), 1); got != 1 {
		t.Fatalf("at Settle: %d, want the live 1", got)
	}
}

// TestDemandHoldRelease: a replica that stops holds nothing, before or after its generation ends.
func TestDemandHoldRelease(t *testing.T) {
	t0 := time.Unix(1_900_000_000, 0)
	var h DemandHold
	h.Partitions(t0, 2, 0)
	h.Release() // stopping: then the generation's end
	h.Partitions(t0, 0, 200)
	if got := h.Demand(t0, 3); got != 3 {
		t.Fatalf("release before the end: %d, want the live 3", got)
	}
	h.Partitions(t0, 2, 0)
	h.Partitions(t0, 0, 200)
	h.Release()
	if got := h.Demand(t0, 3); got != 3 {
		t.Fatalf("release after the end: %d, want the live 3", got)
	}
}
