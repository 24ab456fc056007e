package dispatcher

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
)

// fakeCommitter admits like consumer/admit.go: a record asks, and waits for a commit whose
// snapshot comes after its ask; commits go back to back, each taking rtt.
type fakeCommitter struct {
	mu       sync.Mutex
	snap     uint64
	accepted uint64
	wake     chan struct{}
	kick     chan struct{}
	rtt      time.Duration
}

func newFakeCommitter(ctx context.Context, rtt time.Duration) *fakeCommitter {
	c := &fakeCommitter{kick: make(chan struct{}, 1), rtt: rtt, wake: make(chan struct{})}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-c.kick:
			}
			c.mu.Lock()
			c.snap++
			seq := c.snap
			c.mu.Unlock()
			time.Sleep(c.rtt)
			c.mu.Lock()
			c.accepted = seq
			close(c.wake)
			c.wake = make(chan struct{})
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *fakeCommitter) admitter() func(context.Context) error {
	var at uint64
	return func(ctx context.Context) error {
		for {
			c.mu.Lock()
			if at == 0 {
				at = c.snap + 1
			}
			if c.accepted >= at {
				c.mu.Unlock()
				return nil
			}
			w := c.wake
			c.mu.Unlock()
			select {
			case c.kick <- struct{}{}:
			default:
			}
			select {
			case <-w:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
	}
}

// TestAdmitGateFollowsSlowCommits: with commits that take 120-160 ms, a fixed 32 places (each
// held from before an admission until the grant) capped a replica at about 32 ÷ (2 × round
// trip), 112-140 writes/s against a 200/s ceiling, and with every place waiting in an admission
// nobody queued at the limiter, so the fleet Demand fell to the recent use (as low as 7) and
// the member gave its share away (found in review). The places now grow with the admissions'
// wait, and callers waiting for one count as a backlog: Demand stays at the budget. The write
// rate is logged (speed is the bench's to assert).
func TestAdmitGateFollowsSlowCommits(t *testing.T) {
	for _, rtt := range []time.Duration{120 * time.Millisecond, 160 * time.Millisecond} {
		t.Run(rtt.String(), func(t *testing.T) {
			h := newHarness(t, func(c *Config) {
				c.Limiter.Standalone = false
				c.FleetBudget, c.RateLimit = true, 200
				c.Now, c.Sleep = time.Now, sleep
			})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			fc := newFakeCommitter(ctx, rtt)
			h.d.SetCeiling(200, 0)
			runners := make(chan struct{}, 256) // the consumer's MaxInFlight
			var wg sync.WaitGroup
			for i := range 1000 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					runners <- struct{}{}
					defer func() { <-runners }()
					h.d.Dispatch(ctx, Task{Event: newEvent(fmt.Sprintf("u%d", i), "g"), Admit: fc.admitter()})
				}()
			}
			time.Sleep(time.Second)
			c0, t0 := h.api.count(im.APICreate), time.Now()
			samples, low, lowest := 0, 0, 200
			for time.Since(t0) < 2*time.Second {
				if d := h.d.Demand(); d < 200 {
					low, lowest = low+1, min(lowest, d)
				}
				samples++
				time.Sleep(2 * time.Millisecond)
			}
			rate := float64(h.api.count(im.APICreate)-c0) / time.Since(t0).Seconds()
			h.d.admits.mu.Lock()
			places := h.d.admits.limit(200)
			h.d.admits.mu.Unlock()
			cancel()
			wg.Wait()
			t.Logf("commit round trip %v: %.0f writes/s against a 200/s ceiling, %d places, Demand below 200 in %d of %d samples",
				rtt, rate, places, low, samples)
			if low > 0 {
				t.Errorf("Demand fell to %d (%d of %d samples) with a backlog waiting for admission", lowest, low, samples)
			}
			if want := int(200 * 2 * rtt.Seconds()); places < want {
				t.Errorf("%d places with admissions of two %v round trips: want at least %d, the calls of one admission", places, rtt, want)
			}
		})
	}
}
