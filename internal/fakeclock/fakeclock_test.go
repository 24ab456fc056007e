package fakeclock_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/internal/fakeclock"
)

func TestClockMovesOnlyByHand(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	c := fakeclock.New(t0)
	if !c.Now().Equal(t0) {
		t.Fatalf("Now = %v, want %v", c.Now(), t0)
	}
	c.Advance(time.Second)
	if err := c.Sleep(context.Background(), time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := c.Now().Sub(t0); got != time.Minute+time.Second {
		t.Fatalf("after Advance(1s) and Sleep(1m): %v", got)
	}
	c.Set(t0)
	if !c.Now().Equal(t0) {
		t.Fatalf("Set back: %v", c.Now())
	}
}

func TestSleepEndsWithContext(t *testing.T) {
	c := fakeclock.New(time.Unix(0, 0))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep on an ended context = %v", err)
	}
	if !c.Now().Equal(time.Unix(0, 0)) {
		t.Fatal("a cancelled Sleep moved the clock")
	}
}

func Example() {
	c := fakeclock.New(time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC))
	expired := func(deadline time.Time) bool { return !c.Now().Before(deadline) }
	deadline := c.Now().Add(time.Minute)
	fmt.Println(expired(deadline))
	c.Advance(time.Minute)
	fmt.Println(expired(deadline))
	// Output:
	// false
	// true
}
