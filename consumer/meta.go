package consumer

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
)

// metaPrefix versions the commit metadata so a later encoding can be told apart.
const metaPrefix = "v1:"

// maxMetaRanges bounds what decodeMeta accepts, whatever the broker hands back.
const maxMetaRanges = 1 << 16

// errBadMeta is returned (wrapped) for metadata that is not ours or is corrupt.
var errBadMeta = errors.New("bad commit metadata")

// span is a half-open offset range [start, end).
type span struct{ start, end int64 }

// commitMeta is what a commit stores beside the watermark: the dispatch horizon (no offset at or
// beyond it was ever handed to the dispatcher) and the offsets above the watermark known to have
// ended, as sorted, disjoint, non-adjacent ranges.
type commitMeta struct {
	horizon int64
	done    []span
}

// encodeMeta renders m for watermark w in at most maxBytes bytes: "v1:" + unpadded base64url of
// uvarint(horizon-w) followed by, per completed range, uvarint(start-previousEnd) and
// uvarint(length), where previousEnd starts at w. When the ranges do not fit, the highest ones are
// left out: those offsets then count as uncertain for the next owner, which costs an existence
// check each but loses nothing. It reports how many ranges it kept.
func encodeMeta(w int64, m commitMeta, maxBytes int) (string, int) {
	h := max(m.horizon, w)
	buf := make([]byte, 0, 8+len(m.done)*4)
	buf = binary.AppendUvarint(buf, uint64(h-w))
	budget := (maxBytes-len(metaPrefix))*6/8 - 1 // raw bytes whose base64 fits
	prev := w
	kept := 0
	for _, r := range m.done {
		n := len(buf)
		buf = binary.AppendUvarint(buf, uint64(r.start-prev))
		buf = binary.AppendUvarint(buf, uint64(r.end-r.start))
		if len(buf) > budget {
			buf = buf[:n]
			break
		}
		prev = r.end
		kept++
	}
	return metaPrefix + base64.RawURLEncoding.EncodeToString(buf), kept
}

// decodeMeta parses metadata committed at watermark w. It rejects anything malformed, since the
// string comes from the broker and may have been written by another tool.
func decodeMeta(w int64, s string) (commitMeta, error) {
	rest, ok := strings.CutPrefix(s, metaPrefix)
	if !ok {
		return commitMeta{}, fmt.Errorf("%w: unknown version", errBadMeta)
	}
	raw, err := base64.RawURLEncoding.DecodeString(rest)
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
	if w > math.MaxInt64/2 || w < 0 {
		return commitMeta{}, fmt.Errorf("%w: watermark %d out of range", errBadMeta, w)
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
		if gap < 1 || n < 1 {
			return commitMeta{}, fmt.Errorf("%w: empty or adjacent range", errBadMeta)
		}
		start := prev + gap
		end := start + n
		if start < prev || end < start || end > math.MaxInt64/2 {
			return commitMeta{}, fmt.Errorf("%w: offset overflow", errBadMeta)
		}
		m.done = append(m.done, span{start, end})
		prev = end
	}
	return m, nil
}
