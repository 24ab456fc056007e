package dispatcher

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
)

func TestOutageDetector(t *testing.T) {
	t0 := time.Unix(0, 0)
	for _, tc := range []struct {
		name  string
		calls func(record func(at time.Duration, account string, failed bool) bool) bool
		want  bool
	}{
		{"all fail, many accounts", func(rec func(time.Duration, string, bool) bool) bool {
			trip := false
			for i := range 20 {
				trip = rec(time.Duration(i)*time.Millisecond, string(rune('a'+i%5)), true)
			}
			return trip
		}, true},
		{"all fail, one account", func(rec func(time.Duration, string, bool) bool) bool {
			trip := false
			for i := range 40 {
				trip = trip || rec(time.Duration(i)*time.Millisecond, "a", true)
			}
			return trip
		}, false},
		{"fewer than the window", func(rec func(time.Duration, string, bool) bool) bool {
			trip := false
			for i := range 19 {
				trip = trip || rec(time.Duration(i)*time.Millisecond, string(rune('a'+i)), true)
			}
			return trip
		}, false},
		{"75% failing", func(rec func(time.Duration, string, bool) bool) bool {
			trip := false
			for i := range 100 {
				trip = trip || rec(time.Duration(i)*time.Millisecond, string(rune('a'+i%7)), i%4 != 0)
			}
			return trip
		}, false},
		{"85% failing", func(rec func(time.Duration, string, bool) bool) bool {
			trip := false
			for i := range 100 {
				trip = trip || rec(time.Duration(i)*time.Millisecond, string(rune('a'+i%7)), i%20 > 2)
			}
			return trip
		}, true},
		{"spread over more than the span", func(rec func(time.Duration, string, bool) bool) bool {
			trip := false
			for i := range 40 {
				trip = trip || rec(time.Duration(i)*time.Second, string(rune('a'+i%7)), true)
			}
			return trip
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := outageDetector{size: 20, span: 10 * time.Second, ratio: 0.8, accounts: 3}
			got := tc.calls(func(at time.Duration, account string, failed bool) bool {
				return o.record(t0.Add(at), account, failed)
			})
			if got != tc.want {
				t.Errorf("tripped = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestProbeTakesAGetSlot: the startup probe is a get call of the budget like any other. A
// replica with no share of the get budget yet (no partitions) waits for one instead of adding a
// call to a second the others may have filled, says so in Ready, and probes once its share is
// in force, the call counted in the get limiter's window.
func TestProbeTakesAGetSlot(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Limiter.Standalone = false
		c.Now, c.Sleep = time.Now, sleep
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	testwait.For(t, 5*time.Second, "the probe queued at the get limiter", func() bool { return h.d.get.Waiting() == 1 })
	if n := h.api.count(im.APIGet); n != 0 {
		t.Fatalf("%d get calls with no share of the get budget, want 0", n)
	}
	if err := h.d.Ready(); !errors.Is(err, ErrUnverified) || !strings.Contains(err.Error(), "share of the get budget") {
		t.Fatalf("Ready while the probe waits: %v, want ErrUnverified saying it waits for a share", err)
	}
	h.d.SetPartitions([]int{0}, 1)
	testwait.For(t, 5*time.Second, "the probe", func() bool { return h.d.Ready() == nil })
	if n := h.api.count(im.APIGet); n != 1 {
		t.Fatalf("%d get calls, want the probe's 1", n)
	}
	if n := h.d.get.Used(); n != 1 {
		t.Fatalf("get limiter's window holds %d calls, want the probe's", n)
	}
}
