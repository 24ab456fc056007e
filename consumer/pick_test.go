package consumer

import (
	"math"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/event"
)

// TestPickOrder: which queued record of one account runs next. Covers the seq 2^63-1 overflow
// (lastSeq+1 wrapped, so every later seq waited the reorder window) and a record without seq
// overtaking an earlier one that waits for its gap.
func TestPickOrder(t *testing.T) {
	now := time.Unix(1800000000, 0)
	mk := func(seq int64, age time.Duration) *rec {
		return &rec{ev: &event.Event{EventID: "x", Seq: seq}, arrived: now.Add(-age)}
	}
	for _, tc := range []struct {
		name    string
		lastSeq int64
		q       []*rec
		want    int
	}{
		{"next in seq", 3, []*rec{mk(4, 0)}, 0},
		{"gap waits", 3, []*rec{mk(5, 0)}, -1},
		{"gap filled later in the queue", 3, []*rec{mk(5, 0), mk(4, 0)}, 1},
		{"first seq", 0, []*rec{mk(2, 0), mk(1, 0)}, 1},
		{"late seq runs", 7, []*rec{mk(3, 0)}, 0},
		{"max seq after max-1", math.MaxInt64 - 1, []*rec{mk(math.MaxInt64, 0)}, 0},
		{"after max seq", math.MaxInt64, []*rec{mk(5, 0)}, 0},
		{"no seq alone", 3, []*rec{mk(0, 0)}, 0},
		{"no seq first in line", 3, []*rec{mk(0, 0), mk(6, 0)}, 0},
		{"no seq behind a gap waits", 3, []*rec{mk(5, 0), mk(0, 0)}, -1},
		{"no seq behind a gap, gap filled", 3, []*rec{mk(5, 0), mk(0, 0), mk(4, 0)}, 2},
		{"window over: lowest seq, not the seqless", 3, []*rec{mk(6, time.Hour), mk(0, 0), mk(5, 0)}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Now: func() time.Time { return now }}.withDefaults()
			e := &engine{cfg: &cfg}
			a := &account{lastSeq: tc.lastSeq, q: tc.q}
			got, wait := e.pick(a)
			if got != tc.want {
				t.Fatalf("pick = %d (wait until %v), want %d", got, wait, tc.want)
			}
			if got < 0 && wait.IsZero() {
				t.Error("waiting with no time to look again")
			}
		})
	}
}
