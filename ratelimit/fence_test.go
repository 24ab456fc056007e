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
// room against the ceiling and count in Used until they age out a window later: with 8 of a
// ceiling of 10 preloaded, 2 calls are granted at once and the third waits for them to age out.
func TestPreloadHoldsRoom(t *testing.T) {
	clock := newFakeClock()
	l, _ := testLimiter(clock, 200, nil)
	// A successor counts its predecessor's calls before its first grant (budget.Member).
	l.Preload(8)
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
	clock.Advance(l.window + time.Millisecond)
	if got := l.Used(); got != 0 {
		t.Errorf("Used() = %d a window later, want 0", got)
	}
}
