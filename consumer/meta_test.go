package consumer

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// encodeMetaV1 is the v1 encoder as it shipped (gap-0 bug included), so old strings can be made
// for the compatibility tests.
func encodeMetaV1(w int64, m commitMeta) string {
	buf := binary.AppendUvarint(nil, uint64(max(m.horizon, w)-w))
	prev := w
	for _, r := range m.done {
		buf = binary.AppendUvarint(buf, uint64(r.start-prev))
		buf = binary.AppendUvarint(buf, uint64(r.end-r.start))
		prev = r.end
	}
	return metaPrefixV1 + base64.RawURLEncoding.EncodeToString(buf)
}

// v2String wraps raw bytes (watermark onwards) as a v2 string with a valid checksum, for
// decoder tests that need a well-formed envelope around a malformed body.
func v2String(raw []byte) string {
	raw = binary.LittleEndian.AppendUint32(slices.Clone(raw), metaCRC(raw))
	return metaPrefixV2 + base64.RawURLEncoding.EncodeToString(raw)
}

// kindOf reports the body kind of a v2 string.
func kindOf(t testing.TB, s string) int {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(s, metaPrefixV2))
	if err != nil {
		t.Fatal(err)
	}
	_, n1 := binary.Uvarint(raw)
	_, n2 := binary.Uvarint(raw[n1:])
	return int(raw[n1+n2])
}

// holes builds n completed ranges above w in a repeating pattern: hole offsets not done (the
// first at w itself), then done offsets, and so on.
func holes(w int64, n int, hole, done func(i int) int64) []span {
	out := make([]span, 0, n)
	at := w
	for i := 0; i < n; i++ {
		at += hole(i)
		d := done(i)
		out = append(out, span{at, at + d})
		at += d
	}
	return out
}

func constant(v int64) func(int) int64 { return func(int) int64 { return v } }

func TestMetaRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	random := func(n int, maxHole, maxDone int64) []span {
		return holes(1000, n, func(int) int64 { return 1 + rng.Int64N(maxHole) }, func(int) int64 { return 1 + rng.Int64N(maxDone) })
	}
	tests := []struct {
		name string
		w    int64
		m    commitMeta
		kind int
	}{
		{"empty", 0, commitMeta{horizon: 0}, metaKindNone},
		{"horizon only", 100, commitMeta{horizon: 612}, metaKindNone},
		{"one range", 100, commitMeta{horizon: 700, done: []span{{101, 150}}}, metaKindRuns},
		{"far ranges", 5, commitMeta{horizon: 1 << 40, done: []span{{7, 8}, {9, 20}, {1000, 1001}, {1 << 39, 1<<39 + 5}}}, metaKindRuns},
		{"done beyond horizon", 10, commitMeta{horizon: 11, done: []span{{12, 14}}}, metaKindBitmap},
		{"dense", 1000, commitMeta{horizon: 5000, done: random(500, 3, 3)}, metaKindBitmap},
		{"sparse", 1000, commitMeta{horizon: 5000, done: random(500, 2, 5000)}, metaKindRuns},
		{"large offsets", 1 << 50, commitMeta{horizon: 1<<50 + 9, done: []span{{1<<50 + 3, 1<<50 + 4}}}, metaKindBitmap},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "dense" || tt.name == "sparse" {
				tt.w = 1000
			}
			enc := encodeMeta(tt.w, tt.m, 4096)
			if enc.dropped != 0 || enc.w != tt.w || len(enc.s) > 4096 {
				t.Fatalf("dropped %d, watermark %d, %d bytes", enc.dropped, enc.w, len(enc.s))
			}
			if k := kindOf(t, enc.s); k != tt.kind {
				t.Errorf("kind %d, want %d", k, tt.kind)
			}
			if n := metaLen(tt.w, tt.m); n != len(enc.s) {
				t.Errorf("metaLen %d, encoded %d", n, len(enc.s))
			}
			got, err := decodeMeta(tt.w, enc.s)
			if err != nil {
				t.Fatalf("decode %q: %v", enc.s, err)
			}
			if got.horizon != tt.m.horizon || !slices.Equal(got.done, tt.m.done) {
				t.Fatalf("round trip: got %+v, want %+v", got, tt.m)
			}
			if err := checkMeta(tt.w, tt.m, enc, 4096); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestMetaRangeAtWatermark (issue 14, hole 2): a completed range starting at the watermark is
// folded into it, so nothing with an empty gap is ever written.
func TestMetaRangeAtWatermark(t *testing.T) {
	enc := encodeMeta(150, commitMeta{horizon: 200, done: []span{{150, 200}}}, 4096)
	if enc.w != 200 || enc.h != 200 || len(enc.done) != 0 {
		t.Fatalf("encoded watermark %d horizon %d ranges %v, want 200, 200, none", enc.w, enc.h, enc.done)
	}
	m, err := decodeMeta(200, enc.s)
	if err != nil || m.horizon != 200 || len(m.done) != 0 {
		t.Fatalf("decoded %+v, %v", m, err)
	}
	// A range at the watermark followed by others: the watermark moves to the first one's end.
	enc = encodeMeta(10, commitMeta{horizon: 100, done: []span{{10, 20}, {22, 30}, {30, 31}}}, 4096)
	m, err = decodeMeta(enc.w, enc.s)
	if err != nil || enc.w != 20 || !slices.Equal(m.done, []span{{22, 31}}) || m.horizon != 100 {
		t.Fatalf("watermark %d, decoded %+v, %v", enc.w, m, err)
	}
	// The broken v1 encoder's output for it is caught by the round-trip check before a commit.
	v1 := func(w int64, m commitMeta, _ int) metaEnc {
		return metaEnc{w: w, h: m.horizon, done: m.done, s: encodeMetaV1(w, m)}
	}
	if err := checkMeta(150, commitMeta{horizon: 200, done: []span{{150, 200}}},
		v1(150, commitMeta{horizon: 200, done: []span{{150, 200}}}, 0), 4096); err == nil {
		t.Fatal("the v1 encoder's gap-0 range passed the round-trip check")
	}
}

// TestMetaV1GapZero (issue 14, hole 2): "v1:MgAy" is what the v1 encoder wrote for watermark
// 150 with offsets [150,200) done. Its meaning is plain, and deployments may hold it: it decodes.
func TestMetaV1GapZero(t *testing.T) {
	if s := encodeMetaV1(150, commitMeta{horizon: 200, done: []span{{150, 200}}}); s != "v1:MgAy" {
		t.Fatalf("v1 encoder wrote %q", s)
	}
	m, err := decodeMeta(150, "v1:MgAy")
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if m.horizon != 200 || len(m.done) != 1 || m.done[0] != (span{150, 200}) {
		t.Fatalf("decoded %+v, want horizon 200 and [150,200) done", m)
	}
}

// TestMetaV1Compat: strings the v1 encoder wrote still decode to what they meant.
func TestMetaV1Compat(t *testing.T) {
	golden := []struct {
		w    int64
		s    string
		want commitMeta
	}{
		{1, "v1:AwEC", commitMeta{horizon: 4, done: []span{{2, 4}}}},
		{150, "v1:MgAy", commitMeta{horizon: 200, done: []span{{150, 200}}}},
		{100, "v1:ZAEC", commitMeta{horizon: 200, done: []span{{101, 103}}}},
		{7, "v1:AA", commitMeta{horizon: 7}},
	}
	for _, g := range golden {
		m, err := decodeMeta(g.w, g.s)
		if err != nil || m.horizon != g.want.horizon || !slices.Equal(m.done, g.want.done) {
			t.Errorf("decodeMeta(%d, %q) = %+v, %v; want %+v", g.w, g.s, m, err, g.want)
		}
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 2000; i++ {
		w := rng.Int64N(1 << 40)
		done := holes(w, rng.IntN(50), func(int) int64 { return rng.Int64N(1 << rng.IntN(20)) }, func(int) int64 { return 1 + rng.Int64N(1<<rng.IntN(20)) })
		m := commitMeta{horizon: w + rng.Int64N(1<<30), done: done}
		got, err := decodeMeta(w, encodeMetaV1(w, m))
		if err != nil || got.horizon != m.horizon || !slices.Equal(got.done, mergeSpans(done)) {
			t.Fatalf("v1 %+v at %d decoded %+v, %v", m, w, got, err)
		}
	}
}

func TestMetaTruncatesToLimit(t *testing.T) {
	done := holes(0, 20000, constant(1000), constant(3))
	for _, limit := range []int{64, 100, 3000, 4096} {
		enc := encodeMeta(0, commitMeta{horizon: 60_000_000, done: done}, limit)
		if len(enc.s) > limit {
			t.Fatalf("limit %d: encoded %d bytes", limit, len(enc.s))
		}
		kept := len(done) - enc.dropped
		if kept >= len(done) || limit > 64 && kept == 0 {
			t.Fatalf("limit %d: kept %d ranges", limit, kept)
		}
		got, err := decodeMeta(0, enc.s)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got.done, done[:kept]) || got.horizon != 60_000_000 {
			t.Fatalf("limit %d: truncated metadata must keep a prefix of the ranges and the horizon", limit)
		}
		// One more range would not have fitted.
		if n := metaLen(0, commitMeta{horizon: 60_000_000, done: done[:kept+1]}); n <= limit {
			t.Errorf("limit %d: kept %d ranges, but %d fit in %d bytes", limit, kept, kept+1, n)
		}
	}
}

// TestMetaWatermarkMismatch (issue 14, hole 5): metadata read beside another offset than the one
// it was written for is refused with a typed error, never shifted onto other records.
func TestMetaWatermarkMismatch(t *testing.T) {
	enc := encodeMeta(100, commitMeta{horizon: 300, done: []span{{102, 110}, {120, 121}}}, 4096)
	if _, err := decodeMeta(100, enc.s); err != nil {
		t.Fatal(err)
	}
	for _, w := range []int64{0, 99, 101, 102, 1 << 40} {
		_, err := decodeMeta(w, enc.s)
		if !errors.Is(err, errMetaWatermarkMismatch) || !errors.Is(err, errBadMeta) {
			t.Errorf("decode at %d: %v, want errMetaWatermarkMismatch", w, err)
		}
	}
	// Corruption is not reported as a moved offset.
	raw, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(enc.s, metaPrefixV2))
	raw[0] ^= 1
	bad := metaPrefixV2 + base64.RawURLEncoding.EncodeToString(raw)
	if _, err := decodeMeta(100, bad); !errors.Is(err, errBadMeta) || errors.Is(err, errMetaWatermarkMismatch) {
		t.Errorf("corrupt: %v", err)
	}
}

func TestMetaRejectsMalformed(t *testing.T) {
	hdr := func(w, dh uint64, kind byte) []byte {
		b := binary.AppendUvarint(nil, w)
		return append(binary.AppendUvarint(b, dh), kind)
	}
	good := encodeMeta(10, commitMeta{horizon: 20, done: []span{{12, 14}, {100, 101}}}, 4096).s
	tests := []struct{ name, s string }{
		{"empty", ""},
		{"foreign", "hello"},
		{"v1 bad base64", "v1:!!!"},
		{"v1 oversized varint", "v1:gICAgICAgICAgAE"},
		{"v1 empty range", "v1:AAEA"},
		{"v1 truncated", "v1:AAE"},
		{"v2 bad base64", "v2:!!"},
		{"v2 too short", "v2:AAA"},
		{"v2 checksum", good[:len(good)-1] + string("ABC"[strings.IndexByte("ABC", good[len(good)-1])%2+1])},
		{"v2 unknown kind", v2String(hdr(10, 0, 9))},
		{"v2 truncated header", v2String([]byte{10, 0})},
		{"v2 oversized watermark varint", v2String([]byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0, 0})},
		{"v2 horizon overflow", v2String(hdr(10, math.MaxInt64, 0))},
		{"v2 none with trailing", v2String(append(hdr(10, 0, 0), 1))},
		{"v2 runs zero count", v2String(append(hdr(10, 0, 1), 0, 0, 0))},
		{"v2 runs order too big", v2String(append(hdr(10, 0, 1), 1, 63, 0, 0xff))},
		{"v2 runs more than the bits", v2String(append(hdr(10, 0, 1), 100, 0, 0, 0xff))},
		{"v2 runs truncated stream", v2String(append(hdr(10, 0, 1), 2, 0, 0, 0x00))},
		{"v2 runs trailing byte", v2String(append(hdr(10, 0, 1), 1, 0, 0, 0xc0, 0x00))},
		{"v2 runs non-zero padding", v2String(append(hdr(10, 0, 1), 1, 0, 0, 0xc1))},
		{"v2 runs value overflow", v2String(append(hdr(10, 0, 1), 1, 62, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x80))},
		{"v2 bitmap zero bits", v2String(append(hdr(10, 0, 2), 0))},
		{"v2 bitmap short", v2String(append(hdr(10, 0, 2), 9, 0xff))},
		{"v2 bitmap long", v2String(append(hdr(10, 0, 2), 8, 0xff, 0))},
		{"v2 bitmap ends not done", v2String(append(hdr(10, 0, 2), 8, 0x01))},
		{"v2 bitmap non-zero padding", v2String(append(hdr(10, 0, 2), 3, 0x0c))},
		{"v2 bitmap overflow", v2String(append(hdr(maxMetaOffset-2, 0, 2), 8, 0x80))},
		{"too long", "v2:" + strings.Repeat("A", maxMetaLen)},
	}
	for _, tt := range tests {
		w := int64(10)
		if strings.Contains(tt.name, "bitmap overflow") {
			w = maxMetaOffset - 2
		}
		if m, err := decodeMeta(w, tt.s); !errors.Is(err, errBadMeta) || errors.Is(err, errMetaWatermarkMismatch) {
			t.Errorf("%s: decodeMeta(%q) = %+v, %v; want errBadMeta", tt.name, tt.s, m, err)
		}
	}
	for _, w := range []int64{-1, maxMetaOffset + 1} {
		if _, err := decodeMeta(w, good); !errors.Is(err, errBadMeta) {
			t.Errorf("watermark %d accepted", w)
		}
	}
	// The well-formed bodies these were cut from do decode.
	for _, s := range []string{v2String(append(hdr(10, 0, 1), 1, 0, 0, 0xc0)), v2String(append(hdr(10, 0, 2), 3, 0x04)), good} {
		if _, err := decodeMeta(10, s); err != nil {
			t.Errorf("decodeMeta(%q): %v", s, err)
		}
	}
}

// TestVerifiedMeta: the round trip before each commit catches encoders that would write what a
// successor rejects or misreads, and falls back to a commit without completed ranges.
func TestVerifiedMeta(t *testing.T) {
	m := commitMeta{horizon: 500, done: []span{{102, 110}, {120, 121}, {300, 301}}}
	broken := map[string]func(int64, commitMeta, int) metaEnc{
		"shifts ranges": func(w int64, m commitMeta, l int) metaEnc {
			enc := encodeMeta(w, m, l)
			if len(m.done) == 0 {
				return enc
			}
			return encodeMeta(w, commitMeta{horizon: m.horizon, done: []span{{m.done[0].start + 1, m.done[0].end + 1}}}, l)
		},
		"drops a range silently": func(w int64, m commitMeta, l int) metaEnc {
			if len(m.done) == 0 {
				return encodeMeta(w, m, l)
			}
			return encodeMeta(w, commitMeta{horizon: m.horizon, done: m.done[:len(m.done)-1]}, l)
		},
		"lowers the horizon": func(w int64, m commitMeta, l int) metaEnc {
			if len(m.done) == 0 {
				return encodeMeta(w, m, l)
			}
			enc := encodeMeta(w, commitMeta{horizon: m.horizon - 1, done: m.done}, l)
			enc.h = m.horizon
			return enc
		},
		"too long": func(w int64, m commitMeta, l int) metaEnc {
			enc := encodeMeta(w, m, 1<<20)
			if len(m.done) > 0 {
				enc.s += strings.Repeat("A", l)
			}
			return enc
		},
		"advances over undone offsets": func(w int64, m commitMeta, l int) metaEnc {
			if len(m.done) == 0 {
				return encodeMeta(w, m, l)
			}
			return encodeMeta(w, commitMeta{horizon: m.horizon, done: append([]span{{w, m.done[0].start}}, m.done...)}, l)
		},
		"v1 gap zero": func(w int64, m commitMeta, l int) metaEnc {
			if len(m.done) == 0 {
				return encodeMeta(w, m, l)
			}
			return metaEnc{w: w, h: m.horizon, done: []span{{w, m.done[0].end}}, s: encodeMetaV1(w, commitMeta{horizon: m.horizon, done: []span{{w, m.done[0].end}}})}
		},
	}
	for name, enc := range broken {
		got, ok, err := verifiedMeta(enc, 100, m, 4096)
		if err == nil || !ok {
			t.Errorf("%s: not caught (ok %v, err %v)", name, ok, err)
			continue
		}
		d, derr := decodeMeta(got.w, got.s)
		if derr != nil || got.w != 100 || d.horizon != 500 || len(d.done) != 0 {
			t.Errorf("%s: fallback %+v decodes to %+v, %v; want watermark and horizon only", name, got, d, derr)
		}
	}
	// An encoder that never round-trips: the partition is left out of the commit.
	garbage := func(w int64, m commitMeta, l int) metaEnc { return metaEnc{w: w, h: m.horizon, s: "v2:garbage"} }
	if _, ok, err := verifiedMeta(garbage, 100, m, 4096); ok || err == nil {
		t.Errorf("garbage encoder: ok %v, err %v", ok, err)
	}
	// The real encoder passes, also when it truncates.
	if _, ok, err := verifiedMeta(encodeMeta, 100, m, 4096); !ok || err != nil {
		t.Errorf("encodeMeta: ok %v, err %v", ok, err)
	}
	many := commitMeta{horizon: 1 << 30, done: holes(0, 5000, constant(10000), constant(1))}
	if enc, ok, err := verifiedMeta(encodeMeta, 0, many, 200); !ok || err != nil || enc.dropped == 0 {
		t.Errorf("encodeMeta truncating: ok %v, err %v, dropped %d", ok, err, enc.dropped)
	}
}

func FuzzDecodeMeta(f *testing.F) {
	f.Add(int64(100), encodeMeta(100, commitMeta{horizon: 900, done: []span{{101, 150}, {200, 201}}}, 4096).s)
	f.Add(int64(100), encodeMeta(100, commitMeta{horizon: 900, done: holes(100, 30, constant(1), constant(2))}, 4096).s)
	f.Add(int64(100), encodeMeta(100, commitMeta{horizon: 900, done: []span{{101, 150}, {20000, 20001}}}, 4096).s)
	f.Add(int64(150), "v1:MgAy")
	f.Add(int64(100), encodeMeta(100, commitMeta{horizon: 900, done: []span{{101, 150}}, handover: &handover{until: 1_790_000_000_123}}, 4096).s)
	f.Add(int64(100), encodeMeta(100, commitMeta{horizon: 100, handover: &handover{}}, 4096).s)
	f.Add(int64(0), "v1:")
	f.Add(int64(-1), "v1:AAAA")
	f.Add(int64(100), encodeMeta(100, commitMeta{horizon: 900, done: []span{{120, 150}}, handover: &handover{},
		sentKnown: true, sent: []span{{100, 101}, {160, 170}}}, 4096).s)
	f.Add(int64(100), encodeMeta(100, commitMeta{horizon: 900, handover: &handover{until: 7}, sentKnown: true,
		sent: holes(100, 40, constant(1), constant(1))}, 4096).s)
	f.Add(int64(0), encodeMeta(0, commitMeta{horizon: 9, handover: &handover{}, sentKnown: true}, 4096).s)
	f.Fuzz(func(t *testing.T, w int64, s string) {
		m, err := decodeMeta(w, s)
		if err != nil {
			if !errors.Is(err, errBadMeta) {
				t.Fatalf("error %v does not wrap errBadMeta", err)
			}
			return
		}
		prev := w - 1 // v1 may hold a range at the watermark itself
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
		enc := encodeMeta(w, m, 1<<20)
		if err := checkMeta(w, m, enc, 1<<20); err != nil {
			t.Fatal(err)
		}
		nw, want := normalizeMeta(w, m.done)
		m2, err := decodeMeta(enc.w, enc.s)
		if err != nil || enc.w != nw || m2.horizon != max(m.horizon, nw) || !slices.Equal(m2.done, want) {
			t.Fatalf("re-encode mismatch: %+v at %d vs %+v at %d: %v", m, w, m2, enc.w, err)
		}
		if (m.handover == nil) != (m2.handover == nil) || m.handover != nil && *m.handover != *m2.handover {
			t.Fatalf("hand-over statement %+v re-encoded as %+v", m.handover, m2.handover)
		}
		if m.sentKnown {
			// A sent list: v4 only, with a statement, inside [w, horizon), clear of done offsets.
			if m.handover == nil || !strings.HasPrefix(s, metaPrefixV4) {
				t.Fatalf("sent list decoded from %q without a statement", s)
			}
			prev := w - 1
			for _, r := range m.sent {
				if r.start <= prev || r.end <= r.start || r.end > m.horizon {
					t.Fatalf("sent list not increasing, disjoint and below the horizon: %+v (w=%d, h=%d)", m.sent, w, m.horizon)
				}
				prev = r.end
			}
			if !slices.Equal(subtractSpans(m.sent, m.done), m.sent) {
				t.Fatalf("sent list %+v overlaps done %+v", m.sent, m.done)
			}
			if !m2.sentKnown || !slices.Equal(m2.sent, clipSpans(m.sent, nw, m2.horizon)) {
				t.Fatalf("sent list %+v re-encoded as %v %+v", m.sent, m2.sentKnown, m2.sent)
			}
		}
	})
}

// FuzzMetaRoundTrip: random sets encode, within any limit, to a string that decodes to a prefix
// of them, and the round-trip check agrees.
func FuzzMetaRoundTrip(f *testing.F) {
	f.Add(uint64(1), uint64(2), int64(100), uint16(4096), uint16(50), uint8(10))
	f.Add(uint64(7), uint64(8), int64(0), uint16(64), uint16(3000), uint8(30))
	f.Add(uint64(9), uint64(1), int64(1<<50), uint16(300), uint16(1), uint8(2))
	f.Fuzz(func(t *testing.T, s1, s2 uint64, w int64, limit, n uint16, scale uint8) {
		if w < 0 || w > 1<<60 {
			return
		}
		rng := rand.New(rand.NewPCG(s1, s2))
		sc := int(scale%40) + 1
		done := holes(w, int(n%5000), func(int) int64 { return rng.Int64N(1 << rng.IntN(sc)) }, func(int) int64 { return 1 + rng.Int64N(1<<rng.IntN(sc)) })
		m := commitMeta{horizon: w + rng.Int64N(1<<30), done: done}
		if scale%3 > 0 {
			m.handover = &handover{until: rng.Int64N(1 << (20 * int64(scale%3)))}
		}
		if scale%2 > 0 {
			// The final commit's list of offsets that may have been sent: some of the holes.
			m.sentKnown = true
			hi := m.horizon
			if len(done) > 0 {
				hi = min(hi, done[len(done)-1].end+rng.Int64N(100))
			}
			for _, r := range subtractSpans([]span{{w, max(hi, w)}}, done) {
				if rng.IntN(3) == 0 {
					m.sent = append(m.sent, span{r.start, r.start + 1 + rng.Int64N(r.end-r.start)})
				}
			}
		}
		l := int(limit%4096) + 64
		enc := encodeMeta(w, m, l)
		// The statement never costs a range: it is left out (a full hold) when it would.
		if plain := encodeMeta(w, commitMeta{horizon: m.horizon, done: done}, l); plain.dropped != enc.dropped {
			t.Fatalf("with the hand-over statement %d ranges dropped, without %d", enc.dropped, plain.dropped)
		}
		if len(enc.s) > l {
			t.Fatalf("%d bytes, limit %d", len(enc.s), l)
		}
		if err := checkMeta(w, m, enc, l); err != nil {
			t.Fatal(err)
		}
		got, err := decodeMeta(enc.w, enc.s)
		nw, want := normalizeMeta(w, done)
		if err != nil || enc.w != nw || !slices.Equal(got.done, want[:len(want)-enc.dropped]) {
			t.Fatalf("decoded %+v at %d, %v", got, enc.w, err)
		}
		if (got.handover == nil) != (enc.handover == nil) || got.handover != nil && *got.handover != *m.handover {
			t.Fatalf("hand-over statement %+v decoded as %+v (reported %+v)", m.handover, got.handover, enc.handover)
		}
		if enc.sentKnown {
			// Never cut: a list goes with every completed range, and holds every sent offset.
			if enc.dropped != 0 || !got.sentKnown || !slices.Equal(got.sent, clipSpans(m.sent, nw, got.horizon)) {
				t.Fatalf("sent list %+v written as %+v with %d ranges dropped", m.sent, got.sent, enc.dropped)
			}
		} else if got.sentKnown {
			t.Fatalf("sent list decoded, not reported")
		}
		if enc.dropped == 0 && enc.handover == nil && metaLen(w, m) != len(enc.s) {
			t.Fatalf("metaLen %d, encoded %d", metaLen(w, m), len(enc.s))
		}
	})
}

// metaScenario is one shape of completed set for the budget test and the benchmarks.
type metaScenario struct {
	name       string
	hole, done func(rng *rand.Rand) int64
}

var metaScenarios = []metaScenario{
	// A hot stuck account: every other record is its (one-offset holes, one-offset done runs).
	{"hot stuck account 1 in 2", func(*rand.Rand) int64 { return 1 }, func(*rand.Rand) int64 { return 1 }},
	// One stuck account among ten busy ones.
	{"stuck account 1 in 10", func(*rand.Rand) int64 { return 1 }, func(r *rand.Rand) int64 { return 1 + r.Int64N(17) }},
	// One stuck account among a thousand.
	{"stuck account 1 in 1000", func(*rand.Rand) int64 { return 1 }, func(r *rand.Rand) int64 { return 1 + r.Int64N(1999) }},
	// Many stuck accounts, holes and runs of any size up to 2^16: the encoder can't pick a good order.
	{"worst: log-uniform up to 2^16", func(r *rand.Rand) int64 { return 1 + r.Int64N(1<<r.IntN(16)) }, func(r *rand.Rand) int64 { return 1 + r.Int64N(1<<r.IntN(16)) }},
}

func (sc metaScenario) set(seed uint64, w int64, n int) []span {
	rng := rand.New(rand.NewPCG(seed, 99))
	return holes(w, n, func(int) int64 { return sc.hole(rng) }, func(int) int64 { return sc.done(rng) })
}

// metaGapsFit is the most gaps (incomplete runs above the watermark) of sc whose metadata fits in
// maxBytes, at watermark w with a horizon 10 000 above the last range.
func metaGapsFit(sc metaScenario, seed uint64, w int64, maxBytes int) int {
	all := sc.set(seed, w, 200_000)
	fits := func(n int) bool {
		return metaLen(w, commitMeta{horizon: all[n-1].end + 10_000, done: all[:n]}) <= maxBytes
	}
	lo, hi := 1, len(all)
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if fits(mid) {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

// TestMetaBudget: how many incomplete runs fit in Kafka's default offset.metadata.max.bytes (4096)
// for the shapes above; each count's encoding fits, decodes and round-trips, one more does not fit.
func TestMetaBudget(t *testing.T) {
	const w = 12_345_678_901
	min := map[string]int{"hot stuck account 1 in 2": 10000, "stuck account 1 in 10": 4000,
		"stuck account 1 in 1000": 1500, "worst: log-uniform up to 2^16": 800}
	for _, sc := range metaScenarios {
		n := metaGapsFit(sc, 1, w, 4096)
		all := sc.set(1, w, n+1)
		m := commitMeta{horizon: all[n-1].end + 10_000, done: all[:n]}
		enc, ok, err := verifiedMeta(encodeMeta, w, m, 4096)
		if !ok || err != nil || enc.dropped != 0 || len(enc.s) > 4096 {
			t.Fatalf("%s: %d gaps: ok %v, %v, dropped %d, %d bytes", sc.name, n, ok, err, enc.dropped, len(enc.s))
		}
		if l := metaLen(w, commitMeta{horizon: all[n].end + 10_000, done: all}); l <= 4096 {
			t.Fatalf("%s: %d gaps fit, but so do %d (%d bytes)", sc.name, n, n+1, l)
		}
		incomplete := all[0].start - w
		for i := 1; i < n; i++ {
			incomplete += all[i].start - all[i-1].end
		}
		t.Logf("%-32s %5d gaps (%d incomplete offsets over %d) in %d bytes, kind %d",
			sc.name, n, incomplete, all[n-1].end-w, len(enc.s), kindOf(t, enc.s))
		if n < min[sc.name] {
			t.Errorf("%s: only %d gaps fit in 4096 bytes, want at least %d", sc.name, n, min[sc.name])
		}
	}
}

// TestMetaPressured checks the back-pressure bound against the real encoding: whenever it says a
// partition is not pressured with room for k more out-of-order ends, ending any k more records
// still leaves metadata within the limit. Random fetch gaps and completion orders.
func TestMetaPressured(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	checks, near, measures, pressured := 0, 0, 0, 0
	for round := 0; round < 60; round++ {
		limit := 64 + rng.IntN(400)
		p := &part{tr: newTracker(int64(rng.IntN(1 << 20)))}
		var idxs []uint64
		var offs []int64
		off := p.tr.next
		// worst is the unended record whose end adds the most: the middle of the longest run
		// of unended records, which it splits.
		worst := func() int {
			best, bestLen, runStart := 0, 0, 0
			for i := range offs {
				if i > 0 && offs[i] != offs[i-1]+1 {
					runStart = i
				}
				if l := i - runStart + 1; l > bestLen {
					best, bestLen = (runStart+i)/2, l
				}
			}
			return best
		}
		for step := 0; step < 3000; step++ {
			if rng.IntN(4) != 0 {
				off += 1 + int64(rng.IntN(20)/19*rng.IntN(300)) // now and then skip offsets
				idxs = append(idxs, p.tr.add(off, 0, nil))
				offs = append(offs, off)
				continue
			}
			// Under pressure records still end (as the account at the watermark does in the
			// engine), at random and unchecked; when not, the ones whose ends add the most.
			extra := 1 + rng.IntN(4)
			free := !p.metaPressured(extra, limit)
			if !free {
				// A cached "pressured" must be what a fresh measurement says too, or a partition
				// could stay held back for nothing.
				if fresh := (&part{tr: p.tr, done: p.done}).metaPressured(extra, limit); !fresh {
					t.Fatalf("round %d step %d: pressured from the cache, not when measured afresh", round, step)
				}
				pressured++
			}
			for range extra {
				if len(idxs) == 0 {
					break
				}
				i := rng.IntN(len(idxs))
				if free {
					i = worst()
				}
				p.tr.end(idxs[i])
				idxs = slices.Delete(idxs, i, i+1)
				offs = slices.Delete(offs, i, i+1)
			}
			if !free {
				continue
			}
			checks++
			h := int64(1<<62 - 1) // a commit may extend the horizon: the longest varint
			n := metaLen(p.tr.watermark(), commitMeta{horizon: h, done: p.doneAbove()})
			if n > limit {
				t.Fatalf("round %d step %d: not pressured with %d to spare, then %d bytes, limit %d", round, step, extra, n, limit)
			}
			if n > limit*9/10 {
				near++
			}
		}
		measures += p.mb.measures
	}
	t.Logf("%d checks (%d within a tenth of the limit), %d pressured, %d exact measurements", checks, near, pressured, measures)
	if checks < 1000 || near < 100 || pressured < 1000 {
		t.Fatalf("only %d checks ran, %d near the limit", checks, near)
	}
}

// TestMetaPressuredHonoursInherited: completed ranges inherited from the metadata, beyond the
// fetch position, count toward the size.
func TestMetaPressuredHonoursInherited(t *testing.T) {
	p := &part{tr: newTracker(100), done: holes(100, 3000, constant(1000), constant(1))}
	if !p.metaPressured(1, 4096) {
		t.Fatalf("3000 far-apart inherited ranges (%d bytes) not pressured", metaLen(100, commitMeta{done: p.done}))
	}
	p = &part{tr: newTracker(100), done: holes(100, 100, constant(1000), constant(1))}
	if p.metaPressured(1, 4096) {
		t.Fatal("100 inherited ranges pressured")
	}
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

// BenchmarkMeta reports, per shape, how many gaps fit in 4096 bytes and what encoding (with the
// round-trip check a commit makes) and decoding that full metadata cost; cpu-ns/op is the
// process's CPU time per operation, steadier than ns/op on a shared machine.
//
//	go test -run '^$' -bench Meta ./consumer/
func BenchmarkMeta(b *testing.B) {
	const w = 12_345_678_901
	for _, sc := range metaScenarios {
		n := metaGapsFit(sc, 1, w, 4096)
		m := commitMeta{horizon: w + 1<<30, done: sc.set(1, w, n)}
		s := encodeMeta(w, m, 4096).s
		name := strings.ReplaceAll(sc.name, " ", "_")
		b.Run("encode/"+name, func(b *testing.B) {
			cpu := cpuTime()
			for b.Loop() {
				if _, ok, err := verifiedMeta(encodeMeta, w, m, 4096); !ok || err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(n), "gaps/4096B")
		})
		b.Run("decode/"+name, func(b *testing.B) {
			cpu := cpuTime()
			for b.Loop() {
				if _, err := decodeMeta(w, s); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(n), "gaps/4096B")
		})
	}
}

// BenchmarkMetaPressured is the per-record back-pressure check on a partition whose metadata is
// near its limit (bitmap too big), 8 000 tracked records (the fetch bound with the defaults):
// "steady" with nothing changed since the last measurement, "after_a_fetch" with a record fetched
// before every check (the set only grew: answered from the last measurement), "after_an_end"
// with a record fetched and ended before every check (measured again: O(tracked records)).
func BenchmarkMetaPressured(b *testing.B) {
	setup := func() (*part, []uint64) {
		p := &part{tr: newTracker(0)}
		var idxs []uint64
		for i := int64(0); i < 8000; i++ {
			idxs = append(idxs, p.tr.add(i*7, 0, nil)) // skipped offsets: a range per record
		}
		for i := 1; i < len(idxs); i += 2 {
			p.tr.end(idxs[i])
		}
		return p, idxs
	}
	report := func(b *testing.B, p *part, cpu time.Duration) {
		b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
		b.ReportMetric(float64(p.mb.measures)/float64(b.N), "measurements/op")
	}
	b.Run("steady", func(b *testing.B) {
		p, _ := setup()
		cpu := cpuTime()
		for b.Loop() {
			if !p.metaPressured(1, 1024) {
				b.Fatal("not pressured")
			}
		}
		report(b, p, cpu)
	})
	b.Run("after_a_fetch", func(b *testing.B) {
		p, _ := setup()
		off := p.tr.next
		cpu := cpuTime()
		for b.Loop() {
			off += 7
			p.tr.add(off, 0, nil)
			if !p.metaPressured(1, 1024) {
				b.Fatal("not pressured")
			}
		}
		report(b, p, cpu)
	})
	b.Run("after_an_end", func(b *testing.B) {
		p, _ := setup()
		off := p.tr.next
		cpu := cpuTime()
		for b.Loop() {
			off += 7
			p.tr.end(p.tr.add(off, 0, nil)) // a record fetched and ended: the set stays as large
			if !p.metaPressured(1, 1024) {
				b.Fatal("not pressured")
			}
		}
		report(b, p, cpu)
	})
}

// TestMetaEncodeFarRangeAllocates: a completed range far above the watermark is written as runs;
// the encoder must not size its buffer by the bitmap it did not choose (found by
// FuzzMetaRoundTrip: gigabytes for a range 2^34 offsets away).
func TestMetaEncodeFarRangeAllocates(t *testing.T) {
	m := commitMeta{horizon: 1 << 40, done: []span{{1 << 34, 1<<34 + 1}}}
	allocs := testing.AllocsPerRun(5, func() { encodeMeta(0, m, 4096) })
	var ms1, ms2 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	enc := encodeMeta(0, m, 4096)
	runtime.ReadMemStats(&ms2)
	if grew := ms2.TotalAlloc - ms1.TotalAlloc; grew > 1<<16 {
		t.Fatalf("encoding one far range allocated %d bytes (%v allocs)", grew, allocs)
	}
	if got, err := decodeMeta(0, enc.s); err != nil || !slices.Equal(got.done, m.done) {
		t.Fatalf("decoded %+v, %v", got, err)
	}
}

func TestNormalizeMeta(t *testing.T) {
	tests := []struct {
		name  string
		w     int64
		in    []span
		wantW int64
		want  []span
	}{
		{"none", 5, nil, 5, []span{}},
		{"above", 5, []span{{7, 9}}, 5, []span{{7, 9}}},
		{"at the watermark", 5, []span{{5, 9}, {11, 12}}, 9, []span{{11, 12}}},
		{"straddling it", 5, []span{{3, 9}}, 9, []span{}},
		{"below it", 5, []span{{1, 3}, {7, 8}}, 5, []span{{7, 8}}},
		{"touching", 5, []span{{7, 9}, {9, 12}, {12, 13}}, 5, []span{{7, 13}}},
		{"overlapping", 5, []span{{7, 10}, {8, 9}, {9, 12}}, 5, []span{{7, 12}}},
		{"empty ones", 5, []span{{7, 7}, {9, 8}, {10, 11}}, 5, []span{{10, 11}}},
		{"unsorted", 5, []span{{20, 21}, {7, 9}, {5, 6}, {9, 10}}, 6, []span{{7, 10}, {20, 21}}},
	}
	for _, tt := range tests {
		in := slices.Clone(tt.in)
		w, got := normalizeMeta(tt.w, tt.in)
		if w != tt.wantW || !slices.Equal(got, tt.want) {
			t.Errorf("%s: normalizeMeta(%d, %v) = %d, %v; want %d, %v", tt.name, tt.w, tt.in, w, got, tt.wantW, tt.want)
		}
		if !slices.Equal(in, tt.in) {
			t.Errorf("%s: input modified", tt.name)
		}
	}
}
