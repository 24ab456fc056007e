package consumer

import (
	"encoding/binary"
	"math"
)

// metaBudget lets the back-pressure check know, per record and without encoding, whether a
// partition's commit metadata could outgrow its limit. It keeps the exact size of the run-length
// body at the last measurement and its exp-Golomb orders: with those orders fixed, one change of the
// completed set (a record ending inside an incomplete run splits it; a fetch past skipped offsets
// adds a range) adds at most one gap and one length of at most the tracked span, and the encoder
// only ever writes something smaller than that run-length body.
type metaBudget struct {
	measured   bool
	mut        uint64 // the tracker's mutation count when measured
	shrink     uint64 // and its count of mutations that may shrink the set
	runs       int    // raw bytes of the run-length body then (0: no ranges)
	kGap, kLen int
	measures   int // measurements taken (tests and the benchmark read it)
}

// metaPressured reports whether p's commit metadata could pass maxBytes characters once extra
// more records end out of order. A bitmap of the whole tracked span that fits answers at once;
// otherwise the run-length bound, measured again when changes since the last measurement make
// it too loose.
func (p *part) metaPressured(extra, maxBytes int) bool {
	w := p.tr.watermark()
	end := p.tr.next
	if n := len(p.done); n > 0 {
		end = max(end, p.done[n-1].end)
	}
	// The header as the next commit writes it: the (normalised) watermark is at most end, the
	// horizon may be extended by that commit, so its varint is taken at its longest.
	hdr := uvarintLen(uint64(max(end, 0))) + binary.MaxVarintLen64 + 1 + metaCRCLen
	nb := max(end-w-1, 0)
	if nb < math.MaxInt32 && metaChars(hdr+uvarintLen(uint64(nb))+int((nb+7)/8)) <= maxBytes {
		return false
	}
	b := &p.mb
	span := uint64(max(end-w, 1))
	bound := func(changes uint64) int {
		per := uint64(egBits(span, b.kGap) + egBits(span, b.kLen) + 8) // + a byte for the count
		return metaChars(hdr + b.runs + int((changes*per+7)/8))
	}
	if d := p.tr.mut - b.mut; !b.measured || d > 0 && bound(d+uint64(extra)) > maxBytes {
		if b.measured && p.tr.shrink == b.shrink && bound(uint64(extra)) > maxBytes {
			// Only records were fetched since (no end, the watermark did not move): the set and
			// the span only grew, so the last size is a lower bound and the answer stands.
			return true
		}
		b.measure(w, p.doneAbove(), p.tr.mut, p.tr.shrink)
	}
	return bound(uint64(extra)) > maxBytes
}

func (b *metaBudget) measure(w int64, done []span, mut, shrink uint64) {
	w, done = normalizeMeta(w, done)
	plan := planRuns(w, done)
	*b = metaBudget{measured: true, mut: mut, shrink: shrink, runs: plan.size(len(done)), kGap: plan.kGap,
		kLen: plan.kLen, measures: b.measures + 1}
}

func uvarintLen(v uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], v)
}
