package dlq_test

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/dlq"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
	"github.com/chatgroupd/chatgroupd/metrics"
	"github.com/chatgroupd/chatgroupd/metrics/metricstest"
)

// batchSize is what a broker's max.message.bytes is compared with for m produced alone,
// uncompressed: the 61-byte v2 batch header and the one record.
func batchSize(m kafka.Message) int {
	vs := func(n int) int { return len(binary.AppendVarint(nil, int64(n))) }
	body := 1 + vs(0) + vs(0) + vs(len(m.Key)) + len(m.Key) + vs(len(m.Value)) + len(m.Value) + vs(len(m.Headers))
	for _, h := range m.Headers {
		body += vs(len(h.Key)) + len(h.Key) + vs(len(h.Value)) + len(h.Value)
	}
	return 61 + vs(body) + body
}

// atLimit is an invalid event keyed by acct whose record is exactly limit bytes in its batch:
// a string seq padded out, the shape of the record that used to wedge its partition.
func atLimit(acct string, limit int) kafka.Message {
	head := `{"event_id":"big","event_type":"contact_group.created","from_account":"` + acct + `","seq":"`
	tail := `","group_name":"g","contacts":[{"type":1,"to_account":"b"}]}`
	m := kafka.Message{Key: []byte(acct)}
	for n := limit - len(head) - len(tail) - 61; ; n-- {
		m.Value = []byte(head + strings.Repeat("A", n) + tail)
		if batchSize(m) <= limit {
			return m
		}
	}
}

func (p *pipeline) partitionOf(t *testing.T, key string) int {
	t.Helper()
	for _, m := range p.k.ReadAll(t, p.topic) {
		if string(m.Key) == key {
			return m.Partition
		}
	}
	t.Fatalf("no record keyed %s", key)
	return -1
}

// TestFaultRecordAtSizeLimitAndDLQDeleted is the fault test of issue 17 on the embedded broker:
//
//  1. A record exactly at the event topic's max.message.bytes, invalid, into a DLQ topic with the
//     same limit (what the sizing advice used to ask): its full letter can't fit; the letter is written
//     truncated, the partition moves on, and the account's next event is applied.
//  2. The DLQ topic is deleted mid-run: the next dead letter can't be written; its partition
//     pauses visibly (dlq_blocked_partitions, not ready with the reason, write failures by
//     reason) and commits nothing past it; when the topic returns it recovers by itself and
//     nothing is lost.
func TestFaultRecordAtSizeLimitAndDLQDeleted(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: consumer group, simulator and DLQ")
	}
	const limit = 64 << 10
	limitCfg := []string{"max.message.bytes", "65536"}
	p := startPipelineTopics(t, imsim.Config{}, func(context.Context, *im.Client) {}, limitCfg, limitCfg, true)

	// 1. At the event topic's limit; one byte more is refused by the event topic itself.
	big := atLimit("alice", limit)
	over := big
	over.Value = []byte(strings.Replace(string(big.Value), `"seq":"`, `"seq":"A`, 1))
	w := p.k.Writer(p.topic)
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if batchSize(big) != limit || batchSize(over) != limit+1 {
		t.Fatalf("sizes %d and %d, want %d and one more", batchSize(big), batchSize(over), limit)
	}
	var we kafka.WriteErrors
	if err := w.WriteMessages(ctx, over); !errors.As(err, &we) || !errors.Is(we[0], kafka.MessageSizeTooLarge) {
		t.Fatalf("a record of %d bytes: %v, want MESSAGE_TOO_LARGE (the test's size arithmetic is off)", batchSize(over), err)
	}
	if err := w.WriteMessages(ctx, big); err != nil {
		t.Fatalf("a record of exactly %d bytes: %v", batchSize(big), err)
	}
	p.produce(t, event.Event{EventID: "after-big", EventType: event.TypeContactGroupCreated, FromAccount: "alice",
		GroupName: "after", Contacts: contacts("b")})
	partA := p.partitionOf(t, "alice")
	testwait.For(t, 60*time.Second, "alice's partition to move past the record at the limit", func() bool { return p.committed(t, partA) == 2 })
	es := p.list(t, dlq.Filter{})
	if len(es) != 1 {
		t.Fatalf("%d letters, want 1", len(es))
	}
	e := es[0]
	if e.Value != nil || !strings.Contains(e.Truncated, "value "+strconv.Itoa(len(big.Value))+" bytes") ||
		e.OriginalOffset != 0 || e.OriginalPartition != partA || e.Reason != dlq.ReasonInvalid {
		t.Errorf("letter %+v truncated %q", e, e.Truncated)
	}
	if len(e.Info) > dlq.MaxInfoBytes || !strings.Contains(e.Info, "seq: must be an integer") {
		t.Errorf("dlq-error-info (%d bytes) %.200q", len(e.Info), e.Info)
	}
	if !slices.Contains(groupNames(p.sim.Groups("alice")), "after") {
		t.Error("alice's next event was not applied")
	}
	if v := testutil.ToFloat64(p.m.DLQWriteFailures.WithLabelValues(metrics.DLQFailTooLarge)); v < 1 {
		t.Errorf("dlq_write_failures_total{too_large} = %v", v)
	}
	if v := testutil.ToFloat64(p.m.DLQTruncated); v != 1 {
		t.Errorf("dlq_truncated_total = %v, want 1", v)
	}

	// 2. The DLQ topic disappears.
	cl := &kafka.Client{Addr: kafka.TCP(p.k.Brokers...), Timeout: 10 * time.Second}
	res, err := cl.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{"ev.dlq"}})
	if err != nil || res.Errors["ev.dlq"] != nil {
		t.Fatalf("delete the DLQ topic: %v %v", err, res)
	}
	p.k.Produce(t, p.topic, kafka.Message{Key: []byte("bob"), Value: []byte(`{"event_id":`)})
	p.produce(t, event.Event{EventID: "after-bad", EventType: event.TypeContactGroupCreated, FromAccount: "bob",
		GroupName: "after", Contacts: contacts("c")})
	partB := p.partitionOf(t, "bob")
	badOff := int64(0)
	if partB == partA {
		badOff = 2
	}
	testwait.For(t, 60*time.Second, "the blocked partition to show", func() bool {
		return testutil.ToFloat64(p.m.DLQBlockedParts) == 1
	})
	herr := p.cons.DeadLetterHealth()
	if herr == nil || !strings.Contains(herr.Error(), "partitions "+strconv.Itoa(partB)+" blocked") {
		t.Fatalf("DeadLetterHealth = %v, want partition %d named", herr, partB)
	}
	t.Logf("not ready: %v", herr)
	time.Sleep(1500 * time.Millisecond) // several commit intervals
	if c := p.committed(t, partB); c > badOff {
		t.Fatalf("committed %d past the unwritten dead letter at %d", c, badOff)
	}
	var failures float64
	for _, r := range []string{metrics.DLQFailTopicMissing, metrics.DLQFailOther, metrics.DLQFailTimeout} {
		failures += testutil.ToFloat64(p.m.DLQWriteFailures.WithLabelValues(r))
	}
	if failures == 0 {
		t.Error("no write failure counted while the DLQ topic is gone")
	}

	// The topic returns: the partition recovers by itself, nothing lost.
	p.k.CreateTopic(t, "ev.dlq", 2, limitCfg...)
	testwait.For(t, 60*time.Second, "the partition to recover", func() bool { return p.committed(t, partB) == badOff+2 })
	if herr := p.cons.DeadLetterHealth(); herr != nil {
		t.Errorf("still not ready after recovery: %v", herr)
	}
	if v := testutil.ToFloat64(p.m.DLQBlockedParts); v != 0 {
		t.Errorf("dlq_blocked_partitions = %v after recovery", v)
	}
	es = p.list(t, dlq.Filter{})
	if len(es) != 1 || es[0].EventID != "" || string(es[0].Key) != "bob" || es[0].Truncated != "" || es[0].OriginalOffset != badOff {
		t.Errorf("letters in the new DLQ topic: %+v", es)
	}
	if !slices.Contains(groupNames(p.sim.Groups("bob")), "after") {
		t.Error("bob's next event was not applied")
	}
	if v := metricstest.CollectorSum(p.m.EventsProcessed, metrics.LabelOutcome, metrics.OutcomeInvalid); v != 2 {
		t.Errorf("invalid events ended: %v, want 2", v)
	}
	if v := metricstest.CollectorSum(p.m.EventsProcessed, metrics.LabelOutcome, metrics.OutcomeApplied); v != 2 {
		t.Errorf("applied events: %v, want 2", v)
	}
}
