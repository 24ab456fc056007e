package dispatcher

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
)

// TestFleetDemandAndUsed: in fleet mode the create limiter waits for SetCeiling; with work
// queued at its ceiling the dispatcher asks for the whole budget, and once the work is done its
// demand falls to what it used lately.
func TestFleetDemandAndUsed(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Limiter.Standalone = false
		c.FleetAPIs = []string{im.APICreate}
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
	// The first ten took a second at a ceiling of 10; the other 30 went at once.
	if got := h.d.Used(); got < 30 || got > 40 {
		t.Errorf("used %d, want the calls of the last window (30-40)", got)
	}
	if got := h.d.Demand(); got >= 200 {
		t.Errorf("demand %d with no work left, want what it used lately", got)
	}
}
