package dispatcher

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
	"github.com/chatgroupd/chatgroupd/ratelimit"
)

// TestFleetDemandAndUsed: in fleet mode the create limiter waits for SetCeiling; with work
// queued at its ceiling the dispatcher asks for the whole budget, and once the work is done its
// demand falls to what it used lately.
func TestFleetDemandAndUsed(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Limiter.Standalone = false
		c.FleetBudget = true
		c.RateLimit = 200
		c.Now, c.Sleep = time.Now, sleep
	})
	h.d.SetPartitions([]int{0}, 1) // get and update only
	if got := h.d.create.Rate(); got != 0 {
		t.Fatalf("create rate %v before any SetCeiling, want 0", got)
	}
	if got := h.d.Demand(); got != 2 {
		t.Errorf("idle demand %d, want 2", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if o, err := h.d.Dispatch(ctx, Task{Event: newEvent(fmt.Sprintf("u%d", i), "g")}); err != nil || o.Result != Applied {
				t.Errorf("event %d: %+v %v", i, o, err)
			}
		}()
	}
	testwait.For(t, 5*time.Second, "callers queued at the limiter", func() bool { return h.d.create.Waiting() >= 30 })
	if got := h.d.Demand(); got != 200 {
		t.Errorf("demand with 40 callers and no ceiling = %d, want the budget", got)
	}
	h.d.SetCeiling(10, 10)
	testwait.For(t, 5*time.Second, "10 calls", func() bool { return h.d.Used() >= 10 })
	if got := h.d.Demand(); got != 200 {
		t.Errorf("demand with callers waiting at a full ceiling = %d, want the budget", got)
	}
	h.d.SetCeiling(200, 200)
	wg.Wait()
	// Both ceilings were free at once (SetCeiling's now): all 40 went within the window.
	if got := h.d.Used(); got < 30 || got > 40 {
		t.Errorf("used %d, want the calls of the last window (30-40)", got)
	}
	// No work left: the demand follows the recent use (40 calls in a quarter window is the
	// budget's rate, with the margin) down to 2 once they are a quarter window old.
	testwait.For(t, 5*time.Second, "demand 2 with no work left", func() bool { return h.d.Demand() == 2 })
}

// TestFleetCeilingSetsEveryAPI: in fleet mode the partitions set no limiter; the grant sets the
// create ceiling (now at once, the rest a window later) and, scaled to their budgets, the get,
// update and delete ceilings, which grow only a window after it; shrinks apply at once everywhere.
func TestFleetCeilingSetsEveryAPI(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Limiter.Standalone = false
		c.FleetBudget = true
		c.RateLimit, c.GetRateLimit, c.UpdateRateLimit, c.DeleteRateLimit = 200, 100, 100, 50
	})
	h.d.SetPartitions([]int{0, 1}, 2) // every partition: the whole budget in static mode
	for api, l := range map[string]*ratelimit.Limiter{"create": h.d.create, "get": h.d.get, "update": h.d.update, "delete": h.d.delete} {
		if got := l.Rate(); got != 0 {
			t.Fatalf("%s rate %v after SetPartitions in fleet mode, want 0 until a grant", api, got)
		}
	}
	h.d.SetCeiling(60, 40)
	if c, g, u := h.d.create.Rate(), h.d.get.Rate(), h.d.update.Rate(); c != 40 || g != 0 || u != 0 {
		t.Fatalf("at once: create %v get %v update %v, want 40, 0, 0", c, g, u)
	}
	h.clock.Advance(2 * time.Second) // past the window (1s and the jitter margin)
	if c, g, u := h.d.create.Rate(), h.d.get.Rate(), h.d.update.Rate(); c != 60 || g != 30 || u != 30 {
		t.Fatalf("a window later: create %v get %v update %v, want 60, 30, 30 (the grant scaled to 100/200)", c, g, u)
	}
	if d := h.d.delete.Rate(); d != 15 {
		t.Fatalf("a window later: delete %v, want 15 (the grant scaled to 50/200)", d)
	}
	h.d.SetCeiling(21, 0)
	if c, g, u, d := h.d.create.Rate(), h.d.get.Rate(), h.d.update.Rate(), h.d.delete.Rate(); c != 21 || g != 10 || u != 10 || d != 5 {
		t.Fatalf("after a shrink: create %v get %v update %v delete %v, want 21, 10, 10, 5 at once (rounded down)", c, g, u, d)
	}
	h.d.SetPartitions(nil, 2) // a generation ends: the fleet ceilings stay
	if g := h.d.get.Rate(); g != 10 {
		t.Fatalf("get rate %v after SetPartitions(nil), want the grant's 10", g)
	}
}

// TestFleetDemandCountsGets: callers waiting at a full get ceiling make the replica ask for
// the whole budget, as callers at the create ceiling do.
func TestFleetDemandCountsGets(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Limiter.Standalone = false
		c.FleetBudget = true
		c.RateLimit, c.GetRateLimit = 200, 100
		c.Now, c.Sleep = time.Now, sleep
	})
	if got := h.d.Demand(); got != 4 {
		t.Fatalf("idle demand %d, want 4 (the get limiter's 2, in calls of a budget twice its size)", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c, err := h.d.get.Acquire(ctx, "a"); err == nil {
				c.Done()
			}
		}()
	}
	testwait.For(t, 5*time.Second, "callers queued at the get limiter", func() bool { return h.d.get.Waiting() >= 5 })
	if got := h.d.Demand(); got != 200 {
		t.Errorf("demand with get callers waiting and no ceiling = %d, want the whole create budget", got)
	}
}

// TestFleetDemandHeldAcrossRebalance: the demand of a replica whose callers queued for budget
// stays when the generation ends and they stop waiting, until shortly after the next generation
// is set up; a next generation without partitions releases it at once.
func TestFleetDemandHeldAcrossRebalance(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Limiter.Standalone = false
		c.FleetBudget = true
		c.RateLimit = 200
	})
	// queue parks n callers at the create limiter (no ceiling yet) until the returned stop.
	queue := func(n int) (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				if c, err := h.d.create.Acquire(ctx, "a"); err == nil {
					c.Done()
				}
			})
		}
		testwait.For(t, 5*time.Second, "callers queued", func() bool { return h.d.create.Waiting() >= n })
		return func() { cancel(); wg.Wait() }
	}
	expect := func(step string, want int) {
		t.Helper()
		if got := h.d.Demand(); got != want {
			t.Fatalf("%s: demand %d, want %d", step, got, want)
		}
	}
	h.d.SetPartitions([]int{0, 1}, 2)
	stop := queue(5)
	expect("callers waiting", 200)
	h.d.SetPartitions(nil, 2) // the generation ends; its dispatches give up
	stop()
	expect("during the rebalance, nobody waiting", 200)
	h.clock.Advance(40 * time.Millisecond)
	h.d.SetPartitions([]int{0, 1}, 2) // the same partitions again
	h.clock.Advance(999 * time.Millisecond)
	expect("just before Settle after the set-up", 200)
	h.clock.Advance(time.Millisecond)
	expect("Settle after the set-up, nothing queued again", 2)

	stop = queue(5)
	h.d.SetPartitions(nil, 2)
	stop()
	expect("the next rebalance", 200)
	h.d.SetPartitions(nil, 2) // this replica got no partitions
	expect("no partitions in the next generation", 2)

	h.d.SetPartitions([]int{0}, 2)
	stop = queue(5)
	h.d.Stopping() // the consumer stops: then its generation ends
	h.d.SetPartitions(nil, 2)
	stop()
	expect("a replica that stops", 2)
}

// TestFleetDemandOfTheProbe: at start-up the readiness probe waits for the first get ceiling
// (a window after the first grant in fleet mode). It is one call: the replica's demand stays
// what one get call needs, not the whole budget — on main every starting replica asked for all
// of it for that second (and a rebalance's hold kept it up to 2 s), so the members whose probe
// went out first shrank to their idle demand. A real get waiting beside the probe still asks
// for the whole budget; once the probe is through, so does nothing.
func TestFleetDemandOfTheProbe(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Limiter.Standalone = false
		c.FleetBudget = true
		c.RateLimit, c.GetRateLimit = 200, 100
		c.Now, c.Sleep = time.Now, sleep
	})
	h.run()
	probing := func() bool {
		h.d.st.mu.Lock()
		defer h.d.st.mu.Unlock()
		return h.d.st.probeWaits
	}
	testwait.For(t, 5*time.Second, "the probe waiting for a get slot", func() bool { return probing() && h.d.get.Waiting() == 1 })
	// One get call in calls of a create budget twice the get budget: 2, the create limiter's
	// idle demand too.
	if got := h.d.Demand(); got != 2 {
		t.Errorf("demand while only the probe waits = %d, want 2 (one get call)", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() {
		if c, err := h.d.get.Acquire(ctx, "a"); err == nil {
			c.Done()
		}
	})
	testwait.For(t, 5*time.Second, "a get queued beside the probe", func() bool { return h.d.get.Waiting() == 2 })
	if got := h.d.Demand(); got != 200 {
		t.Errorf("demand with a get waiting beside the probe = %d, want the whole budget", got)
	}
	cancel()
	wg.Wait()
	h.d.SetCeiling(20, 20) // get ceiling 10, a window from now
	testwait.For(t, 5*time.Second, "the probe answered", func() bool {
		h.d.st.mu.Lock()
		defer h.d.st.mu.Unlock()
		return h.d.st.verified
	})
	if got := h.api.count(im.APIGet); got != 1 {
		t.Errorf("%d get calls, want the probe's one", got)
	}
}
