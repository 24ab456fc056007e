package ratelimit

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// ceilingStep is a fleet ceiling read back at ms after the start: n in all, atOnce of it at once.
type ceilingStep struct {
	ms        int
	n, atOnce int
}

// callers is how many callers queue at the limiter in queuedGrants.
const callers = 256

// queuedGrants runs 256 callers that call through a fleet-mode limiter (budget 200) without
// pause for span of fake time, so callers always wait at it, and returns every grant's time.
// The steps are applied as the fake clock reaches them. Every sleep of the caller holding the
// turn returns late by up to late (uniform): timers of a busy process.
func queuedGrants(t *testing.T, steps []ceilingStep, late, span time.Duration) (grants []time.Time, l *Limiter, start time.Time) {
	t.Helper()
	clock := newFakeClock()
	start = clock.Now()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rng := rand.New(rand.NewPCG(16, 8))
	pending := steps[1:]
	l, _ = testLimiter(clock, 200, func(ctx context.Context, d time.Duration) error {
		// Only the caller holding the turn sleeps: the clock and the steps are its alone. The
		// time moves once every granted caller has finished its call and is back at the
		// limiter, as it would be within microseconds of real time: fake time must not
		// outrun it, or its grant would stay pending and the queue could empty.
		for !settled(l) && ctx.Err() == nil {
			time.Sleep(10 * time.Microsecond)
		}
		if late > 0 {
			d += time.Duration(rng.Int64N(int64(late)))
		}
		end := clock.Now().Add(d)
		for len(pending) > 0 && !start.Add(time.Duration(pending[0].ms)*time.Millisecond).After(end) {
			clock.Set(start.Add(time.Duration(pending[0].ms) * time.Millisecond))
			l.SetCeiling(float64(pending[0].n), float64(pending[0].atOnce))
			pending = pending[1:]
		}
		clock.Set(end)
		if end.Sub(start) >= span {
			cancel()
		}
		return ctx.Err()
	})
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				g, _, err := l.acquire(ctx)
				if err != nil {
					return
				}
				mu.Lock()
				grants = append(grants, g.at)
				mu.Unlock()
				l.finished(g)
			}
		}()
	}
	// The callers queue for a first ceiling; then the fake time runs.
	for l.Waiting() < callers {
		time.Sleep(time.Millisecond)
	}
	l.SetCeiling(float64(steps[0].n), float64(steps[0].atOnce))
	wg.Wait()
	slices.SortFunc(grants, func(a, b time.Time) int { return a.Compare(b) })
	return grants, l, start
}

// settled reports whether every caller of queuedGrants is back at l and no grant is pending.
func settled(l *Limiter) bool {
	if l.Waiting() < callers {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return !slices.ContainsFunc(l.sent, func(g *grant) bool { return g.pending })
}

// inWindow is how many of the sorted grants lie in (t-w, t].
func inWindow(grants []time.Time, t time.Time, w time.Duration) int {
	n := 0
	for _, g := range grants {
		if g.After(t.Add(-w)) && !g.After(t) {
			n++
		}
	}
	return n
}

// TestQueuedLimiterKeepsItsWindowFull replays the replica that rejoins in issue 16's
// fleet-rolling debug run (r0 at 7.4-8.0 s, lead's run s8a): with callers always waiting, the
// fleet budget gives it 2, then 34 of which 2 at once, then 66 of which 48 at once, then all 66
// at once. The at-once room goes out at once (46 and 18 calls), the window is full, and a
// window later that burst ages out of it. The room it leaves is the callers' at once: from a
// window after the ceiling is whole, every window holds at least 64 of 66 (the call of slack
// the bucket may still hold back, and the one being replaced), whatever the phase. Before, the
// bucket (burst 13, rate 66 per window) let the room out at its pace: 38 of 66 in the first
// such window, and 56 for 0.6 s in the next, the echo repeating window after window. A ceiling that
// comes with nothing at once grows at the bucket's pace and stays paced: no window holds more
// than a burst and a tenth of the ceiling in 100 ms. No window ever holds more than the ceiling
// in force.
func TestQueuedLimiterKeepsItsWindowFull(t *testing.T) {
	for _, tc := range []struct {
		name   string
		steps  []ceilingStep
		late   time.Duration
		from   time.Duration // full windows from here
		paced  bool          // every 100 ms holds at most a burst and a tenth of the ceiling
		minLow int
	}{
		{"r0 rejoining, timers on time", []ceilingStep{{0, 2, 2}, {300, 34, 2}, {400, 66, 48}, {600, 66, 66}}, 0, 1605 * time.Millisecond, false, 64},
		{"r0 rejoining, timers up to 2 ms late", []ceilingStep{{0, 2, 2}, {300, 34, 2}, {400, 66, 48}, {600, 66, 66}}, 2 * time.Millisecond, 1605 * time.Millisecond, false, 64},
		{"nothing at once: paced", []ceilingStep{{0, 66, 0}}, time.Millisecond, 2100 * time.Millisecond, true, 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			grants, l, start := queuedGrants(t, tc.steps, tc.late, 8*time.Second)
			inForce := func(at time.Time) int {
				n := 0
				for _, s := range tc.steps {
					if !start.Add(time.Duration(s.ms) * time.Millisecond).After(at) {
						n = s.atOnce
						if s.atOnce == 0 && at.Sub(start) >= l.window {
							n = s.n
						}
					}
				}
				return n
			}
			for _, g := range grants {
				if got, ceiling := inWindow(grants, g, l.window), inForce(g); got > ceiling {
					t.Fatalf("%v: %d grants in the window, ceiling %d", g.Sub(start), got, ceiling)
				}
			}
			low, lowAt := 1<<30, time.Duration(0)
			var trace []int
			for at := tc.from; at <= 7*time.Second; at += time.Millisecond {
				// The room a call leaves is refilled within a microsecond of its end (the
				// sleep to it computed in float), or while the waiter oversleeps: in its
				// sleep to the call's end and in a recheck, up to late each. Windows that
				// much longer are the ones that must be full.
				got := inWindow(grants, start.Add(at), l.window+2*tc.late+time.Millisecond)
				if got < low {
					low, lowAt = got, at
				}
				if at%(100*time.Millisecond) == 0 {
					trace = append(trace, got)
				}
			}
			t.Logf("grants in the window every 100 ms from %v: %v", tc.from, trace)
			if low < tc.minLow {
				t.Errorf("callers always waiting, ceiling 66: %d grants in the window ending %v (want >= %d in every window from %v)",
					low, lowAt, tc.minLow, tc.from)
			}
			if !tc.paced {
				return
			}
			for _, g := range grants {
				if got := inWindow(grants, g, 100*time.Millisecond); got > 13+7 {
					t.Fatalf("%v: %d grants in 100 ms, want a paced limiter (<= 20)", g.Sub(start), got)
				}
			}
		})
	}
}
