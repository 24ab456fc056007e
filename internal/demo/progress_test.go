package demo

import (
	"strings"
	"testing"
)

// TestFitProgress: every form fits the width it is chosen for, the widest form wins when it
// fits, and widths below the shortest form are cut rather than wrapped.
func TestFitProgress(t *testing.T) {
	p := progressFigures{elapsed: 123.4, produced: 3000000, consumed: 2999999, ended: 2999998,
		applied: 2900000, duplicates: 90000, deadLettered: 9998, rate: 199.6}
	for width := 1; width <= 300; width++ {
		got := fitProgress(width, p)
		if len(got) > width-1 && !(width == 1 && got == "") {
			t.Fatalf("width %d: %d columns: %q", width, len(got), got)
		}
		if strings.ContainsAny(got, "\r\n\x1b") {
			t.Fatalf("width %d: control characters in %q", width, got)
		}
	}
	if got := fitProgress(300, p); got != p.full(24) {
		t.Errorf("wide terminal: %q, want the full line", got)
	}
	if got := fitProgress(80, p); !strings.Contains(got, "ended 2999998/3000000") {
		t.Errorf("80 columns: %q lacks the progress count", got)
	}
}
