package consumer

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strings"
)

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
	if rest, ok := strings.CutPrefix(s, metaPrefixV5); ok {
		return decodeMetaV2(w, rest, 5)
	}
	if rest, ok := strings.CutPrefix(s, metaPrefixV4); ok {
		return decodeMetaV2(w, rest, 4)
	}
	if rest, ok := strings.CutPrefix(s, metaPrefixV3); ok {
		return decodeMetaV2(w, rest, 3)
	}
	if rest, ok := strings.CutPrefix(s, metaPrefixV2); ok {
		return decodeMetaV2(w, rest, 2)
	}
	if rest, ok := strings.CutPrefix(s, metaPrefixV1); ok {
		return decodeMetaV1(w, rest)
	}
	return commitMeta{}, fmt.Errorf("%w: unknown version", errBadMeta)
}

// decodeMetaV2 reads v2, v3 (v2 with the hand-over field after the horizon), v4 (v3 with the
// list of offsets that may have been sent after it) and v5 (v4 without the hand-over field), as
// version says.
func decodeMetaV2(w int64, s string, version int) (commitMeta, error) {
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
	ho, list, err := d.statement(version)
	if err != nil {
		return commitMeta{}, err
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
	if version >= 4 {
		if m.sent, err = list.sentList(w, m.horizon, m.done); err != nil {
			return commitMeta{}, err
		}
		m.sentKnown = true
	}
	return m, nil
}

// statement reads the hand-over fields after the horizon: Q (v3, v4) and the sent list's field
// (v4, v5), returned as a decoder of its own.
func (d *metaDecoder) statement(version int) (*handover, metaDecoder, error) {
	var (
		ho   *handover
		list metaDecoder
	)
	if version == 3 || version == 4 {
		q := d.uvarint()
		if q > maxMetaOffset {
			return nil, list, fmt.Errorf("%w: hand-over time out of range", errBadMeta)
		}
		ho = &handover{until: int64(q)}
	}
	if version >= 4 {
		n := d.uvarint()
		if d.err == nil && n > uint64(len(d.raw)) {
			return nil, list, fmt.Errorf("%w: sent list of %d bytes in %d", errBadMeta, n, len(d.raw))
		}
		if d.err == nil {
			list.raw, d.raw = d.raw[:n], d.raw[n:]
		}
	}
	return ho, list, nil
}

// sentList reads the v4 list of offsets that may have been sent: spans coded from w−1, all
// below the horizon h and none overlapping a completed range.
func (d *metaDecoder) sentList(w, h int64, done []span) ([]span, error) {
	kind := d.byte()
	if d.err != nil {
		return nil, d.err
	}
	var (
		sent []span
		err  error
	)
	switch kind {
	case metaKindNone:
		if len(d.raw) != 0 {
			return nil, fmt.Errorf("%w: %d trailing bytes in an empty sent list", errBadMeta, len(d.raw))
		}
	case metaKindRuns:
		sent, err = d.runs(w - 1)
	case metaKindBitmap:
		sent, err = d.bitmap(w - 1)
	default:
		err = fmt.Errorf("%w: unknown sent list kind %d", errBadMeta, kind)
	}
	if err != nil {
		return nil, err
	}
	if n := len(sent); n > 0 && sent[n-1].end > h {
		return nil, fmt.Errorf("%w: sent list reaches %d, past the horizon %d", errBadMeta, sent[n-1].end, h)
	}
	if !slices.Equal(subtractSpans(sent, done), sent) {
		return nil, fmt.Errorf("%w: sent list overlaps completed ranges", errBadMeta)
	}
	return sent, nil
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
