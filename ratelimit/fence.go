package ratelimit

import "time"

// SetFence makes until the end of everything the fleet budget granted this limiter: from until
// on it grants no call, and a call granted before may no longer write its request (InForce),
// until a later SetFence moves the fence on. The zero time means no fence (static shares).
//
// The fleet budget's member stops by its fence (budget.Config.Fence after its last confirmed
// record), and the others grow into its room once its entry has expired on the strength of
// that. The member lowers its ceiling when it next looks at its clock, but a process frozen past
// its fence (SIGSTOP, a stalled VM) wakes with the old ceiling in its limiters and an empty
// window, and its waiting callers run before the member does: the fence must be the limiter's
// own.
func (l *Limiter) SetFence(until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if until.Equal(l.fence) {
		return
	}
	l.fence = until
	close(l.changed) // a waiter parked on a passed fence looks again
	l.changed = make(chan struct{})
}

// fencedAt reports whether the fence has passed at now. Callers hold mu.
func (l *Limiter) fencedAt(now time.Time) bool {
	return !l.fence.IsZero() && !now.Before(l.fence)
}

// InForce reports whether the call's request may still be written: false once the limiter's
// fence has passed (SetFence). The IM client asks right before it writes each request (im.Gate).
func (c *Call) InForce() bool {
	l := c.l
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.fencedAt(l.cfg.Now())
}
