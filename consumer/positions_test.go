package consumer

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/listoffsets"
	"github.com/segmentio/kafka-go/protocol/offsetfetch"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/chatgroupd/chatgroupd/internal/testwait"
)

// commitRaw stores offset and metadata for the group as a tool outside any generation would.
func (e *env) commitRaw(part int, offset int64, meta string) {
	e.t.Helper()
	cl := &kafka.Client{Addr: kafka.TCP(e.k.Brokers...)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cl.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: e.group, GenerationID: -1,
		Topics: map[string][]kafka.OffsetCommit{e.topic: {{Partition: part, Offset: offset, Metadata: meta}}}})
	if err != nil || resp.Topics[e.topic][0].Error != nil {
		e.t.Fatalf("commit: %v %+v", err, resp)
	}
}

// deleteRecords moves partition part's log start to offset, as retention does.
func (e *env) deleteRecords(part int, offset int64) {
	e.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.k.Brokers...))
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrDeleteRecordsRequest()
	rt := kmsg.NewDeleteRecordsRequestTopic()
	rt.Topic = e.topic
	rp := kmsg.NewDeleteRecordsRequestTopicPartition()
	rp.Partition, rp.Offset = int32(part), offset
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 10000
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		e.t.Fatal(err)
	}
	if c := resp.Topics[0].Partitions[0].ErrorCode; c != 0 {
		e.t.Fatalf("delete records: error code %d", c)
	}
}

// uncertainOf maps each dispatched event id to whether every dispatch of it was flagged uncertain.
func uncertainOf(calls []call) map[string]bool {
	out := map[string]bool{}
	for _, c := range calls {
		u, seen := out[c.ID]
		out[c.ID] = c.Uncertain && (u || !seen)
	}
	return out
}

// TestUntrustedPositionIsUncertain: a partition whose committed position can't be trusted is
// taken over conservatively: its records are dispatched as uncertain (the dispatcher checks
// before creating), never as fresh and never skipped, and the reset is counted.
func TestUntrustedPositionIsUncertain(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reason string
		// prepare sets the group and log up after 20 events were produced (offsets 0-19); it
		// returns the events that must be dispatched.
		prepare func(e *env, all []string) []string
	}{
		{"no commit, log start above 0 (offsets expired)", "no_commit", func(e *env, all []string) []string {
			e.deleteRecords(0, 5)
			return all[5:]
		}},
		{"unusable metadata", "bad_metadata", func(e *env, all []string) []string {
			e.commitRaw(0, 5, "written-by-another-tool")
			return all[5:]
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 1)
			m := newMetricsEnv(e)
			prev := e.cfgEdit
			e.cfgEdit = func(c *Config) { prev(c); c.MaxBuffered = 4 }
			msgs, all := makeEvents(20, 4, "u")
			e.k.Produce(t, e.topic, msgs...)
			want := tc.prepare(e, all)
			e.start()
			testwait.For(t, 20*time.Second, "all committed", func() bool { return e.committedTotal() == 20 })
			unc := uncertainOf(e.disp.snapshot())
			for _, id := range want {
				u, ok := unc[id]
				switch {
				case !ok:
					t.Errorf("event %s not dispatched", id)
				case !u:
					t.Errorf("event %s dispatched as fresh, not uncertain", id)
				}
			}
			if len(unc) != len(want) {
				t.Errorf("%d events dispatched, want %d", len(unc), len(want))
			}
			if n := counter(m.OffsetResets.WithLabelValues(tc.reason)); n != 1 {
				t.Errorf("offset resets %q = %v, want 1", tc.reason, n)
			}
		})
	}
}

// TestCommittedBeyondLogEnd: the log was truncated below the committed offset (unclean leader
// election). Records written afterwards get offsets from the new log end on; they must be
// dispatched (as uncertain: they may repeat lost ones), not skipped waiting for the old offset.
func TestCommittedBeyondLogEnd(t *testing.T) {
	e := newEnv(t, 1)
	m := newMetricsEnv(e)
	old, oldIDs := makeEvents(10, 2, "old")
	e.k.Produce(t, e.topic, old...)
	meta := encodeMeta(50, commitMeta{horizon: 60, done: []span{{52, 55}}}, DefaultMetadataMaxBytes).s
	e.commitRaw(0, 50, meta)
	r := e.start()
	testwait.For(t, 15*time.Second, "ready", r.c.Ready)
	msgs, all := makeEvents(10, 2, "new")
	e.k.Produce(t, e.topic, msgs...)
	testwait.For(t, 20*time.Second, "committed at the new end", func() bool { return e.committedTotal() == 20 })
	unc := uncertainOf(e.disp.snapshot())
	for _, id := range all {
		if u, ok := unc[id]; !ok || !u {
			t.Errorf("event %s: dispatched %v, uncertain %v; want dispatched as uncertain", id, ok, u)
		}
	}
	for _, id := range oldIDs {
		if _, ok := unc[id]; ok {
			t.Errorf("event %s below the new log end dispatched again", id)
		}
	}
	if n := counter(m.OffsetResets.WithLabelValues("beyond_log_end")); n != 1 {
		t.Errorf("offset resets beyond_log_end = %v, want 1", n)
	}
}

// failingPart is a Transport that, while failing is set, answers one partition's OffsetFetch or
// ListOffsets with an error code (the others get the broker's real answer).
type failingPart struct {
	kafka.RoundTripper
	part    int32
	api     string // "offset fetch" or "list offsets"
	failing atomic.Bool
	hits    atomic.Int64
}

func (f *failingPart) RoundTrip(ctx context.Context, addr net.Addr, req protocol.Message) (protocol.Message, error) {
	resp, err := f.RoundTripper.RoundTrip(ctx, addr, req)
	if err != nil || !f.failing.Load() {
		return resp, err
	}
	switch r := resp.(type) {
	case *offsetfetch.Response:
		if f.api == "offset fetch" {
			for i := range r.Topics {
				for j := range r.Topics[i].Partitions {
					if p := &r.Topics[i].Partitions[j]; p.PartitionIndex == f.part {
						p.ErrorCode = 14 // COORDINATOR_LOAD_IN_PROGRESS
						f.hits.Add(1)
					}
				}
			}
		}
	case *listoffsets.Response:
		if f.api == "list offsets" {
			for i := range r.Topics {
				for j := range r.Topics[i].Partitions {
					if p := &r.Topics[i].Partitions[j]; p.Partition == f.part {
						p.ErrorCode = 6 // NOT_LEADER_OR_FOLLOWER
						f.hits.Add(1)
					}
				}
			}
		}
	}
	return resp, nil
}

// TestOnePartitionSetupErrorSparesTheOthers: one partition's OffsetFetch or ListOffsets error
// must not drop every partition of the member (and rejoin every few seconds): the others run,
// the failing one is retried alone with backoff and runs once it answers.
func TestOnePartitionSetupErrorSparesTheOthers(t *testing.T) {
	for _, api := range []string{"offset fetch", "list offsets"} {
		t.Run(api, func(t *testing.T) {
			e := newEnv(t, 2)
			m := newMetricsEnv(e)
			tr := &failingPart{RoundTripper: kafka.DefaultTransport, part: 1, api: api}
			tr.failing.Store(true)
			prev := e.cfgEdit
			e.cfgEdit = func(c *Config) { prev(c); c.Transport = tr }
			msgs, all := makeEvents(200, 20, "p")
			e.k.Produce(t, e.topic, msgs...)
			var inPart0 []string
			for _, m := range e.k.ReadAll(t, e.topic) {
				if m.Partition == 0 {
					inPart0 = append(inPart0, string(m.Value))
				}
			}
			if len(inPart0) == 0 || len(inPart0) == len(all) {
				t.Fatalf("%d of %d events in partition 0: the test needs both partitions used", len(inPart0), len(all))
			}
			e.start()
			testwait.For(t, 20*time.Second, "partition 0 done while partition 1 fails", func() bool {
				return len(e.disp.snapshot()) == len(inPart0)
			})
			if tr.hits.Load() == 0 {
				t.Fatal("no error injected")
			}
			tr.failing.Store(false)
			testwait.For(t, 20*time.Second, "all committed", func() bool { return e.committedTotal() == int64(len(all)) })
			checkOnce(t, e.disp.snapshot(), all)
			if n := counter(m.Rebalances); n != 1 {
				t.Errorf("%v generations: the failing partition cost a rejoin", n)
			}
			t.Logf("%d injected errors", tr.hits.Load())
		})
	}
}
