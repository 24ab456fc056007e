package ratelimit

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/internal/fakeclock"
)

// demandSamples runs callers goroutines that call through a fleet-mode limiter (budget 200)
// without pause for span of fake time, so callers always wait at it, and samples Demand every
// 50 ms, as the fleet budget's runner does. The ceiling is 100 at once, 67 from 5 s (a third
// member joined, as in the debug run of issue 16). Every sleep of the caller holding the turn
// returns late with probability 1/50, by up to stall: timers of a starved process.
func demandSamples(t *testing.T, callers int, stall time.Duration, span time.Duration) (samples, ceilings []int, l *Limiter, clock *fakeclock.Clock) {
	t.Helper()
	clock = newFakeClock()
	start := clock.Now()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rng := rand.New(rand.NewPCG(16, 7))
	const tick = 50 * time.Millisecond
	next := start.Add(tick)
	shrunk := false
	l, _ = testLimiter(clock, 200, func(ctx context.Context, d time.Duration) error {
		// Only the caller holding the turn sleeps: the samples and the clock are its alone.
		if stall > 0 && rng.IntN(50) == 0 {
			d += time.Duration(rng.Int64N(int64(stall)))
		}
		end := clock.Now().Add(d)
		for !next.After(end) {
			clock.Set(next)
			if !shrunk && next.Sub(start) >= 5*time.Second {
				shrunk = true
				l.SetCeiling(67, 67)
			}
			samples = append(samples, l.Demand())
			ceilings = append(ceilings, int(l.Rate()))
			next = next.Add(tick)
		}
		clock.Set(end)
		if end.Sub(start) >= span {
			cancel()
		}
		return ctx.Err()
	})
	l.SetCeiling(100, 100)
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
				l.finished(g)
			}
		}()
	}
	wg.Wait()
	return samples, ceilings, l, clock
}

// TestDemandWhileCallersWait: while callers wait at the limiter the replica has a backlog, and
// its demand is the whole budget at every sample, whatever the pacing and the timers do. Main
// (before issue 16's s7-demand) fell back to the last quarter window's calls × 5 + 2 whenever
// the window was not full and the ceiling not new: at least the ceiling while grants kept
// pace (82 at a ceiling of 67, never the budget), but after a late timer left a gap in the
// grants it reported as little as 2 — the member shrank at once and regrew a round trip and a
// window later (s6-budget's debug run: 67 → 22 → 67 with 256 callers waiting).
func TestDemandWhileCallersWait(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stall time.Duration
	}{
		{"timers on time", 0},
		{"starved process: sleeps up to 300 ms late", 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			samples, ceilings, _, _ := demandSamples(t, 256, tc.stall, 20*time.Second)
			low, belowCeiling, belowBudget := 200, 0, 0
			for i, d := range samples {
				low = min(low, d)
				if d < ceilings[i] {
					belowCeiling++
				}
				if d < 200 {
					belowBudget++
				}
			}
			if len(samples) < 300 {
				t.Fatalf("%d samples, want 20 s of them", len(samples))
			}
			if belowBudget > 0 {
				t.Errorf("demand with 256 callers waiting: lowest %d; %d of %d samples below the ceiling, %d below the budget (want 200 at every sample)",
					low, belowCeiling, len(samples), belowBudget)
			}
		})
	}
}

// TestDemandFollowsUse: without a queue the demand is the recent use with a margin: an idle
// limiter asks for 2, a caller that is granted at once (one account's calls, one at a time,
// below the ceiling) does not claim the budget even while it is inside Acquire, and once a
// queue is gone the demand falls to the recent use at once and to 2 a quarter window later.
func TestDemandFollowsUse(t *testing.T) {
	clock := newFakeClock()
	l, _ := testLimiter(clock, 200, func(context.Context, time.Duration) error {
		t.Fatal("a caller at 50/s under a ceiling of 100 was held")
		return nil
	})
	l.SetCeiling(100, 100)
	if got := l.Demand(); got != 2 {
		t.Fatalf("idle demand %d, want 2", got)
	}
	for i := range 100 { // 2 s of calls 20 ms apart: 50/s
		if err := take(l); err != nil {
			t.Fatal(err)
		}
		clock.Advance(20 * time.Millisecond)
		if i < 20 {
			continue
		}
		// The next call's caller has entered Acquire and not yet been granted: not a queue.
		l.waiting.Add(1)
		got := l.Demand()
		l.waiting.Add(-1)
		if got < 50 || got >= 100 {
			t.Fatalf("call %d: demand %d with a caller passing through at 50/s, want its use with a margin (50-99)", i, got)
		}
	}
	clock.Advance(l.window / 4)
	if got := l.Demand(); got != 2 {
		t.Fatalf("a quarter window after the last call: demand %d, want 2", got)
	}

	_, _, q, qclock := demandSamples(t, 64, 0, 3*time.Second)
	if got := q.Waiting(); got != 0 {
		t.Fatalf("%d callers still waiting", got)
	}
	// The callers are gone: the recent use with a margin, not the budget.
	if got := q.Demand(); got >= 200 {
		t.Errorf("demand %d just after the queue emptied, want its recent use with a margin", got)
	}
	qclock.Advance(q.window / 4)
	if got := q.Demand(); got != 2 {
		t.Errorf("a quarter window after the queue emptied: demand %d, want 2", got)
	}
}

// TestSetCeilingRoomAtOnce replays a hand-over of the fleet budget from the bench (fleet-leave,
// debug log: the other survivor drained at 28.5 s): callers always wait at a ceiling of 100,
// then the grants read back raise it to 198 in steps, each with the part that may be used at
// once as the drained member's calls age out of the window. That room is used as it appears:
// 0.1 s after the last step the window holds the whole ceiling. On main the bucket, pacing at
// the ceiling per window, followed the steps about half a window late (156 of 198 then, 198
// only 0.8 s later: about 40 calls of the budget lost per hand-over). No window ever holds
// more than the ceiling in force.
func TestSetCeilingRoomAtOnce(t *testing.T) {
	clock := newFakeClock()
	start := clock.Now()
	steps := []struct {
		ms       int
		n, atNow int
	}{{3000, 153, 100}, {3100, 198, 130}, {3200, 198, 137}, {3300, 198, 152}, {3500, 198, 158},
		{3700, 198, 179}, {3800, 198, 192}, {3900, 198, 198}}
	var l *Limiter
	l, _ = testLimiter(clock, 200, func(_ context.Context, d time.Duration) error {
		end := clock.Now().Add(d)
		for len(steps) > 0 && !start.Add(time.Duration(steps[0].ms)*time.Millisecond).After(end) {
			clock.Set(start.Add(time.Duration(steps[0].ms) * time.Millisecond))
			l.SetCeiling(float64(steps[0].n), float64(steps[0].atNow))
			steps = steps[1:]
		}
		clock.Set(end)
		return nil
	})
	l.SetCeiling(100, 100)
	var grants []time.Time
	var ceilings []int
	for clock.Now().Sub(start) < 6*time.Second {
		if err := take(l); err != nil {
			t.Fatal(err)
		}
		grants = append(grants, clock.Now())
		l.mu.Lock()
		ceilings = append(ceilings, l.n)
		l.mu.Unlock()
	}
	inWindow := func(i int) int { // grants in (grants[i] - window, grants[i]]
		n := 0
		for j := i; j >= 0 && grants[j].After(grants[i].Add(-l.window)); j-- {
			n++
		}
		return n
	}
	for i := range grants {
		if got := inWindow(i); got > ceilings[i] {
			t.Fatalf("%v after the start: %d grants in the window, ceiling %d", grants[i].Sub(start), got, ceilings[i])
		}
	}
	var trace []int
	for ms := 3000; ms <= 5000; ms += 100 {
		idx := -1
		for i, g := range grants {
			if !g.After(start.Add(time.Duration(ms) * time.Millisecond)) {
				idx = i
			}
		}
		trace = append(trace, inWindow(idx))
	}
	t.Logf("grants in the window every 100 ms from 3 s: %v", trace)
	// trace[10] is 4.0 s: a tenth of a second after the last step.
	if trace[10] < 195 {
		t.Errorf("0.1 s after the ceiling reached 198 at once: %d grants in the window, want >= 195", trace[10])
	}
	if got := maxWindow(grants, time.Second); got > 198 {
		t.Errorf("max grants in a one-second window %d, want <= 198", got)
	}
}
