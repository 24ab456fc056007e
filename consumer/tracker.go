package consumer

import (
	"cmp"
	"slices"
)

// tracker follows one partition's fetched records in offset order and knows the watermark (the
// first offset not ended) and the shape of what ended above it. Offsets the fetch skipped
// (compaction, transaction markers) count as ended. It keeps an exact count of the completed
// ranges above the watermark so back-pressure on the commit metadata costs O(1) per record.
type tracker struct {
	ents []entry
	base uint64 // index of ents[0]
	next int64  // offset after the last fetched record

	cnt      int  // unended entries, other than the first, preceded by an ended offset
	tailDone bool // the last entry has ended (a completed range reaches the fetch position)
	unended  int
	mut      uint64 // adds and ends so far: the commit metadata's size may have changed when it moves
	shrink   uint64 // the ones that may have shrunk it: ends, and adds that moved the watermark
}

type entry struct {
	off     int64
	at      int64 // fetch time, unix nanoseconds
	ended   bool
	donePre bool     // the offset just before off is ended (or was skipped)
	owner   *account // the account whose record this is (nil for records ended on arrival)
}

func newTracker(start int64) *tracker { return &tracker{next: start} }

// watermark is the offset to commit: the first offset that has not ended.
func (t *tracker) watermark() int64 {
	if len(t.ents) > 0 {
		return t.ents[0].off
	}
	return t.next
}

// add appends a fetched record and returns its index.
func (t *tracker) add(off, at int64, owner *account) uint64 {
	e := entry{off: off, at: at, donePre: off > t.next, owner: owner}
	if n := len(t.ents); n > 0 && t.ents[n-1].ended {
		e.donePre = true
	}
	if len(t.ents) == 0 {
		t.shrink++ // the watermark moves from next to off
	}
	idx := t.base + uint64(len(t.ents))
	if len(t.ents) > 0 && e.donePre {
		t.cnt++
	}
	t.ents = append(t.ents, e)
	t.tailDone = false
	t.unended++
	t.mut++
	t.next = off + 1
	return idx
}

// end marks the record at idx ended and advances the watermark past ended records.
func (t *tracker) end(idx uint64) {
	i := int(idx - t.base)
	if idx < t.base || i >= len(t.ents) || t.ents[i].ended {
		return
	}
	e := &t.ents[i]
	if i > 0 && e.donePre {
		t.cnt--
	}
	if i+1 < len(t.ents) {
		n := &t.ents[i+1]
		if !n.donePre {
			n.donePre = true
			if !n.ended {
				t.cnt++
			}
		}
	} else {
		t.tailDone = true
	}
	e.ended = true
	t.unended--
	t.mut++
	t.shrink++
	if i != 0 {
		return
	}
	k := 0
	for k < len(t.ents) && t.ents[k].ended {
		k++
	}
	if k == len(t.ents) {
		t.ents = t.ents[:0]
		t.base += uint64(k)
		t.tailDone = false
		t.cnt = 0
		return
	}
	// The new first entry follows an ended one, so it was counted; the first is never counted.
	t.cnt--
	clear(t.ents[:k])
	t.ents = t.ents[k:]
	t.base += uint64(k)
}

// ended reports whether the record at off has ended (or was skipped). An offset not fetched yet
// has not.
func (t *tracker) ended(off int64) bool {
	if off >= t.next {
		return false
	}
	i, found := slices.BinarySearchFunc(t.ents, off, func(e entry, off int64) int { return cmp.Compare(e.off, off) })
	return !found || t.ents[i].ended
}

// ranges is the number of completed ranges above the watermark.
func (t *tracker) ranges() int {
	if len(t.ents) == 0 {
		return 0
	}
	n := t.cnt
	if t.tailDone {
		n++
	}
	return n
}

// oldest is the fetch time of the first unended record, or 0.
func (t *tracker) oldest() int64 {
	if len(t.ents) == 0 {
		return 0
	}
	return t.ents[0].at
}

// done lists the completed ranges above the watermark.
func (t *tracker) done() []span {
	var out []span
	if len(t.ents) == 0 {
		return nil
	}
	run := int64(-1)
	expected := t.ents[0].off
	for _, e := range t.ents {
		if e.off > expected && run < 0 {
			run = expected
		}
		if e.ended {
			if run < 0 {
				run = e.off
			}
		} else if run >= 0 {
			out = append(out, span{run, e.off})
			run = -1
		}
		expected = e.off + 1
	}
	if run >= 0 {
		out = append(out, span{run, expected})
	}
	return out
}
