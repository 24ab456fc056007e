package chaos

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestJoinStalled: only joins that time out after the schedule, with no assignment after it,
// make a stall; an assignment after the schedule, or failed joins before it only, do not.
func TestJoinStalled(t *testing.T) {
	since := time.Date(2026, 11, 30, 16, 49, 0, 0, time.UTC)
	const (
		before   = `{"level":"warn","ts":"2026-11-30T16:48:59Z","msg":"consumer group: join failed, retrying"}`
		failed   = `{"level":"warn","ts":"2026-11-30T16:49:30Z","msg":"consumer group: join failed, retrying"}`
		assigned = `{"level":"info","ts":"2026-11-30T16:49:31Z","msg":"rebalance: partitions assigned"}`
		early    = `{"level":"info","ts":"2026-11-30T16:48:00Z","msg":"rebalance: partitions assigned"}`
	)
	for _, tc := range []struct {
		name string
		logs []string // one file each
		want bool
	}{
		{"stalled", []string{early + "\n" + failed, failed}, true},
		{"re-formed", []string{failed + "\n" + assigned, failed}, false},
		{"failed joins before the schedule ended only", []string{before, early}, false},
		{"no logs", nil, false},
		{"garbage lines", []string{"not json\n" + failed}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for i, l := range tc.logs {
				if err := os.WriteFile(filepath.Join(dir, "replica-"+string(rune('0'+i))+".1.log"), []byte(l+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if got := joinStalled(dir, since); got != tc.want {
				t.Errorf("joinStalled = %v, want %v", got, tc.want)
			}
		})
	}
}
