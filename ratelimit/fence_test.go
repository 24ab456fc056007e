package ratelimit

import (
	"context"
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
