package consumer

import (
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

func TestMetaRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		w    int64
		m    commitMeta
	}{
		{"empty", 0, commitMeta{horizon: 0}},
		{"horizon only", 100, commitMeta{horizon: 612}},
		{"one range", 100, commitMeta{horizon: 700, done: []span{{101, 150}}}},
		{"many ranges", 5, commitMeta{horizon: 1 << 40, done: []span{{7, 8}, {9, 20}, {1000, 1001}, {1 << 39, 1<<39 + 5}}}},
		{"done beyond horizon", 10, commitMeta{horizon: 11, done: []span{{12, 14}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, kept := encodeMeta(tt.w, tt.m, 3000)
			if kept != len(tt.m.done) {
				t.Fatalf("kept %d of %d ranges", kept, len(tt.m.done))
			}
			got, err := decodeMeta(tt.w, s)
			if err != nil {
				t.Fatalf("decode %q: %v", s, err)
			}
			if got.horizon != tt.m.horizon || !reflect.DeepEqual(got.done, tt.m.done) && len(tt.m.done) > 0 {
				t.Fatalf("round trip: got %+v, want %+v", got, tt.m)
			}
		})
	}
}

func TestMetaTruncatesToLimit(t *testing.T) {
	var done []span
	for i := int64(0); i < 5000; i++ {
		done = append(done, span{1 + 1000*i, 1 + 1000*i + 3})
	}
	s, kept := encodeMeta(0, commitMeta{horizon: 6_000_000, done: done}, 3000)
	if len(s) > 3000 {
		t.Fatalf("encoded %d bytes, limit 3000", len(s))
	}
	if kept == 0 || kept >= len(done) {
		t.Fatalf("kept %d ranges", kept)
	}
	got, err := decodeMeta(0, s)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.done, done[:kept]) || got.horizon != 6_000_000 {
		t.Fatalf("truncated metadata must keep a prefix of the ranges and the horizon")
	}
}

func TestMetaRejectsForeign(t *testing.T) {
	for _, s := range []string{"", "hello", "v1:!!!", "v2:AA", "v1:gICAgICAgICAgAE", "v1:AAAA"} {
		if _, err := decodeMeta(10, s); err == nil {
			t.Errorf("decodeMeta(%q) accepted", s)
		}
	}
}

func FuzzDecodeMeta(f *testing.F) {
	s, _ := encodeMeta(100, commitMeta{horizon: 900, done: []span{{101, 150}, {200, 201}}}, 3000)
	f.Add(int64(100), s)
	f.Add(int64(0), "v1:")
	f.Add(int64(-1), "v1:AAAA")
	f.Fuzz(func(t *testing.T, w int64, s string) {
		m, err := decodeMeta(w, s)
		if err != nil {
			return
		}
		prev := w
		for _, r := range m.done {
			if r.start <= prev || r.end <= r.start {
				t.Fatalf("decoded ranges not increasing and disjoint: %+v (w=%d)", m.done, w)
			}
			prev = r.end
		}
		if m.horizon < w {
			t.Fatalf("horizon %d below watermark %d", m.horizon, w)
		}
		// Whatever decodes re-encodes to the same meaning.
		again, _ := encodeMeta(w, m, 1<<20)
		m2, err := decodeMeta(w, again)
		if err != nil || m2.horizon != m.horizon || len(m2.done) != len(m.done) {
			t.Fatalf("re-encode mismatch: %v", err)
		}
		if !strings.HasPrefix(again, metaPrefix) {
			t.Fatal("prefix")
		}
	})
}

// TestTrackerRanges checks the incremental range count and done() against a brute-force model
// under random fetch gaps and random completion order.
func TestTrackerRanges(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 200; round++ {
		tr := newTracker(10)
		endedSet := map[int64]bool{}
		var offs []int64
		var idxs []uint64
		off := int64(10)
		for step := 0; step < 300; step++ {
			if rng.IntN(3) == 0 || len(offs) == 0 {
				off += 1 + int64(rng.IntN(3)/2*rng.IntN(4)) // sometimes skip offsets
				idxs = append(idxs, tr.add(off, 0, nil))
				offs = append(offs, off)
			} else {
				i := rng.IntN(len(offs))
				tr.end(idxs[i])
				endedSet[offs[i]] = true
			}
			// Brute force: watermark = first fetched offset not ended; above it, done ranges.
			w := tr.next
			for _, o := range offs {
				if !endedSet[o] {
					w = o
					break
				}
			}
			if got := tr.watermark(); got != w {
				t.Fatalf("round %d step %d: watermark %d, want %d", round, step, got, w)
			}
			fetched := map[int64]bool{}
			for _, o := range offs {
				fetched[o] = true
			}
			var want []span
			run := int64(-1)
			for o := w; o < tr.next; o++ {
				done := !fetched[o] || endedSet[o]
				if done && run < 0 {
					run = o
				}
				if !done && run >= 0 {
					want = append(want, span{run, o})
					run = -1
				}
			}
			if run >= 0 {
				want = append(want, span{run, tr.next})
			}
			if got := tr.done(); !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
				t.Fatalf("round %d step %d: done %v, want %v", round, step, got, want)
			}
			if got := tr.ranges(); got != len(want) {
				t.Fatalf("round %d step %d: ranges %d, want %d (%v)", round, step, got, len(want), want)
			}
		}
	}
}
