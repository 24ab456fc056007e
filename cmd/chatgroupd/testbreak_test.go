package main

import (
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/budget"
	"github.com/chatgroupd/chatgroupd/dispatcher"
	"github.com/chatgroupd/chatgroupd/im"
)

func TestTestBreak(t *testing.T) {
	for _, tc := range []struct {
		v       string
		want    string
		wantErr bool
	}{
		{"", "", false}, {"legacy-drain", breakLegacyDrain, false}, {"whole-budget", breakWholeBudget, false}, {"drop-partition", breakDropPart, false},
		{"blind-lifecycle", breakBlindLifecycle, false}, {"unstated-ends", breakUnstatedEnds, false},
		{"ungated-writes", breakUngatedWrites, false}, {"ungated-lane", breakUngatedLane, false},
		{"no-preload", breakNoPreload, false},
		{"legacy_drain", "", true}, {"yes", "", true},
	} {
		got, err := testBreak(tc.v)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("testBreak(%q) = %q, %v; want %q, error %v", tc.v, got, err, tc.want, tc.wantErr)
		}
	}
}

// TestNoPreloadSink: the no-preload break's sink counts none of a predecessor's calls, where the
// dispatcher it wraps counts them all; the rest of the sink is the dispatcher's.
func TestNoPreloadSink(t *testing.T) {
	client, err := im.New(im.Config{SDKAppID: 1400000000, SecretKey: "k", BaseURL: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		sink func(*dispatcher.Dispatcher) budget.Sink
		want int
	}{
		{"dispatcher", func(d *dispatcher.Dispatcher) budget.Sink { return d }, 7},
		{"no-preload", func(d *dispatcher.Dispatcher) budget.Sink { return noPreload{d} }, 0},
	} {
		d, err := dispatcher.New(dispatcher.Config{API: client, RateLimit: 200, FleetBudget: true})
		if err != nil {
			t.Fatal(err)
		}
		tc.sink(d).Preload(7, time.Time{})
		if got := d.Used(); got != tc.want {
			t.Errorf("%s: Used after Preload(7) = %d, want %d", tc.name, got, tc.want)
		}
	}
}
