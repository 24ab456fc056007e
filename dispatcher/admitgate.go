package dispatcher

import (
	"context"
	"math"
	"sync"
	"time"
)

// admitGate bounds the events admitted by their Task.Admit and still waiting for their first
// grant. Each such event is listed by the consumer's commits as possibly written, so after a
// crash it is checked and held although it was never sent: the bound keeps that to about what
// the limiter lets out during one admission.
//
// An admission waits for the commit in flight and the next one, two commit round trips, and a
// place is held from before it until the grant: places ÷ that wait caps the write rate. So the
// bound is at least Config.AdmitAhead and grows with the admissions' average wait, to the calls
// the create ceiling lets out in three of them. A fixed 32 capped a replica at about 32 ÷ (2 ×
// round trip): 161 calls/s at a 100 ms commit round trip, 65 at 250 ms (found in review).
type admitGate struct {
	least int // Config.AdmitAhead
	mu    sync.Mutex
	held  int
	// waiting counts callers waiting for a place: a backlog, which Demand reports as such.
	waiting int
	wake    chan struct{} // closed (and cleared) when a place is given back; nil: nobody waits
	avg     time.Duration // moving average of the admissions' waits
}

// limit is the number of places at a create ceiling of rate calls per second. mu held.
func (g *admitGate) limit(rate float64) int {
	return max(g.least, int(math.Ceil(rate*3*g.avg.Seconds())))
}

// enter takes a place, waiting while all are held, until ctx ends.
func (g *admitGate) enter(ctx context.Context, rate func() float64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.held >= g.limit(rate()) {
		if g.wake == nil {
			g.wake = make(chan struct{})
		}
		wake := g.wake
		g.waiting++
		g.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
		}
		g.mu.Lock()
		g.waiting--
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
	}
	g.held++
	return nil
}

// admitted records how long an admission waited (the moving average sizes the bound).
func (g *admitGate) admitted(wait time.Duration) {
	g.mu.Lock()
	g.avg += (wait - g.avg) / 8
	g.mu.Unlock()
}

// leave gives a place back.
func (g *admitGate) leave() {
	g.mu.Lock()
	g.held--
	if g.wake != nil {
		close(g.wake)
		g.wake = nil
	}
	g.mu.Unlock()
}

// queued reports whether callers wait for a place.
func (g *admitGate) queued() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiting > 0
}
