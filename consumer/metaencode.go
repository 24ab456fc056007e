package consumer

import (
	"encoding/base64"
	"encoding/binary"
	"math"
	"math/bits"
)

// encodeMeta renders m for watermark w in at most maxBytes characters. The watermark is first
// normalised (advanced over a completed range starting at it), so what is written never has an
// empty gap. When the ranges do not fit, the highest are left out: those offsets then count as
// uncertain for the next owner, which costs an existence check each but loses nothing.
func encodeMeta(w int64, m commitMeta, maxBytes int) metaEnc {
	w, done := normalizeMeta(w, m.done)
	h := max(m.horizon, w)
	p := &metaPlan{runs: planRuns(w, done), bm: planBitmap(w, done), budget: metaRawBudget(maxBytes), hdr: metaHeaderLen(w, h)}
	p.kind, p.n = p.choose(p.hdr)
	ho := p.statement(m.handover)
	var list []byte // the v4 list field (kind and body), nil when v4 is not written
	var sent []span
	if m.sentKnown {
		list, sent = p.sentList(w, subtractSpans(clipSpans(mergeSpans(m.sent), w, h), done), len(done))
	}
	// Sized by the kind written: the other may be huge (a bitmap across a far range).
	raw := make([]byte, 0, p.hdr+bodySize(p.runs, p.bm, p.kind, p.n))
	raw = binary.AppendUvarint(raw, uint64(w))
	raw = binary.AppendUvarint(raw, uint64(h-w))
	prefix := metaPrefixV2
	if ho != nil {
		prefix = metaPrefixV3
		raw = binary.AppendUvarint(raw, uint64(ho.until))
	}
	if list != nil {
		prefix = metaPrefixV4
		if ho == nil {
			prefix = metaPrefixV5
		}
		raw = binary.AppendUvarint(raw, uint64(len(list)))
		raw = append(raw, list...)
	}
	raw = append(raw, byte(p.kind))
	switch p.kind {
	case metaKindRuns:
		raw = p.runs.append(raw, w, done[:p.n])
	case metaKindBitmap:
		raw = p.bm.append(raw, w, done[:p.n])
	}
	raw = binary.LittleEndian.AppendUint32(raw, metaCRC(raw))
	return metaEnc{w: w, h: h, done: done[:p.n], dropped: len(done) - p.n, handover: ho,
		sentKnown: list != nil, sent: sent, s: prefix + base64.RawURLEncoding.EncodeToString(raw)}
}

// metaPlan is what encodeMeta has decided so far: the header bytes, the kind of the completed
// ranges' body and how many of them fit in the raw budget.
type metaPlan struct {
	runs    runsPlan
	bm      bitmapPlan
	budget  int
	hdr     int
	kind, n int
}

// choose picks the kind that keeps the most ranges (the smaller body on a tie) after hdr bytes.
func (p *metaPlan) choose(hdr int) (int, int) {
	nRuns := p.runs.fit(p.budget - hdr)
	nBm := p.bm.fit(p.budget - hdr)
	kind, n := metaKindRuns, nRuns
	if nBm > nRuns || nBm == nRuns && p.bm.size(nBm) < p.runs.size(nRuns) {
		kind, n = metaKindBitmap, nBm
	}
	if n == 0 {
		kind = metaKindNone
	}
	return kind, n
}

// statement returns the hand-over statement to write (v3), adding its field to the plan, or nil:
// none asked, a time the decoder would refuse, or one that would cost a completed range (a full
// hold costs less than more uncertain records).
func (p *metaPlan) statement(ho *handover) *handover {
	if ho == nil || ho.until < 0 || ho.until > maxMetaOffset {
		return nil
	}
	l := uvarintLen(uint64(ho.until))
	k3, n3 := p.choose(p.hdr + l)
	if n3 < p.n {
		return nil
	}
	p.kind, p.n, p.hdr = k3, n3, p.hdr+l
	return &handover{until: ho.until}
}

// sentList returns the v4 (v5) list field for sent (and sent), adding it to the plan, or nil when
// it would not go whole with all nDone completed ranges within the budget: an offset left out of
// either would read as never sent. Then the commit is v3 (v2) and those offsets stay uncertain.
func (p *metaPlan) sentList(w int64, sent []span, nDone int) ([]byte, []span) {
	list := appendSpanList(nil, w, sent)
	l := uvarintLen(uint64(len(list))) + len(list)
	k4, n4 := p.choose(p.hdr + l)
	if n4 != nDone || p.hdr+l+bodySize(p.runs, p.bm, k4, n4) > p.budget {
		return nil, nil
	}
	p.kind, p.n, p.hdr = k4, n4, p.hdr+l
	return list, sent
}

// bodySize is the body bytes of the first n ranges in the kind chosen.
func bodySize(runs runsPlan, bm bitmapPlan, kind, n int) int {
	switch kind {
	case metaKindRuns:
		return runs.size(n)
	case metaKindBitmap:
		return bm.size(n)
	}
	return 0
}

// appendSpanList appends the v4 list of spans at or above w: a kind byte and the body of the
// smaller encoding, coded as the completed ranges are but from w−1, so a span may start at w.
func appendSpanList(raw []byte, w int64, spans []span) []byte {
	if len(spans) == 0 {
		return append(raw, metaKindNone)
	}
	runs, bm := planRuns(w-1, spans), planBitmap(w-1, spans)
	if bm.size(len(spans)) < runs.size(len(spans)) {
		return bm.append(append(raw, metaKindBitmap), w-1, spans)
	}
	return runs.append(append(raw, metaKindRuns), w-1, spans)
}

// metaLen is the length of the string encodeMeta would write for m at w with no limit.
func metaLen(w int64, m commitMeta) int {
	w, done := normalizeMeta(w, m.done)
	raw := metaHeaderLen(w, max(m.horizon, w))
	if len(done) > 0 {
		raw += min(planRuns(w, done).size(len(done)), planBitmap(w, done).size(len(done)))
	}
	return metaChars(raw)
}

// metaHeaderLen counts the raw bytes every v2 encoding has: watermark, horizon, kind, checksum.
func metaHeaderLen(w, h int64) int {
	return uvarintLen(uint64(w)) + uvarintLen(uint64(h-w)) + 1 + metaCRCLen
}

// metaChars is the length of the v2 string holding raw bytes.
func metaChars(raw int) int { return len(metaPrefixV2) + (raw*8+5)/6 }

// metaRawBudget is the most raw bytes whose v2 string fits in maxBytes characters.
func metaRawBudget(maxBytes int) int { return max(maxBytes-len(metaPrefixV2), 0) * 6 / 8 }

// egBits is the length of v in exp-Golomb code of order k.
func egBits(v uint64, k int) int {
	return 2*bits.Len64(v+1<<k) - 1 - k
}

// runsPlan is the run-length encoding of a set of ranges with its exp-Golomb orders and the
// cumulative bit cost of each prefix.
type runsPlan struct {
	kGap, kLen int
	cum        []int // cum[i]: bits of the first i ranges
}

func planRuns(w int64, done []span) runsPlan {
	gaps := make([]uint64, len(done))
	lens := make([]uint64, len(done))
	prev := w
	for i, r := range done {
		gaps[i] = uint64(r.start - prev - 1)
		lens[i] = uint64(r.end - r.start - 1)
		prev = r.end
	}
	p := runsPlan{kGap: bestEGOrder(gaps), kLen: bestEGOrder(lens), cum: make([]int, len(done)+1)}
	for i := range done {
		p.cum[i+1] = p.cum[i] + egBits(gaps[i], p.kGap) + egBits(lens[i], p.kLen)
	}
	return p
}

// size counts the body bytes of the first n ranges.
func (p runsPlan) size(n int) int {
	if n == 0 {
		return 0
	}
	return uvarintLen(uint64(n)) + 2 + (p.cum[n]+7)/8
}

// fit is the most ranges whose body fits in budget bytes.
func (p runsPlan) fit(budget int) int {
	lo, hi := 0, len(p.cum)-1
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if p.size(mid) <= budget {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

func (p runsPlan) append(raw []byte, w int64, done []span) []byte {
	raw = binary.AppendUvarint(raw, uint64(len(done)))
	raw = append(raw, byte(p.kGap), byte(p.kLen))
	bw := bitWriter{buf: raw}
	prev := w
	for _, r := range done {
		bw.eg(uint64(r.start-prev-1), p.kGap)
		bw.eg(uint64(r.end-r.start-1), p.kLen)
		prev = r.end
	}
	return bw.flush()
}

// bestEGOrder picks the exp-Golomb order that codes vals in the fewest bits: estimated for every
// order from a histogram of bit lengths, then exact around the estimate.
func bestEGOrder(vals []uint64) int {
	if len(vals) == 0 {
		return 0
	}
	var hist [65]int
	for _, v := range vals {
		hist[bits.Len64(v)]++
	}
	est, bestEst := 0, math.MaxInt
	for k := 0; k <= maxEGOrder; k++ {
		c := 0
		for b, n := range hist {
			if n > 0 {
				c += n * (2*max(b, k+1) - 1 - k)
			}
		}
		if c < bestEst {
			est, bestEst = k, c
		}
	}
	best, bestBits := est, math.MaxInt
	for k := max(est-1, 0); k <= min(est+1, maxEGOrder); k++ {
		c := 0
		for _, v := range vals {
			c += egBits(v, k)
		}
		if c < bestBits {
			best, bestBits = k, c
		}
	}
	return best
}

// bitmapPlan is the bitmap encoding of a set of ranges.
type bitmapPlan struct{ ends []int64 }

func planBitmap(w int64, done []span) bitmapPlan {
	p := bitmapPlan{ends: make([]int64, len(done))}
	for i, r := range done {
		p.ends[i] = r.end - w - 1
	}
	return p
}

func (p bitmapPlan) size(n int) int {
	if n == 0 {
		return 0
	}
	nb := p.ends[n-1]
	if nb > math.MaxInt32*8 {
		return math.MaxInt32 // never fits
	}
	return uvarintLen(uint64(nb)) + int((nb+7)/8)
}

func (p bitmapPlan) fit(budget int) int {
	lo, hi := 0, len(p.ends)
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if p.size(mid) <= budget {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

func (p bitmapPlan) append(raw []byte, w int64, done []span) []byte {
	nb := done[len(done)-1].end - w - 1
	raw = binary.AppendUvarint(raw, uint64(nb))
	at := len(raw)
	raw = append(raw, make([]byte, (nb+7)/8)...)
	bm := raw[at:]
	for _, r := range done {
		for o := r.start; o < r.end; o++ {
			i := o - w - 1
			bm[i/8] |= 1 << (i % 8)
		}
	}
	return raw
}

// bitWriter appends bits, most significant first, to buf.
type bitWriter struct {
	buf  []byte
	acc  uint64 // pending bits, right-aligned
	nacc uint   // how many (< 8 between calls)
}

// put appends the low n bits of v (n ≤ 56).
func (b *bitWriter) put(v uint64, n uint) {
	b.acc = b.acc<<n | v&(1<<n-1)
	b.nacc += n
	for b.nacc >= 8 {
		b.nacc -= 8
		b.buf = append(b.buf, byte(b.acc>>b.nacc))
	}
	b.acc &= 1<<b.nacc - 1
}

// eg writes v in exp-Golomb code of order k: u = v+2^k has L bits; L−1−k zeros, then u.
func (b *bitWriter) eg(v uint64, k int) {
	u := v + 1<<k
	l := uint(bits.Len64(u))
	for z := l - 1 - uint(k); z > 0; {
		n := min(z, 56)
		b.put(0, n)
		z -= n
	}
	for l > 0 {
		n := min(l, 56)
		b.put(u>>(l-n), n)
		l -= n
	}
}

// flush writes the last partial byte, zero-padded, and returns the buffer.
func (b *bitWriter) flush() []byte {
	if b.nacc > 0 {
		b.buf = append(b.buf, byte(b.acc<<(8-b.nacc)))
		b.acc, b.nacc = 0, 0
	}
	return b.buf
}
