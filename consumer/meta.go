package consumer

import (
	"errors"
	"hash/crc32"
	"math"
	"slices"
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
//
// Format v4 is v3 with the list of offsets that may have been sent (commitMeta.sent) after Q, in
// a length-prefixed field, written only by a final commit that also states Q and keeps every
// completed range:
//
//	"v4:" + base64url(uvarint(W) uvarint(H−W) uvarint(Q) uvarint(len(list)) list kind body crc32c)
//	list = byte(kind) body, kind and body as the completed ranges' but with prevEnd starting
//	       at W−1 (runs) and bit i standing for offset W+i (bitmap): the list may start at W
//
// Format v5 is v4 without Q, written by the periodic commits (nothing is stated about when the
// writer's requests end: a successor holds the listed records' accounts in full):
//
//	"v5:" + base64url(uvarint(W) uvarint(H−W) uvarint(len(list)) list kind body crc32c)
//
// Its list is whole because a record is written only once an accepted commit lists it (admit.go).
const (
	metaPrefixV1 = "v1:"
	metaPrefixV2 = "v2:"
	metaPrefixV3 = "v3:"
	metaPrefixV4 = "v4:"
	metaPrefixV5 = "v5:"

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
	// sentKnown: the commit states (v4 with a hand-over statement, v5 without) which offsets of
	// [watermark, horizon) may have reached the API: those in sent, sorted, disjoint,
	// non-adjacent and none done. Every other offset in that range that is not done was never
	// sent by the writer nor by an owner before it: not uncertain. Without it every offset in
	// the range that is not done is uncertain.
	sentKnown bool
	sent      []span
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
	// sentKnown and sent: the v4 or v5 list written (never with dropped ranges).
	sentKnown bool
	sent      []span
	s         string
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

// ends[i]: bits needed to hold the first i+1 ranges

// clipSpans returns the parts of the sorted, disjoint spans a within [lo, hi).
func clipSpans(a []span, lo, hi int64) []span {
	var out []span
	for _, r := range a {
		r.start, r.end = max(r.start, lo), min(r.end, hi)
		if r.start < r.end {
			out = append(out, r)
		}
	}
	return out
}

// subtractSpans returns a without the offsets in b; both sorted and disjoint.
func subtractSpans(a, b []span) []span {
	var out []span
	j := 0
	for _, r := range a {
		for j < len(b) && b[j].end <= r.start {
			j++
		}
		for k := j; k < len(b) && b[k].start < r.end; k++ {
			if b[k].start > r.start {
				out = append(out, span{r.start, b[k].start})
			}
			r.start = max(r.start, b[k].end)
		}
		if r.start < r.end {
			out = append(out, r)
		}
	}
	return out
}
