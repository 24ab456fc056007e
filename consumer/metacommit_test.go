package consumer

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// commitAs writes offset and metadata for partition 0 the way an admin tool would: outside any
// generation, while the group is empty.
func (e *env) commitAs(offset int64, meta string) {
	e.t.Helper()
	cl := &kafka.Client{Addr: kafka.TCP(e.k.Brokers...)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cl.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: e.group, GenerationID: -1,
		Topics: map[string][]kafka.OffsetCommit{e.topic: {{Partition: 0, Offset: offset, Metadata: meta}}}})
	if err != nil {
		e.t.Fatalf("commit: %v", err)
	}
	if pe := resp.Topics[e.topic][0].Error; pe != nil {
		e.t.Fatalf("commit: %v", pe)
	}
}

// TestInheritedRangeAtWatermarkDecodes (issue 14, hole 2): a new owner inherits a completed range
// that starts right after the one record it must run. Once that record ends, the watermark equals
// the range start; what it commits then must decode for the next owner and still say the range is
// done. The old encoder wrote a range with gap 0 there, which the decoder rejected.
func TestInheritedRangeAtWatermarkDecodes(t *testing.T) {
	e := newEnv(t, 1)
	e.k.Produce(t, e.topic, evMsg("s0", "a", 0), evMsg("s1", "b", 0))
	// Watermark 1, horizon 4, offsets [2,4) done: what a previous owner wrote in v1 (raw bytes
	// 03 01 02), before offsets 2 and 3 reached this test's log.
	e.commitAs(1, "v1:AwEC")
	r := e.start()
	testwait.For(t, 10*time.Second, "s1 dispatched", func() bool { return len(e.disp.snapshot()) == 1 })
	testwait.For(t, 10*time.Second, "commit past offset 1", func() bool { return e.committed()[0].CommittedOffset > 1 })
	r.stop(t)
	c := e.committed()[0]
	m, err := decodeMeta(c.CommittedOffset, c.Metadata)
	if err != nil {
		t.Fatalf("committed %d %q does not decode: %v", c.CommittedOffset, c.Metadata, err)
	}
	for off := int64(2); off < 4; off++ {
		inRange := false
		for _, r := range m.done {
			inRange = inRange || r.start <= off && off < r.end
		}
		if off >= c.CommittedOffset && !inRange {
			t.Errorf("offset %d no longer known done: committed %d, ranges %v", off, c.CommittedOffset, m.done)
		}
	}
	if calls := e.disp.snapshot(); len(calls) != 1 || calls[0].ID != "s1" || !calls[0].Uncertain {
		t.Errorf("calls %+v, want s1 once, flagged uncertain", calls)
	}
}

// TestMovedOffsetDoesNotShiftRanges (issue 14, hole 5): an admin tool moves the committed offset
// but keeps our metadata string. The completed ranges must not be read relative to the new
// offset, or records nobody ran are skipped as done.
func TestMovedOffsetDoesNotShiftRanges(t *testing.T) {
	e := newEnv(t, 1)
	m := metrics.NewNop()
	e.cfgEdit = func(c *Config) {
		c.ShutdownTimeout = 500 * time.Millisecond
		c.CommitInterval = time.Hour
		c.Metrics = m
	}
	e.disp.delay["stuck"] = time.Hour
	e.k.Produce(t, e.topic, evMsg("s0", "a", 0), evMsg("stuck", "stuck", 0), evMsg("s2", "b", 0), evMsg("s3", "c", 0))
	r := e.start()
	testwait.For(t, 10*time.Second, "others applied", func() bool { return len(e.disp.snapshot()) == 3 })
	r.stop(t)
	c := e.committed()[0]
	if m, err := decodeMeta(c.CommittedOffset, c.Metadata); c.CommittedOffset != 1 || err != nil || len(m.done) != 1 {
		t.Fatalf("first owner committed %d %q (%v), want 1 with offsets 2-3 done", c.CommittedOffset, c.Metadata, err)
	}
	e.k.Produce(t, e.topic, evMsg("s4", "d", 0), evMsg("s5", "e", 0), evMsg("s6", "f", 0))
	// The operator skips the stuck record and one more, keeping the metadata string.
	e.commitAs(3, c.Metadata)
	e.disp.undelay()
	r = e.start()
	want := map[string]bool{"s3": true, "s4": true, "s5": true, "s6": true}
	testwait.For(t, 10*time.Second, "s3-s6 dispatched", func() bool {
		n := 0
		for _, c := range e.disp.snapshot()[3:] {
			if want[c.ID] {
				n++
			}
		}
		return n == len(want)
	})
	r.stop(t)
	if n := counter(m.OffsetResets.WithLabelValues("moved_offset")); n != 1 {
		t.Errorf("offset resets for a moved offset: %v, want 1", n)
	}
	for _, c := range e.disp.snapshot()[3:] {
		if c.ID == "s3" && !c.Uncertain {
			t.Errorf("s3 (applied before the move) dispatched again without the uncertain flag")
		}
		if c.ID == "s0" || c.ID == "s2" || c.ID == "stuck" {
			t.Errorf("%s, below the moved offset, dispatched again", c.ID)
		}
	}
}

// TestCommitRefusesMetadataThatDoesNotRoundTrip: with an encoder that shifts the completed ranges
// (a bug the decoder cannot see), the commit path notices before writing, counts it, and commits
// the watermark and horizon alone; with one whose output never decodes, it commits nothing, so
// no horizon is ever extended and nothing is dispatched.
func TestCommitRefusesMetadataThatDoesNotRoundTrip(t *testing.T) {
	shift := func(w int64, m commitMeta, l int) metaEnc {
		if len(m.done) > 0 {
			m.done = []span{{m.done[0].start + 1, m.done[0].end + 1}}
		}
		return encodeMeta(w, m, l)
	}
	garbage := func(w int64, m commitMeta, l int) metaEnc { return metaEnc{w: w, h: m.horizon, s: "v2:garbage"} }
	for name, enc := range map[string]func(int64, commitMeta, int) metaEnc{"shifted": shift, "garbage": garbage} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, 1)
			m := metrics.NewNop()
			e.cfgEdit = func(c *Config) { c.metaEncoder = enc; c.Metrics = m }
			e.disp.delay["stuck"] = time.Hour
			e.k.Produce(t, e.topic, evMsg("s0", "a", 0), evMsg("stuck", "stuck", 0), evMsg("s2", "b", 0), evMsg("s3", "c", 0))
			e.start()
			testwait.For(t, 10*time.Second, "a refused metadata", func() bool { return counter(m.CommitMetaRefused) >= 2 })
			if name == "garbage" {
				if c := e.committed()[0]; c.CommittedOffset >= 0 {
					t.Fatalf("committed %d %q with an encoder whose output never decodes", c.CommittedOffset, c.Metadata)
				}
				if calls := e.disp.snapshot(); len(calls) != 0 {
					t.Fatalf("dispatched %+v with no horizon committed", calls)
				}
				return
			}
			testwait.For(t, 10*time.Second, "others applied", func() bool { return len(e.disp.snapshot()) == 3 })
			testwait.For(t, 10*time.Second, "commit at 1", func() bool { return e.committed()[0].CommittedOffset == 1 })
			c := e.committed()[0]
			got, err := decodeMeta(c.CommittedOffset, c.Metadata)
			if c.CommittedOffset != 1 || err != nil || len(got.done) != 0 || got.horizon < 4 {
				t.Fatalf("committed %d %+v (%v), want 1 with the horizon and no ranges", c.CommittedOffset, got, err)
			}
		})
	}
}

// TestBrokerMetadataLimit: a metadata string of DefaultMetadataMaxBytes characters is accepted,
// and on a real broker (CHATGROUPD_TEST_BROKERS) one character more is refused with
// OFFSET_METADATA_TOO_LARGE: the encoder's bound is the broker's, exactly. The embedded broker
// does not enforce the limit.
func TestBrokerMetadataLimit(t *testing.T) {
	e := newEnv(t, 1)
	cl := &kafka.Client{Addr: kafka.TCP(e.k.Brokers...)}
	commit := func(n int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := cl.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: e.group, GenerationID: -1,
			Topics: map[string][]kafka.OffsetCommit{e.topic: {{Partition: 0, Offset: 10, Metadata: metaPrefixV2 + strings.Repeat("A", n-len(metaPrefixV2))}}}})
		if err != nil {
			return err
		}
		return resp.Topics[e.topic][0].Error
	}
	var err error
	for range 5 { // a fresh broker answers "not coordinator" until its offsets topic exists
		if err = commit(DefaultMetadataMaxBytes); !errors.Is(err, kafka.NotCoordinatorForGroup) {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		t.Fatalf("%d characters refused: %v", DefaultMetadataMaxBytes, err)
	}
	err = commit(DefaultMetadataMaxBytes + 1)
	if os.Getenv(kafkatest.EnvBrokers) == "" {
		t.Logf("embedded broker, %d characters: %v", DefaultMetadataMaxBytes+1, err)
		return
	}
	if !errors.Is(err, kafka.OffsetMetadataTooLarge) {
		t.Fatalf("%d characters: %v, want OFFSET_METADATA_TOO_LARGE", DefaultMetadataMaxBytes+1, err)
	}
}

// TestFinalCommitKeepsWindowOnlyIfSeen: the encoder may advance the committed offset over an
// inherited completed range the fetch has not reached. The dedupe window never saw those events,
// so it must not stand in for the next generation's read-back, which would remember them.
func TestFinalCommitKeepsWindowOnlyIfSeen(t *testing.T) {
	e := newEnv(t, 1)
	c, err := New(e.config())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		inherited []span
		committed int64
		kept      bool
	}{
		{"offset advanced past the fetch", []span{{2, 4}}, 4, false},
		{"offset within the fetch", []span{{3, 4}}, 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clear(c.kept)
			eng := newEngine(c, context.Background())
			p := &part{id: 0, tr: newTracker(1), win: newWindow(10), accounts: map[string]*account{},
				pending: map[uint64]*rec{}, done: tc.inherited, inherited: 4, hz: horizon{committed: 4, maxPicked: 1}, hasPrev: true}
			p.tr.end(p.tr.add(1, 0, nil)) // record 1 fetched and ended: watermark 2, fetch position 2
			eng.parts[0] = p
			eng.final = true
			if err := eng.commit(context.Background(), &kafka.Generation{ID: -1}); err != nil {
				t.Fatal(err)
			}
			if got := e.committed()[0].CommittedOffset; got != tc.committed {
				t.Fatalf("committed %d, want %d", got, tc.committed)
			}
			if _, kept := c.kept[0]; kept != tc.kept {
				t.Fatalf("window kept %v, want %v", kept, tc.kept)
			}
		})
	}
}

// TestCancelledCommitIsNoFailure: a periodic commit cut short because its generation ended
// (its context cancelled) is not a broker refusing commits and is not counted as one; a commit
// that ran out of time is.
func TestCancelledCommitIsNoFailure(t *testing.T) {
	e := newEnv(t, 1)
	m := newMetricsEnv(e)
	c, err := New(e.config())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		ctx     func() context.Context
		counted float64
	}{
		{"cancelled", func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, 0},
		{"deadline exceeded", func() context.Context {
			ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
			t.Cleanup(cancel)
			return ctx
		}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := counter(m.Commits.WithLabelValues("error"))
			eng := newEngine(c, context.Background())
			p := &part{id: 0, tr: newTracker(0), win: newWindow(10), accounts: map[string]*account{},
				pending: map[uint64]*rec{}}
			p.tr.end(p.tr.add(0, 0, nil))
			eng.parts[0] = p
			if err := eng.commit(tc.ctx(), &kafka.Generation{ID: -1}); err == nil {
				t.Fatal("commit with an ended context succeeded")
			}
			if got := counter(m.Commits.WithLabelValues("error")) - before; got != tc.counted {
				t.Errorf("commit errors counted %v, want %v", got, tc.counted)
			}
		})
	}
}
