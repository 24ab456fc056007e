package consumer

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/bits"
	"slices"
	"strings"
)

// The commit metadata, written beside every committed watermark W, says which offsets above W
// already ended and how far a previous owner may have dispatched. Format v2 (see DESIGN.md):
//
//	"v2:" + base64url(raw), no padding
//	raw = uvarint(W) uvarint(H−W) kind body crc32c(everything before it, 4 bytes little-endian)
//	kind 0: no completed ranges; no body
//	kind 1 (runs): uvarint(n) byte(kGap) byte(kLen), then a bit stream (most significant bit
//	        first, zero-padded to a byte) of n pairs: expGolomb_kGap(start−prevEnd−1),
//	        expGolomb_kLen(end−start−1), prevEnd starting at W
//	kind 2 (bitmap): uvarint(nbits) and nbits bits (least significant first): bit i set when
//	        offset W+1+i ended; the last bit is set, the padding is zero
//
// W is carried so that metadata kept beside a moved offset is detected (errMetaWatermarkMismatch)
// rather than read as ranges shifted onto records nobody ran. The encoder writes whichever kind is
// smaller. v1 strings (the previous format, which carried no watermark) are still read.
//
// Format v3 is v2 with one more header field, written only by the final commit of a generation
// after its drain (see handover.go):
//
//	"v3:" + base64url(uvarint(W) uvarint(H−W) uvarint(Q) kind body crc32c)
//
// Q = 0: no API request of the partition sent by the writer (or by an owner before it) was still
// running when the commit was sent; Q > 0: none runs after unix millisecond Q of the writer's
// clock. The checksum and the watermark binding cover it like the rest.
const (
	metaPrefixV1 = "v1:"
	metaPrefixV2 = "v2:"
	metaPrefixV3 = "v3:"

	metaKindNone   = 0
	metaKindRuns   = 1
	metaKindBitmap = 2

	// maxMetaLen bounds what decodeMeta reads, whatever the broker hands back: with it the
	// decoded ranges are bounded too (at most 4 per encoded byte).
	maxMetaLen = 1 << 16
	// maxMetaRanges bounds the ranges of a v1 string.
	maxMetaRanges = 1 << 16
	// maxEGOrder bounds the exp-Golomb order a v2 string may use.
	maxEGOrder = 62
	// metaCRCLen is the checksum's size at the end of the raw bytes.
	metaCRCLen = 4
	// maxMetaOffset bounds offsets in decoded metadata so sums of them cannot overflow.
	maxMetaOffset = math.MaxInt64 / 2
)

var (
	// errBadMeta is returned (wrapped) for metadata that is not ours or is corrupt.
	errBadMeta = errors.New("bad commit metadata")
	// errMetaWatermarkMismatch is returned (wrapped, together with errBadMeta) when intact v2
	// metadata was written for another offset than the one committed beside it: a tool moved
	// the offset and kept our string. Its ranges say nothing reliable about the records above the
	// committed offset, so the caller must treat them as unknown (uncertain), never as done.
	errMetaWatermarkMismatch = errors.New("commit metadata written for another offset")
)

// metaCRC is the v2 checksum: CRC-32C (the table is built once by the standard library).
func metaCRC(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }

// span is a half-open offset range [start, end).
type span struct{ start, end int64 }

// commitMeta is what a commit stores beside the watermark: the dispatch horizon (no offset at or
// beyond it was ever handed to the dispatcher) and the offsets above the watermark known to have
// ended, as sorted, disjoint, non-adjacent ranges.
type commitMeta struct {
	horizon int64
	done    []span
	// handover is the final commit's statement about the writer's API requests (v3), nil when
	// the commit made none (periodic commits, v1, v2): the next owner then holds in full.
	handover *handover
}

// handover is what a final commit states about the requests of its partition still running at
// the API: until is a unix millisecond of the writer's clock after which none runs, 0 when none
// ran any more when the commit was sent.
type handover struct{ until int64 }

// metaEnc is one commit's encoded metadata.
type metaEnc struct {
	w    int64  // the watermark to commit: the one asked for, advanced over a range starting at it
	h    int64  // the horizon written, at least w
	done []span // the ranges written: normalised, the highest left out when over the limit
	// handover is the statement written (v3), nil when none: asked for none, or writing it would
	// have left out more ranges than v2 (a full hold costs less than more uncertain records).
	handover *handover
	s        string
	// dropped counts ranges left out for size: their offsets are uncertain for a successor.
	dropped int
}

// normalizeMeta returns the same knowledge in the one form the encoder writes: the watermark
// advanced over every range that starts at (or below) it, ranges sorted, merged when they touch
// and above the watermark, none empty. The watermark only moves over offsets known to be done.
func normalizeMeta(w int64, done []span) (int64, []span) {
	out := mergeSpans(done)
	i := 0
	for i < len(out) && out[i].start <= w {
		w = max(w, out[i].end)
		i++
	}
	return w, out[i:]
}

// mergeSpans returns done sorted, without empty ranges, and with touching ones merged.
func mergeSpans(done []span) []span {
	if !slices.IsSortedFunc(done, func(a, b span) int { return cmpInt64(a.start, b.start) }) {
		done = slices.Clone(done)
		slices.SortFunc(done, func(a, b span) int { return cmpInt64(a.start, b.start) })
	}
	out := make([]span, 0, len(done))
	for _, r := range done {
		if r.end <= r.start {
			continue
		}
		if n := len(out); n > 0 && r.start <= out[n-1].end {
			out[n-1].end = max(out[n-1].end, r.end)
			continue
		}
		out = append(out, r)
	}
	return out
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// encodeMeta renders m for watermark w in at most maxBytes characters. The watermark is first
// normalised (advanced over a completed range starting at it), so what is written never has an
// empty gap. When the ranges do not fit, the highest are left out: those offsets then count as
// uncertain for the next owner, which costs an existence check each but loses nothing.
func encodeMeta(w int64, m commitMeta, maxBytes int) metaEnc {
	w, done := normalizeMeta(w, m.done)
	h := max(m.horizon, w)
	hdr := metaHeaderLen(w, h)
	budget := metaRawBudget(maxBytes)

	runs := planRuns(w, done)
	bm := planBitmap(w, done)
	choose := func(hdr int) (int, int) {
		nRuns := runs.fit(budget - hdr)
		nBm := bm.fit(budget - hdr)
		kind, n := metaKindRuns, nRuns
		if nBm > nRuns || nBm == nRuns && bm.size(nBm) < runs.size(nRuns) {
			kind, n = metaKindBitmap, nBm
		}
		if n == 0 {
			kind = metaKindNone
		}
		return kind, n
	}
	kind, n := choose(hdr)
	ho := m.handover
	if ho != nil {
		if ho.until < 0 || ho.until > maxMetaOffset {
			ho = nil // not a time this decoder accepts: state nothing (a full hold)
		} else if k3, n3 := choose(hdr + uvarintLen(uint64(ho.until))); n3 < n {
			ho = nil
		} else {
			kind, n = k3, n3
			hdr += uvarintLen(uint64(ho.until))
		}
	}
	body := 0
	switch kind {
	case metaKindRuns:
		body = runs.size(n)
	case metaKindBitmap:
		body = bm.size(n)
	}
	// Sized by the kind written: the other may be huge (a bitmap across a far range).
	raw := make([]byte, 0, hdr+body)
	raw = binary.AppendUvarint(raw, uint64(w))
	raw = binary.AppendUvarint(raw, uint64(h-w))
	prefix := metaPrefixV2
	if ho != nil {
		prefix = metaPrefixV3
		raw = binary.AppendUvarint(raw, uint64(ho.until))
		ho = &handover{until: ho.until}
	}
	raw = append(raw, byte(kind))
	switch kind {
	case metaKindRuns:
		raw = runs.append(raw, w, done[:n])
	case metaKindBitmap:
		raw = bm.append(raw, w, done[:n])
	}
	raw = binary.LittleEndian.AppendUint32(raw, metaCRC(raw))
	return metaEnc{w: w, h: h, done: done[:n], dropped: len(done) - n, handover: ho,
		s: prefix + base64.RawURLEncoding.EncodeToString(raw)}
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
type bitmapPlan struct{ ends []int64 } // ends[i]: bits needed to hold the first i+1 ranges

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

// bitReader reads what bitWriter wrote.
type bitReader struct {
	buf []byte
	pos int // bit position
}

func (b *bitReader) left() int { return len(b.buf)*8 - b.pos }

func (b *bitReader) bit() (bool, bool) {
	if b.pos >= len(b.buf)*8 {
		return false, false
	}
	one := b.buf[b.pos/8]&(0x80>>(b.pos%8)) != 0
	b.pos++
	return one, true
}

// window returns the next bits from pos, left-aligned: at least 57 of them are real (zeros past
// the end of buf).
func (b *bitReader) window() uint64 {
	i := b.pos / 8
	var w uint64
	if i+8 <= len(b.buf) {
		w = binary.BigEndian.Uint64(b.buf[i:])
	} else {
		var tmp [8]byte
		copy(tmp[:], b.buf[i:])
		w = binary.BigEndian.Uint64(tmp[:])
	}
	return w << (b.pos % 8)
}

func (b *bitReader) eg(k int) (uint64, error) {
	// Fast path: the whole code lies in one window.
	if w := b.window(); w != 0 {
		z := bits.LeadingZeros64(w)
		if n := 2*z + k + 1; n <= 57 && n <= b.left() {
			u := w << z >> (64 - (z + k + 1))
			b.pos += n
			return u - 1<<k, nil
		}
	}
	z := 0
	for {
		one, ok := b.bit()
		if !ok {
			return 0, fmt.Errorf("%w: truncated bit stream", errBadMeta)
		}
		if one {
			break
		}
		z++
		if z+k > 63 {
			return 0, fmt.Errorf("%w: oversized value", errBadMeta)
		}
	}
	u := uint64(1)
	for range z + k {
		one, ok := b.bit()
		if !ok {
			return 0, fmt.Errorf("%w: truncated bit stream", errBadMeta)
		}
		u <<= 1
		if one {
			u |= 1
		}
	}
	return u - 1<<k, nil
}

// decodeMeta parses metadata committed at watermark w. It rejects anything malformed, since the
// string comes from the broker and may have been written by another tool; intact v2 metadata
// written for another offset gives an error matching both errBadMeta and
// errMetaWatermarkMismatch.
func decodeMeta(w int64, s string) (commitMeta, error) {
	if w < 0 || w > maxMetaOffset {
		return commitMeta{}, fmt.Errorf("%w: watermark %d out of range", errBadMeta, w)
	}
	if len(s) > maxMetaLen {
		return commitMeta{}, fmt.Errorf("%w: %d bytes, more than %d", errBadMeta, len(s), maxMetaLen)
	}
	if rest, ok := strings.CutPrefix(s, metaPrefixV3); ok {
		return decodeMetaV2(w, rest, true)
	}
	if rest, ok := strings.CutPrefix(s, metaPrefixV2); ok {
		return decodeMetaV2(w, rest, false)
	}
	if rest, ok := strings.CutPrefix(s, metaPrefixV1); ok {
		return decodeMetaV1(w, rest)
	}
	return commitMeta{}, fmt.Errorf("%w: unknown version", errBadMeta)
}

// decodeMetaV2 reads v2, and v3 (v2 with the hand-over field after the horizon) when v3 is set.
func decodeMetaV2(w int64, s string, v3 bool) (commitMeta, error) {
	raw, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return commitMeta{}, fmt.Errorf("%w: %v", errBadMeta, err)
	}
	if len(raw) < metaCRCLen+3 {
		return commitMeta{}, fmt.Errorf("%w: too short", errBadMeta)
	}
	body, sum := raw[:len(raw)-metaCRCLen], binary.LittleEndian.Uint32(raw[len(raw)-metaCRCLen:])
	if metaCRC(body) != sum {
		return commitMeta{}, fmt.Errorf("%w: checksum mismatch", errBadMeta)
	}
	d := metaDecoder{raw: body}
	ew := d.uvarint()
	dh := d.uvarint()
	var ho *handover
	if v3 {
		q := d.uvarint()
		if q > maxMetaOffset {
			return commitMeta{}, fmt.Errorf("%w: hand-over time out of range", errBadMeta)
		}
		ho = &handover{until: int64(q)}
	}
	kind := d.byte()
	if d.err != nil {
		return commitMeta{}, d.err
	}
	if ew > maxMetaOffset || dh > maxMetaOffset-ew {
		return commitMeta{}, fmt.Errorf("%w: offset overflow", errBadMeta)
	}
	if int64(ew) != w {
		return commitMeta{}, fmt.Errorf("%w: %w: written for offset %d, committed at %d",
			errBadMeta, errMetaWatermarkMismatch, ew, w)
	}
	m := commitMeta{horizon: w + int64(dh), handover: ho}
	switch kind {
	case metaKindNone:
	case metaKindRuns:
		m.done, err = d.runs(w)
	case metaKindBitmap:
		m.done, err = d.bitmap(w)
	default:
		err = fmt.Errorf("%w: unknown kind %d", errBadMeta, kind)
	}
	if err != nil {
		return commitMeta{}, err
	}
	if len(d.raw) != 0 {
		return commitMeta{}, fmt.Errorf("%w: %d trailing bytes", errBadMeta, len(d.raw))
	}
	return m, nil
}

// metaDecoder reads raw bytes front to back, remembering the first error.
type metaDecoder struct {
	raw []byte
	err error
}

func (d *metaDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.raw)
	if n <= 0 {
		d.err = fmt.Errorf("%w: truncated or oversized varint", errBadMeta)
		return 0
	}
	d.raw = d.raw[n:]
	return v
}

func (d *metaDecoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.raw) == 0 {
		d.err = fmt.Errorf("%w: truncated", errBadMeta)
		return 0
	}
	b := d.raw[0]
	d.raw = d.raw[1:]
	return b
}

func (d *metaDecoder) runs(w int64) ([]span, error) {
	n := d.uvarint()
	kGap, kLen := int(d.byte()), int(d.byte())
	if d.err != nil {
		return nil, d.err
	}
	if n == 0 || kGap > maxEGOrder || kLen > maxEGOrder {
		return nil, fmt.Errorf("%w: bad run header", errBadMeta)
	}
	br := bitReader{buf: d.raw}
	// Every range takes at least two bits, which bounds n by the input before allocating.
	if n > uint64(br.left()/2) {
		return nil, fmt.Errorf("%w: %d ranges in %d bytes", errBadMeta, n, len(d.raw))
	}
	done := make([]span, 0, n)
	prev := w
	for range n {
		g, err := br.eg(kGap)
		if err != nil {
			return nil, err
		}
		l, err := br.eg(kLen)
		if err != nil {
			return nil, err
		}
		if g >= maxMetaOffset || l >= maxMetaOffset || prev > maxMetaOffset-int64(g)-int64(l)-2 {
			return nil, fmt.Errorf("%w: offset overflow", errBadMeta)
		}
		start := prev + int64(g) + 1
		end := start + int64(l) + 1
		done = append(done, span{start, end})
		prev = end
	}
	// Only zero padding may follow, within the last byte.
	if br.left() >= 8 {
		return nil, fmt.Errorf("%w: trailing bits", errBadMeta)
	}
	for br.left() > 0 {
		if one, _ := br.bit(); one {
			return nil, fmt.Errorf("%w: non-zero padding", errBadMeta)
		}
	}
	d.raw = nil
	return done, nil
}

func (d *metaDecoder) bitmap(w int64) ([]span, error) {
	nb := d.uvarint()
	if d.err != nil {
		return nil, d.err
	}
	if nb == 0 || nb > uint64(len(d.raw))*8 || uint64(len(d.raw)) != (nb+7)/8 {
		return nil, fmt.Errorf("%w: bitmap of %d bits in %d bytes", errBadMeta, nb, len(d.raw))
	}
	if w > maxMetaOffset-int64(nb)-1 {
		return nil, fmt.Errorf("%w: offset overflow", errBadMeta)
	}
	bm := d.raw
	set := func(i uint64) bool { return bm[i/8]&(1<<(i%8)) != 0 }
	if !set(nb - 1) {
		return nil, fmt.Errorf("%w: bitmap does not end with a done offset", errBadMeta)
	}
	if nb%8 != 0 && bm[len(bm)-1]>>(nb%8) != 0 {
		return nil, fmt.Errorf("%w: non-zero padding", errBadMeta)
	}
	// Count the ranges (bits set whose predecessor is clear) to allocate once.
	n, prevTop := 0, byte(0)
	for _, x := range bm {
		n += bits.OnesCount8(x &^ (x<<1 | prevTop))
		prevTop = x >> 7
	}
	done := make([]span, 0, n)
	for i := uint64(0); i < nb; i++ {
		if !set(i) {
			continue
		}
		off := w + 1 + int64(i)
		if n := len(done); n > 0 && done[n-1].end == off {
			done[n-1].end++
		} else {
			done = append(done, span{off, off + 1})
		}
	}
	d.raw = nil
	return done, nil
}

// decodeMetaV1 reads the previous format: base64url(uvarint(horizon−w), then per completed range
// uvarint(start−previousEnd), uvarint(length)). A gap of 0 (a range at the watermark, or touching
// the one before) was written by the v1 encoder and is read as what it means.
func decodeMetaV1(w int64, s string) (commitMeta, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return commitMeta{}, fmt.Errorf("%w: %v", errBadMeta, err)
	}
	next := func() (int64, error) {
		v, n := binary.Uvarint(raw)
		if n <= 0 || v > math.MaxInt64/4 {
			return 0, fmt.Errorf("%w: truncated or oversized varint", errBadMeta)
		}
		raw = raw[n:]
		return int64(v), nil
	}
	d, err := next()
	if err != nil {
		return commitMeta{}, err
	}
	m := commitMeta{horizon: w + d}
	prev := w
	for len(raw) > 0 {
		if len(m.done) >= maxMetaRanges {
			return commitMeta{}, fmt.Errorf("%w: more than %d ranges", errBadMeta, maxMetaRanges)
		}
		gap, err := next()
		if err != nil {
			return commitMeta{}, err
		}
		n, err := next()
		if err != nil {
			return commitMeta{}, err
		}
		if n < 1 {
			return commitMeta{}, fmt.Errorf("%w: empty range", errBadMeta)
		}
		start := prev + gap
		end := start + n
		if start < prev || end < start || end > maxMetaOffset {
			return commitMeta{}, fmt.Errorf("%w: offset overflow", errBadMeta)
		}
		if k := len(m.done); k > 0 && gap == 0 {
			m.done[k-1].end = end
		} else {
			m.done = append(m.done, span{start, end})
		}
		prev = end
	}
	return m, nil
}

// verifiedMeta encodes m for a commit at w with encode and decodes the result before it may be
// written: a string the next owner would reject, or read differently, is never committed. On a
// mismatch it returns an error and, in its place, the watermark and horizon with no completed
// ranges (only "done" knowledge is lost: those offsets become uncertain, an existence check each),
// or, if even that does not round-trip, ok false: skip the partition in this commit and keep the
// previous commit, which stays true.
func verifiedMeta(encode func(int64, commitMeta, int) metaEnc, w int64, m commitMeta, maxBytes int) (enc metaEnc, ok bool, err error) {
	enc = encode(w, m, maxBytes)
	if err = checkMeta(w, m, enc, maxBytes); err == nil {
		return enc, true, nil
	}
	plain := commitMeta{horizon: m.horizon}
	fb := encode(w, plain, maxBytes)
	if checkMeta(w, plain, fb, maxBytes) != nil {
		return metaEnc{}, false, err
	}
	return fb, true, err
}

// checkMeta decodes enc as a successor would and checks it against what was asked: it may claim
// done only offsets that are (the ranges of m, and everything below w), its horizon is m's (or the
// advanced watermark), and it loses no range but the ones it counts as dropped.
func checkMeta(w int64, m commitMeta, enc metaEnc, maxBytes int) error {
	if len(enc.s) > maxBytes {
		return fmt.Errorf("commit metadata: %d bytes, limit %d", len(enc.s), maxBytes)
	}
	got, err := decodeMeta(enc.w, enc.s)
	if err != nil {
		return fmt.Errorf("commit metadata does not decode: %w", err)
	}
	in := mergeSpans(m.done)
	// covered reports whether r lies in one range of in (or below w); claims are asked in
	// increasing order, so one walk through in serves them all.
	j := 0
	covered := func(r span) bool {
		if r.end <= w {
			return true
		}
		r.start = max(r.start, w)
		for j < len(in) && in[j].end <= r.start {
			j++
		}
		return j < len(in) && in[j].start <= r.start && r.end <= in[j].end
	}
	if enc.w < w || enc.w > w && !covered(span{w, enc.w}) {
		return fmt.Errorf("commit metadata moves the watermark from %d to %d over offsets not done", w, enc.w)
	}
	if want := max(m.horizon, enc.w); got.horizon != want {
		return fmt.Errorf("commit metadata decodes to horizon %d, want %d", got.horizon, want)
	}
	// A hand-over statement may only be left out (a full hold), never changed or made up.
	if got.handover != nil && (m.handover == nil || *got.handover != *m.handover) {
		return fmt.Errorf("commit metadata states hand-over %+v, asked %+v", *got.handover, m.handover)
	}
	if (got.handover == nil) != (enc.handover == nil) {
		return fmt.Errorf("commit metadata: hand-over statement written %v, reported %v", got.handover != nil, enc.handover != nil)
	}
	prev := enc.w
	for _, r := range got.done {
		if r.start <= prev || !covered(r) {
			return fmt.Errorf("commit metadata claims [%d,%d) done, which was not", r.start, r.end)
		}
		prev = r.end
	}
	_, want := normalizeMeta(w, m.done)
	if len(got.done)+enc.dropped != len(want) || enc.dropped < 0 {
		return fmt.Errorf("commit metadata holds %d ranges and drops %d of %d", len(got.done), enc.dropped, len(want))
	}
	return nil
}

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
