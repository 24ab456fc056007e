package consumer

import (
	"fmt"
	"slices"
)

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
	if err := checkSent(w, m, enc, got); err != nil {
		return err
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

// checkSent checks the v4 or v5 list: written only when asked for and reported, and every offset of
// [watermark, horizon) that may have been sent (m.sent) or is done (m.done, which was dispatched
// or ended at once) reads as done or may-have-been-sent: none of them reads as never sent.
func checkSent(w int64, m commitMeta, enc metaEnc, got commitMeta) error {
	if got.sentKnown != enc.sentKnown {
		return fmt.Errorf("commit metadata: sent list written %v, reported %v", got.sentKnown, enc.sentKnown)
	}
	if !got.sentKnown {
		return nil
	}
	if !m.sentKnown {
		return fmt.Errorf("commit metadata states a sent list that was not asked for")
	}
	need := clipSpans(mergeSpans(append(slices.Clone(m.sent), m.done...)), max(w, enc.w), got.horizon)
	have := mergeSpans(append(slices.Clone(got.done), got.sent...))
	if miss := subtractSpans(need, have); len(miss) > 0 {
		return fmt.Errorf("commit metadata reads [%d,%d) as never sent, which may have been", miss[0].start, miss[0].end)
	}
	if !slices.Equal(got.sent, enc.sent) {
		return fmt.Errorf("commit metadata: sent list decodes to %d spans, written %d", len(got.sent), len(enc.sent))
	}
	return nil
}
