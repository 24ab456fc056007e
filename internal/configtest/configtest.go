// Package configtest checks, in tests, the errors of a Config's Validate: every problem on a
// line of its own (errors.Join), in order, each naming its field.
package configtest

import (
	"strings"
	"testing"
)

// Problems fails t unless err has exactly len(want) lines and line i contains want[i]; with no
// want, unless err is nil. The first line carries the package's prefix ("im config: ...").
// It returns after each Fatalf, so a testing.TB whose Fatalf does not stop works too.
func Problems(t testing.TB, err error, want ...string) {
	t.Helper()
	if len(want) == 0 {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("no error, want %q", want)
		return
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d problems, want %d (%q): %v", len(lines), len(want), want, err)
		return
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) {
			t.Errorf("problem %d is %q, want it to contain %q", i, lines[i], w)
		}
	}
}
