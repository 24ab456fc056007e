package ratelimit

import (
	"context"
	"slices"
	"testing"
	"time"
)

// TestFenceEndsGrantsAndWrites: past its fence a limiter grants nothing and a call granted before
// may not write, whatever its ceiling, until the fence moves on. Without a fence (the control)
// the same limiter grants at once: a process that wakes from a freeze past its fleet budget
// fence would call with the ceiling it had.
func TestFenceEndsGrantsAndWrites(t *testing.T) {
	for _, fenced := range []bool{false, true} {
		clock := newFakeClock()
		l, _ := testLimiter(clock, 200, nil)
		l.SetCeiling(10, 10)
		if fenced {
			l.SetFence(clock.Now().Add(time.Second))
		}
		c, err := l.Acquire(context.Background(), "a")
		if err != nil {
			t.Fatal(err)
		}
		if !c.InForce() {
			t.Fatalf("fenced=%v: a call inside the fence is not in force", fenced)
		}
		clock.Advance(5 * time.Second) // frozen past the fence, the ceiling untouched
		if got := c.InForce(); got == fenced {
			t.Errorf("fenced=%v: call granted before the freeze InForce()=%v after it", fenced, got)
		}
		c.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		_, err = l.Acquire(ctx, "a")
		cancel()
		if fenced != (err != nil) {
			t.Fatalf("fenced=%v: Acquire after the freeze: %v", fenced, err)
		}
		if !fenced {
			continue
		}
		got := make(chan error, 1)
		go func() {
			c, err := l.Acquire(context.Background(), "a")
			if err == nil {
				c.Done()
			}
			got <- err
		}()
		time.Sleep(20 * time.Millisecond)
		l.SetFence(clock.Now().Add(time.Second)) // a grant confirmed again
		select {
		case err := <-got:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("a waiter parked on the passed fence was not woken when it moved on")
		}
	}
}

// TestPreloadHoldsRoom: calls a dead predecessor may still have in the window (Preload) take
// room against the ceiling and count in Used until they age out a window after their stamp:
// with 8 of a ceiling of 10 preloaded, 2 calls are granted at once and the third waits for
// them to age out. Stamped 300 ms back (when the predecessor was proved dead), they are gone
// 300 ms sooner; a stamp in the future counts as now.
func TestPreloadHoldsRoom(t *testing.T) {
	for _, tc := range []struct {
		name string
		back time.Duration // the stamp, before the clock's now
	}{{"now", 0}, {"proved dead 300 ms before", 300 * time.Millisecond}, {"stamp in the future", -time.Second}} {
		t.Run(tc.name, func(t *testing.T) { preloadHoldsRoom(t, tc.back) })
	}
}

func preloadHoldsRoom(t *testing.T, back time.Duration) {
	clock := newFakeClock()
	l, _ := testLimiter(clock, 200, nil)
	// A successor counts its predecessor's calls before its first grant (budget.Member).
	at := clock.Now().Add(-back)
	l.Preload(8, at)
	l.SetCeiling(10, 10)
	if got := l.Used(); got != 8 {
		t.Fatalf("Used() = %d after preloading 8, want 8", got)
	}
	for i := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := l.Acquire(ctx, "a")
		cancel()
		if err != nil {
			t.Fatalf("call %d within the room left: %v", i, err)
		}
		c.Done()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err := l.Acquire(ctx, "a")
	cancel()
	if err == nil {
		t.Fatal("a call granted into room the preloaded calls hold")
	}
	ages := l.window - max(back, 0)
	clock.Advance(ages - time.Millisecond)
	if got := l.Used(); got != 10 {
		t.Errorf("Used() = %d just before the counted calls age out, want 10", got)
	}
	clock.Advance(2 * time.Millisecond)
	want := 0 // the 2 calls granted at the stamp age out with them
	if back > 0 {
		want = 2 // granted after the stamp: still in the window
	}
	if got := l.Used(); got != want {
		t.Errorf("Used() = %d a window after the stamp, want %d", got, want)
	}
}

// TestUsedByAge: a successor stamps each call UsedByAge reports at the end of its slot, so
// only calls whose time can no longer move are reported, each in the slot of its final time:
// calls written and over (one moved later by a slow round trip first), preloaded ones; not a
// call still in flight (a slow answer may move it later), nor one never written (its request
// may still go out), nor one timed after at. Writes on the connection after a call is over
// (the next request's) no longer move it.
func TestUsedByAge(t *testing.T) {
	clock := newFakeClock()
	l, _ := testLimiter(clock, 200, nil)
	l.SetCeiling(100, 100)
	t0 := clock.Now()
	at := func(d time.Duration) time.Time { return t0.Add(d * time.Millisecond) }
	acquire := func() *grant {
		t.Helper()
		g, _, err := l.acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	l.Preload(3, at(-30))
	var fast []*grant
	for range minRTTSamples { // round trips of 10 ms: the median
		fast = append(fast, acquire())
	}
	clock.Set(at(10))
	for _, g := range fast {
		l.wrote(g, clock.Now(), clock.Now(), "")
	}
	clock.Set(at(20))
	for _, g := range fast {
		l.finished(g)
	}
	slow := acquire()
	clock.Set(at(215))
	l.wrote(slow, clock.Now(), clock.Now(), "")
	clock.Set(at(255))
	l.finished(slow) // 30 ms late, moved by LateArrivalMax (25 ms) to t0+240ms
	inFlight := acquire()
	clock.Set(at(256))
	l.wrote(inFlight, clock.Now(), clock.Now(), "")
	l.finished(acquire())       // never written
	l.flushed(slow, at(265), 0) // the next request's bytes: slow stays at t0+240ms
	for _, tc := range []struct {
		at   time.Duration
		want []int
	}{
		// slow (age 30) in slot 0; the fast ones (age 260) in slot 5; the preloaded (300) in 6.
		{270, []int{1, 0, 0, 0, 0, 8, 3}},
		// slow (22): still in slot 0, not moved to t0+265ms by the flush.
		{262, []int{1, 0, 0, 0, 0, 11}},
		// slow is timed after at.
		{239, []int{0, 0, 0, 0, 8, 3}},
	} {
		if got := l.UsedByAge(at(tc.at), 50*time.Millisecond); !slices.Equal(got, tc.want) {
			t.Errorf("UsedByAge(t0+%dms, 50ms) = %v, want %v", tc.at, got, tc.want)
		}
	}
	if got := l.Used(); got != 3+8+1+1+1 {
		t.Errorf("Used() = %d, want every call of the window (14)", got)
	}
}
