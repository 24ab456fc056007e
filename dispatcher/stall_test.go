package dispatcher

import (
	"context"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
)

// TestStallLimit: an event failing transiently returns Stalled once the stall limit has passed
// (well before the retry budget), carrying when its retrying began; other classes never stall.
func TestStallLimit(t *testing.T) {
	for _, tc := range []struct {
		name string
		code int
		want Result
	}{
		{"transient stalls", 60008, Stalled},
		{"permanent is rejected at once", 40001, Rejected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.RetryBudget = time.Hour })
			h.api.setAlways(im.APICreate, imErr(im.APICreate, tc.code))
			start := h.clock.Now()
			o := h.dispatch(Task{Event: newEvent("alice", "friends"), StallLimit: 2 * time.Minute})
			if o.Result != tc.want {
				t.Fatalf("outcome = %+v, want %v", o, tc.want)
			}
			if tc.want != Stalled {
				return
			}
			spent := h.clock.Now().Sub(start)
			if spent < 2*time.Minute || spent > 10*time.Minute {
				t.Errorf("stalled after %v, want just past the 2m limit", spent)
			}
			if !o.RetryStart.Equal(start) {
				t.Errorf("retry start %v, want %v", o.RetryStart, start)
			}
			if o.Attempts < 2 || o.Attempts != h.api.count(im.APICreate) {
				t.Errorf("attempts %d, creates %d", o.Attempts, h.api.count(im.APICreate))
			}
		})
	}
}

// TestRetryStartCarriesBudget: a dispatch resumed with the RetryStart of an earlier one (the
// retry lane after a restart) is exhausted when the budget counted from that start is spent,
// not a whole budget later.
func TestRetryStartCarriesBudget(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.RetryBudget = 10 * time.Minute })
	h.api.setAlways(im.APICreate, imErr(im.APICreate, 60008))
	now := h.clock.Now()
	o := h.dispatch(Task{Event: newEvent("alice", "friends"), RetryStart: now.Add(-9 * time.Minute)})
	if o.Result != Exhausted {
		t.Fatalf("outcome = %+v, want exhausted", o)
	}
	if spent := h.clock.Now().Sub(now); spent > 2*time.Minute {
		t.Errorf("exhausted after %v more; the carried start left only 1m of budget", spent)
	}
	// A RetryStart in the future is ignored (a clock skew between members must not extend it).
	h2 := newHarness(t, func(c *Config) { c.RetryBudget = time.Minute })
	h2.api.setAlways(im.APICreate, imErr(im.APICreate, 60008))
	n2 := h2.clock.Now()
	if o := h2.dispatch(Task{Event: newEvent("bob", "friends"), RetryStart: n2.Add(time.Hour)}); o.Result != Exhausted {
		t.Fatalf("outcome = %+v", o)
	}
	if spent := h2.clock.Now().Sub(n2); spent > 2*time.Minute {
		t.Errorf("future RetryStart extended the budget: %v", spent)
	}
}

// TestParkNow: an event failing transiently returns Stalled as soon as ParkNow ends, even in
// the middle of a long backoff and without a StallLimit; a permanent failure is still rejected.
func TestParkNow(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.RetryBudget = time.Hour
		c.BackoffBase, c.BackoffMax = time.Minute, time.Minute
		c.Sleep = func(ctx context.Context, d time.Duration) error {
			if d < 10*time.Millisecond {
				return nil // limiter pacing
			}
			<-ctx.Done() // a backoff only ends early
			return ctx.Err()
		}
	})
	h.api.setAlways(im.APICreate, imErr(im.APICreate, 60008))
	park, parkNow := context.WithCancel(context.Background())
	done := make(chan Outcome, 1)
	go func() { done <- h.dispatch(Task{Event: newEvent("alice", "friends"), ParkNow: park}) }()
	select {
	case o := <-done:
		t.Fatalf("returned %+v before ParkNow", o)
	case <-time.After(100 * time.Millisecond):
	}
	parkNow()
	select {
	case o := <-done:
		if o.Result != Stalled || o.RetryStart.IsZero() {
			t.Errorf("outcome %+v, want stalled with its retry start", o)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ParkNow did not end the backoff")
	}
	h2 := newHarness(t, nil)
	h2.api.setAlways(im.APICreate, imErr(im.APICreate, 40001))
	if o := h2.dispatch(Task{Event: newEvent("bob", "friends"), ParkNow: park}); o.Result != Rejected {
		t.Fatalf("permanent failure with ParkNow: %+v", o)
	}
}
