package consumer

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/internal/testwait"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// TestMetaV4SentList: a commit's list of offsets that may have been sent round-trips, in v4
// with a final commit's hand-over statement and in v5 without one (a periodic commit), in both
// list encodings, a list starting at the watermark, an empty list; clipped to [watermark,
// horizon) and without completed offsets; and everything else reads as before.
func TestMetaV4SentList(t *testing.T) {
	done := []span{{101, 150}, {200, 201}}
	for _, ho := range []*handover{{until: 1_790_000_000_123}, nil} {
		prefix := metaPrefixV4
		if ho == nil {
			prefix = metaPrefixV5
		}
		for _, tc := range []struct {
			name string
			w    int64
			sent []span
			want []span
		}{
			{"empty: nothing below the horizon was sent", 100, nil, nil},
			{"one abandoned call", 100, []span{{160, 161}}, []span{{160, 161}}},
			{"at the watermark", 100, []span{{100, 101}, {150, 152}}, []span{{100, 101}, {150, 152}}},
			{"dense (bitmap)", 100, holes(100, 300, constant(1), constant(1))[:150], nil},
			{"completed and out-of-range offsets taken out", 100, []span{{50, 105}, {140, 160}, {890, 1000}},
				[]span{{100, 101}, {150, 160}, {890, 900}}},
			{"watermark at 0", 0, []span{{0, 3}}, []span{{0, 3}}},
		} {
			t.Run(prefix+tc.name, func(t *testing.T) {
				d := done
				if tc.w == 0 {
					d = []span{{10, 11}}
				}
				want := tc.want
				if tc.name == "dense (bitmap)" {
					want = subtractSpans(clipSpans(tc.sent, tc.w, 900), d)
				}
				m := commitMeta{horizon: 900, done: d, handover: ho, sentKnown: true, sent: tc.sent}
				enc := encodeMeta(tc.w, m, 4096)
				if !strings.HasPrefix(enc.s, prefix) || !enc.sentKnown || !slices.Equal(enc.sent, want) {
					t.Fatalf("encoded %q reporting %v %v, want %s with %v", enc.s, enc.sentKnown, enc.sent, prefix, want)
				}
				if err := checkMeta(tc.w, m, enc, 4096); err != nil {
					t.Fatal(err)
				}
				got, err := decodeMeta(tc.w, enc.s)
				if err != nil || !got.sentKnown || !slices.Equal(got.sent, want) || (got.handover == nil) != (ho == nil) ||
					ho != nil && *got.handover != *ho || !slices.Equal(got.done, d) || got.horizon != 900 {
					t.Fatalf("decoded %+v, %v", got, err)
				}
				if _, err := decodeMeta(tc.w+1, enc.s); !errors.Is(err, errMetaWatermarkMismatch) {
					t.Errorf("beside another offset: %v", err)
				}
			})
		}
	}
	// v2 and v3 strings say nothing of what was sent: everything below the horizon is uncertain.
	ho := &handover{until: 1_790_000_000_123}
	for _, s := range []string{
		encodeMeta(100, commitMeta{horizon: 900, done: done}, 4096).s,
		encodeMeta(100, commitMeta{horizon: 900, done: done, handover: ho}, 4096).s,
	} {
		if m, err := decodeMeta(100, s); err != nil || m.sentKnown {
			t.Errorf("%q: sent list %v, %v", s, m.sentKnown, err)
		}
	}
}

// TestMetaV4FallsBackWhenOverTheLimit: a list (or a list with the completed ranges) that does not
// fit within the limit is never cut: the commit is v3 (every offset below the horizon that is
// not done stays uncertain), and its completed ranges are those v3 would have kept.
func TestMetaV4FallsBackWhenOverTheLimit(t *testing.T) {
	ho := &handover{}
	done := holes(100, 400, constant(2), constant(1))
	sent := subtractSpans([]span{{100, done[len(done)-1].end}}, done)
	full := encodeMeta(100, commitMeta{horizon: 1 << 20, done: done, handover: ho, sentKnown: true, sent: sent}, 4096)
	for _, limit := range []int{64, 200, len(full.s) - 1} {
		m := commitMeta{horizon: 1 << 20, done: done, handover: ho, sentKnown: true, sent: sent}
		enc := encodeMeta(100, m, limit)
		v3 := encodeMeta(100, commitMeta{horizon: 1 << 20, done: done, handover: ho}, limit)
		if enc.sentKnown || strings.HasPrefix(enc.s, metaPrefixV4) || enc.s != v3.s {
			t.Errorf("limit %d: %q (sent list %v), want the v3 string %q", limit, enc.s, enc.sentKnown, v3.s)
		}
		if len(enc.s) > limit {
			t.Errorf("limit %d: %d bytes", limit, len(enc.s))
		}
		if err := checkMeta(100, m, enc, limit); err != nil {
			t.Errorf("limit %d: %v", limit, err)
		}
		got, err := decodeMeta(enc.w, enc.s)
		if err != nil || got.sentKnown {
			t.Errorf("limit %d: decoded sent list %v, %v", limit, got.sentKnown, err)
		}
	}
	// With room, the same statement is v4 and complete.
	m := commitMeta{horizon: 1 << 20, done: done, handover: ho, sentKnown: true, sent: sent}
	if enc := encodeMeta(100, m, 4096); !enc.sentKnown || enc.dropped != 0 || !slices.Equal(enc.sent, sent) {
		t.Errorf("4096 bytes: sent list %v, %d spans of %d, dropped %d", enc.sentKnown, len(enc.sent), len(sent), enc.dropped)
	}
}

// TestVerifiedMetaRefusesForgedSentList: the round trip before a commit catches an encoder whose
// list leaves out an offset that may have been sent, or writes a list not asked for; the commit
// then goes out without ranges or list (every offset below the horizon uncertain).
func TestVerifiedMetaRefusesForgedSentList(t *testing.T) {
	ho := &handover{until: 5000}
	asked := commitMeta{horizon: 900, done: []span{{120, 130}}, handover: ho, sentKnown: true, sent: []span{{101, 103}, {140, 141}}}
	for _, tc := range []struct {
		name string
		m    commitMeta
		enc  func(int64, commitMeta, int) metaEnc
	}{
		{"a sent offset left out", asked, func(w int64, m commitMeta, n int) metaEnc {
			if len(m.sent) > 1 {
				m.sent = m.sent[:1]
			}
			e := encodeMeta(w, m, n)
			if len(e.sent) > 0 {
				e.sent = asked.sent // reports what was asked, wrote less
			}
			return e
		}},
		{"a completed range dropped under a list", asked, func(w int64, m commitMeta, n int) metaEnc {
			m.done = nil
			e := encodeMeta(w, m, n)
			e.dropped = len(asked.done)
			return e
		}},
		{"a list not asked for", commitMeta{horizon: 900, handover: ho}, func(w int64, m commitMeta, n int) metaEnc {
			m.sentKnown = true
			return encodeMeta(w, m, n)
		}},
		{"written, reported left out", asked, func(w int64, m commitMeta, n int) metaEnc {
			e := encodeMeta(w, m, n)
			e.sentKnown = false
			return e
		}},
	} {
		enc, ok, err := verifiedMeta(tc.enc, 100, tc.m, 4096)
		if err == nil {
			t.Errorf("%s: not caught", tc.name)
			continue
		}
		if !ok {
			continue
		}
		if m, derr := decodeMeta(enc.w, enc.s); derr != nil || m.sentKnown {
			t.Errorf("%s: fallback %q decodes to a sent list %v, %v", tc.name, enc.s, m.sentKnown, derr)
		}
	}
	enc, ok, err := verifiedMeta(encodeMeta, 100, asked, 4096)
	if err != nil || !ok || !enc.sentKnown || !slices.Equal(enc.sent, asked.sent) {
		t.Errorf("honest encoder: %v %v, %v, %v", enc.sentKnown, enc.sent, ok, err)
	}
}

// TestDecodeMetaV4Rejects: v4 strings that are not exactly what the encoder writes are refused
// (errBadMeta: the successor takes everything up to the log end as uncertain).
func TestDecodeMetaV4Rejects(t *testing.T) {
	const w = 100
	// build writes a v4 string from its fields with a valid checksum.
	build := func(h, q uint64, list []byte, tail ...byte) string {
		raw := binary.AppendUvarint(nil, w)
		raw = binary.AppendUvarint(raw, h-w)
		raw = binary.AppendUvarint(raw, q)
		raw = binary.AppendUvarint(raw, uint64(len(list)))
		raw = append(raw, list...)
		raw = append(raw, tail...)
		raw = binary.LittleEndian.AppendUint32(raw, metaCRC(raw))
		return metaPrefixV4 + base64.RawURLEncoding.EncodeToString(raw)
	}
	runs := func(spans ...span) []byte { return appendSpanList(nil, w, spans) }
	doneKind := []byte{metaKindRuns} // completed ranges follow as runs
	doneBody := planRuns(w, []span{{120, 130}}).append(nil, w, []span{{120, 130}})
	ok := build(900, 0, runs(span{101, 103}), append(doneKind, doneBody...)...)
	if m, err := decodeMeta(w, ok); err != nil || !slices.Equal(m.sent, []span{{101, 103}}) {
		t.Fatalf("the well-formed string: %+v, %v", m, err)
	}
	for _, tc := range []struct{ name, s string }{
		{"list past the horizon", build(102, 0, runs(span{101, 103}), metaKindNone)},
		{"list overlapping a completed range", build(900, 0, runs(span{125, 126}), append(doneKind, doneBody...)...)},
		{"list length past the end", build(900, 0, nil, 9)[:0] + func() string {
			raw := binary.AppendUvarint(nil, w)
			raw = binary.AppendUvarint(raw, 800)
			raw = binary.AppendUvarint(raw, 0)
			raw = binary.AppendUvarint(raw, 50)
			raw = append(raw, metaKindNone, metaKindNone)
			raw = binary.LittleEndian.AppendUint32(raw, metaCRC(raw))
			return metaPrefixV4 + base64.RawURLEncoding.EncodeToString(raw)
		}()},
		{"empty list field", build(900, 0, nil, metaKindNone)},
		{"empty list with trailing bytes", build(900, 0, []byte{metaKindNone, 0}, metaKindNone)},
		{"unknown list kind", build(900, 0, []byte{7}, metaKindNone)},
		{"truncated list", build(900, 0, runs(span{101, 103}, span{300, 400})[:2], metaKindNone)},
		{"no completed-range kind", build(900, 0, runs(span{101, 103}))},
	} {
		if _, err := decodeMeta(w, tc.s); !errors.Is(err, errBadMeta) {
			t.Errorf("%s: %q decodes: %v", tc.name, tc.s, err)
		}
	}
}

// TestHandoverNeverSentNotChecked: a member leaves gracefully with five accounts' records waiting
// for grants (never sent) and one call written and abandoned by the drain bound. Its final
// commit lists only the abandoned record as possibly sent; the successor dispatches the five as
// certain (no existence check, no hold) and only the abandoned one as uncertain. Before metadata
// v4 all six were uncertain: a get each.
func TestHandoverNeverSentNotChecked(t *testing.T) {
	e := newEnv(t, 1)
	sl := &startLog{Dispatcher: e.disp, starts: map[string][]time.Time{}}
	accts := map[string]bool{}
	msgs := []kafka.Message{evMsg("slow-1", "slow", 1)} // offset 0: written, never answered
	all := []string{"slow-1"}
	for i := range 5 {
		a := fmt.Sprintf("waiting%d", i)
		accts[a] = true
		all = append(all, a+"-1")
		msgs = append(msgs, evMsg(a+"-1", a, 1))
	}
	e.k.Produce(t, e.topic, msgs...)
	h := make(chan struct{})
	e.disp.mu.Lock()
	e.disp.hold["slow"] = h
	e.disp.mu.Unlock()
	gw := &grantWait{Dispatcher: sl, accts: accts}
	e.cfgEdit = func(c *Config) { c.Dispatcher, c.UncertainHold, c.ShutdownTimeout = gw, 2*time.Second, time.Second }
	a := e.start()
	testwait.For(t, 15*time.Second, "five accounts waiting for a grant, the slow call written", func() bool {
		return gw.waiting.Load() == 5 && len(sl.since("slow", time.Time{})) == 1
	})
	a.stop(t)
	close(h)
	c := e.committed()[0]
	meta, err := decodeMeta(c.CommittedOffset, c.Metadata)
	if err != nil || !meta.sentKnown || meta.handover == nil {
		t.Fatalf("final commit %q: %+v, %v; want a v4 statement", c.Metadata, meta, err)
	}
	if c.CommittedOffset != 0 || meta.horizon < 6 || !slices.Equal(meta.sent, []span{{0, 1}}) {
		t.Fatalf("final commit at %d, horizon %d, possibly sent %v; want at 0, horizon ≥ 6, only [0,1)", c.CommittedOffset, meta.horizon, meta.sent)
	}

	m2 := metrics.New(prometheus.NewRegistry(), "test", false)
	e.cfgEdit = func(c *Config) { c.UncertainHold, c.Metrics = 2*time.Second, m2 }
	e.start()
	testwait.For(t, 30*time.Second, "all committed", func() bool { return e.committedTotal() == int64(len(all)) })
	calls := e.disp.snapshot()
	checkOnce(t, calls, all)
	unc := uncertainOf(calls)
	for _, id := range all {
		if want := id == "slow-1"; unc[id] != want {
			t.Errorf("%s dispatched by the successor with uncertain %v, want %v", id, unc[id], want)
		}
	}
}

// TestHandoverChainKeepsUncertain: A dies with calls written (its last commit lists them); B
// inherits them as uncertain and leaves gracefully before its hold ends, so it never dispatched
// them. B's final commit must still list them: C checks them first. A list of only what B itself
// sent would tell C they were never sent, though A may have sent them.
func TestHandoverChainKeepsUncertain(t *testing.T) {
	e := newEnv(t, 1)
	accts := map[string]bool{}
	var all []string
	var msgs []kafka.Message
	for i := range 4 {
		a := fmt.Sprintf("acct%d", i)
		accts[a] = true
		all = append(all, a+"-1")
		msgs = append(msgs, evMsg(a+"-1", a, 1))
	}
	e.k.Produce(t, e.topic, msgs...)
	never := e.disp.holdAll(accts)
	a := e.start()
	a.c.crash = true
	testwait.For(t, 15*time.Second, "A's calls written", func() bool { return listedBy(e.committed()[0]) == 4 })
	a.stop(t)
	close(never)

	e.cfgEdit = func(c *Config) { c.UncertainHold = time.Minute }
	b := e.start()
	testwait.For(t, 20*time.Second, "B assigned", b.c.Ready)
	b.stop(t)
	if n := len(e.disp.snapshot()); n != 0 {
		t.Fatalf("B dispatched %d records during its hold", n)
	}
	c := e.committed()[0]
	meta, err := decodeMeta(c.CommittedOffset, c.Metadata)
	if err != nil || !meta.sentKnown {
		t.Fatalf("B's final commit %q: %+v, %v; want a v4 statement", c.Metadata, meta, err)
	}
	if !slices.Equal(meta.sent, []span{{0, 4}}) {
		t.Fatalf("B's final commit lists %v as possibly sent (horizon %d), want A's records [0,4)", meta.sent, meta.horizon)
	}

	e.cfgEdit = func(c *Config) { c.UncertainHold = time.Second }
	e.start()
	testwait.For(t, 30*time.Second, "all committed", func() bool { return e.committedTotal() == int64(len(all)) })
	calls := e.disp.snapshot()
	checkOnce(t, calls, all)
	for id, u := range uncertainOf(calls) {
		if !u {
			t.Errorf("%s dispatched by C as certain; A may have sent it", id)
		}
	}
}
