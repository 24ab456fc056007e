// Package testwait is how chatgroupd's tests wait: for a condition to hold, or with a context
// bounded in time. It is for tests only.
package testwait

import (
	"context"
	"testing"
	"time"
)

// maxInterval caps the pause between polls, so that a condition that reads a broker is not
// asked more than twenty times a second.
const maxInterval = 50 * time.Millisecond

// For polls cond until it holds and fails the test (Fatalf, so call it from the test's
// goroutine) when d passes first. The first poll is immediate; the pause between polls grows
// from 1 ms to 50 ms, so a cheap condition is seen as soon as it holds.
func For(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for pause := time.Millisecond; !cond(); pause = min(2*pause, maxInterval) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(pause)
	}
}

// Context returns t.Context() bounded by d: it ends when the test does (just before its
// Cleanup functions run) or after d, whichever comes first.
func Context(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
