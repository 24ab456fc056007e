package main

import (
	"context"
	"testing"
	"time"
)

// TestAfterShutdownBoundsFleetLinger: the context bounding the fleet member's linger ends the
// shutdown time after the signal, not before, and at once when the service returns.
func TestAfterShutdownBoundsFleetLinger(t *testing.T) {
	t.Run("ends the shutdown time after the signal", func(t *testing.T) {
		ctx, signal := context.WithCancel(context.Background())
		exit, cancel := afterShutdown(ctx, 20*time.Millisecond)
		defer cancel()
		if exit.Err() != nil {
			t.Fatal("exit ended before the signal")
		}
		signal()
		select {
		case <-exit.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("exit did not end after the signal and the shutdown time")
		}
	})
	t.Run("not before", func(t *testing.T) {
		ctx, signal := context.WithCancel(context.Background())
		exit, cancel := afterShutdown(ctx, time.Hour)
		signal()
		time.Sleep(10 * time.Millisecond)
		if exit.Err() != nil {
			t.Fatal("exit ended at the signal, before the shutdown time")
		}
		cancel()
		if exit.Err() == nil {
			t.Fatal("exit still running after cancel")
		}
	})
}
