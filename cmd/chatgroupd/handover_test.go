package main

import (
	"testing"
	"time"
)

// TestHandoverSkewFlag checks the flag's 0 (no margin) is not read as the consumer's default.
func TestHandoverSkewFlag(t *testing.T) {
	for _, c := range []struct{ flag, want time.Duration }{
		{0, time.Nanosecond},
		{-time.Nanosecond, -time.Nanosecond},
		{2 * time.Second, 2 * time.Second},
	} {
		if got := handoverSkew(c.flag); got != c.want {
			t.Errorf("handoverSkew(%v) = %v, want %v", c.flag, got, c.want)
		}
	}
}
