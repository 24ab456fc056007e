package consumer

import (
	"hash/maphash"
	"strconv"
)

// window remembers the last N ended events of one partition: their dedupe keys, and for each
// account still represented among them, the highest seq that ended. Keys are 64-bit hashes of
// (event_id, replay-count), so memory per id is fixed whatever the id length; two different
// events colliding within one window (~N²/2⁶⁵, about 3·10⁻¹⁰ for N=10⁵) would drop one as a
// duplicate.
type window struct {
	ids  map[uint64]struct{}
	seqs map[uint64]seqRef
	ring []windowEntry
	head int // next slot to overwrite once the ring is full
	size int
}

type windowEntry struct {
	id, acct uint64
}

type seqRef struct {
	seq  int64
	refs int32
}

func newWindow(size int) *window {
	return &window{
		ids:  make(map[uint64]struct{}),
		seqs: make(map[uint64]seqRef),
		size: size,
	}
}

func (w *window) has(id uint64) bool {
	_, ok := w.ids[id]
	return ok
}

// lastSeq returns the highest seq remembered for the account, or 0.
func (w *window) lastSeq(acct uint64) int64 { return w.seqs[acct].seq }

// add remembers an ended event. id 0 means no dedupe key; seq 0 means no seq.
func (w *window) add(id, acct uint64, seq int64) {
	if w.size <= 0 {
		return
	}
	if id != 0 {
		if _, dup := w.ids[id]; dup {
			id = 0 // already remembered; still refresh the account's seq below
		} else {
			w.ids[id] = struct{}{}
		}
	}
	if seq > 0 {
		r := w.seqs[acct]
		r.seq = max(r.seq, seq)
		r.refs++
		w.seqs[acct] = r
	} else {
		acct = 0
	}
	if id == 0 && acct == 0 {
		return
	}
	e := windowEntry{id: id, acct: acct}
	if len(w.ring) < w.size {
		w.ring = append(w.ring, e)
		return
	}
	old := w.ring[w.head]
	w.ring[w.head] = e
	w.head = (w.head + 1) % w.size
	if old.id != 0 {
		delete(w.ids, old.id)
	}
	if old.acct != 0 {
		if r := w.seqs[old.acct]; r.refs <= 1 {
			delete(w.seqs, old.acct)
		} else {
			r.refs--
			w.seqs[old.acct] = r
		}
	}
}

func (w *window) len() int { return len(w.ids) }

// hasher turns ids and accounts into the window's keys; one seed per Consumer so the keys of a
// read-back and of live records agree.
type hasher struct{ seed maphash.Seed }

func (h hasher) id(eventID string, replay int) uint64 {
	var m maphash.Hash
	m.SetSeed(h.seed)
	m.WriteString(eventID)
	m.WriteByte(0)
	m.WriteString(strconv.Itoa(replay))
	return nonZero(m.Sum64())
}

func (h hasher) account(name string) uint64 {
	return nonZero(maphash.String(h.seed, name))
}

func nonZero(v uint64) uint64 {
	if v == 0 {
		return 1
	}
	return v
}
