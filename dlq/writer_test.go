package dlq

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
	"github.com/chatgroupd/chatgroupd/metrics"
)

func newTestWriter(t *testing.T, c *kafkatest.Cluster, topic string, log *zap.Logger, m *metrics.Metrics) *Writer {
	t.Helper()
	w, err := NewWriter(Config{
		Brokers: c.Brokers, Topic: topic, GroupID: "chatgroupd", Logger: log, Metrics: m,
		Now: func() time.Time { return failTime }, WriteTimeout: 3 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// Every reason, written through Kafka and read back, is the original byte for byte plus correct
// dlq-* headers; the account keys the record, the counter and the log line follow.
func TestWriterEveryReasonOnKafka(t *testing.T) {
	c := kafkatest.New(t)
	c.CreateTopic(t, "d", 4)
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, "test", false)
	core, logs := observer.New(zap.InfoLevel)
	w := newTestWriter(t, c, "d", zap.New(core), m)
	if err := w.Check(testwait.Context(t, 10*time.Second)); err != nil {
		t.Fatalf("Check: %v", err)
	}

	letters := []Letter{
		{Reason: ReasonInvalid, Info: "invalid event: group_name: required field missing"},
		{Reason: ReasonRejected, Code: 50001, Info: "From_Account not imported", Attempts: 1, EventID: "e-1", FromAccount: "alice"},
		{Reason: ReasonPartial, Code: 51008, Info: "1 of 2 failed", Attempts: 1, EventID: "e-1", FromAccount: "alice", Result: []byte(`{"GroupId":"1"}`)},
		{Reason: ReasonExhausted, Code: 50004, Info: "budget spent", Attempts: 40, EventID: "e-1", FromAccount: "alice", ReplayCount: 1},
	}
	orig := origMessage()
	ctx := testwait.Context(t, 30*time.Second)
	for _, l := range letters {
		if err := w.DeadLetter(ctx, orig, l); err != nil {
			t.Fatalf("DeadLetter(%s): %v", l.Reason, err)
		}
	}
	got := c.ReadAll(t, "d")
	if len(got) != len(letters) {
		t.Fatalf("read %d DLQ records, want %d", len(got), len(letters))
	}
	for i, m := range got {
		if m.Partition != got[0].Partition {
			t.Errorf("records of one account in partitions %d and %d: the DLQ must be keyed by account", got[0].Partition, m.Partition)
		}
		want := Record(orig, letters[i], "chatgroupd", failTime)
		if !bytes.Equal(m.Key, want.Key) || !bytes.Equal(m.Value, want.Value) {
			t.Errorf("record %d key/value differ", i)
		}
		sameHeaders(t, m.Headers, want.Headers)
		e, err := Parse(m)
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		if e.Reason != letters[i].Reason || e.ConsumerGroup != "chatgroupd" || e.EventType != event.TypeContactGroupCreated {
			t.Errorf("record %d parsed as %+v", i, e)
		}
	}
	if v := testutil.ToFloat64(m.DLQRecords.WithLabelValues("partial", "51008", "contact_group.created")); v != 1 {
		t.Errorf("dlq_records_total{partial,51008,contact_group.created} = %v, want 1", v)
	}
	if n := testutil.CollectAndCount(m.DLQRecords); n != 4 {
		t.Errorf("%d dlq_records_total series, want 4", n)
	}
	lines := logs.FilterMessage("dead-lettered").All()
	if len(lines) != 4 {
		t.Fatalf("%d dead-letter log lines, want one per record", len(lines))
	}
	f := lines[2].ContextMap()
	if f["reason"] != "partial" || f["code"] != int64(51008) || f["offset"] != int64(4242) || f["account"] != "alice" {
		t.Errorf("log fields %v", f)
	}
}

// The murmur2 key hashing must put a DLQ record where a Java producer would: the same partition
// as any other record with that key.
func TestWriterKeysByAccount(t *testing.T) {
	c := kafkatest.New(t)
	c.CreateTopic(t, "d", 8)
	w := newTestWriter(t, c, "d", nil, nil)
	ctx := testwait.Context(t, 30*time.Second)
	accounts := []string{"alice", "bob", "carol", "dave", "erin", "frank"}
	for range 3 {
		for _, a := range accounts {
			if err := w.DeadLetter(ctx, kafka.Message{Topic: "t", Key: []byte(a), Value: []byte("{}")}, Letter{Reason: ReasonInvalid}); err != nil {
				t.Fatal(err)
			}
		}
	}
	b := &kafka.Murmur2Balancer{}
	parts := []int{0, 1, 2, 3, 4, 5, 6, 7}
	for _, m := range c.ReadAll(t, "d") {
		if want := b.Balance(kafka.Message{Key: m.Key}, parts...); m.Partition != want {
			t.Errorf("key %s in partition %d, murmur2 says %d", m.Key, m.Partition, want)
		}
	}
}

// A DLQ that can't be written returns an error, so the consumer keeps the offset uncommitted.
func TestWriterFailures(t *testing.T) {
	t.Run("topic missing", func(t *testing.T) {
		c := kafkatest.New(t)
		m := metrics.NewNop()
		w := newTestWriter(t, c, "nope", nil, m)
		err := w.DeadLetter(testwait.Context(t, 20*time.Second), origMessage(), Letter{Reason: ReasonInvalid})
		if err == nil {
			t.Fatal("DeadLetter to a missing topic returned nil")
		}
		if !strings.Contains(err.Error(), "nope") {
			t.Errorf("error %q does not name the DLQ topic", err)
		}
		if v := testutil.ToFloat64(m.DLQWriteFailures.WithLabelValues(metrics.DLQFailTopicMissing)); v < 1 {
			t.Errorf("dlq_write_failures_total{reason=topic_missing} = %v, want >= 1", v)
		}
		if err := w.Check(testwait.Context(t, 10*time.Second)); !errors.Is(err, ErrTopicNotFound) {
			t.Errorf("Check: %v, want ErrTopicNotFound", err)
		}
	})
	t.Run("broker refuses produce", func(t *testing.T) {
		c := kafkatest.New(t)
		c.CreateTopic(t, "d", 1)
		m := metrics.NewNop()
		w := newTestWriter(t, c, "d", nil, m)
		// Every produce is answered with NOT_ENOUGH_REPLICAS: acks=all can't be met.
		c.Fake.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
			c.Fake.KeepControl()
			return produceError(req, "d")
		})
		err := w.DeadLetter(testwait.Context(t, 20*time.Second), origMessage(), Letter{Reason: ReasonRejected, Code: 51010})
		if !errors.Is(err, kafka.NotEnoughReplicas) {
			t.Fatalf("DeadLetter error %v, want NotEnoughReplicas", err)
		}
		if v := testutil.ToFloat64(m.DLQRecords.WithLabelValues("rejected", "51010", "contact_group.created")); v != 0 {
			t.Errorf("dlq_records_total counted a failed write: %v", v)
		}
		if v := testutil.ToFloat64(m.DLQWriteFailures.WithLabelValues(metrics.DLQFailOther)); v != 1 {
			t.Errorf("dlq_write_failures_total{reason=other} = %v, want 1", v)
		}
	})
	t.Run("context cancelled", func(t *testing.T) {
		c := kafkatest.New(t)
		c.CreateTopic(t, "d", 1)
		w := newTestWriter(t, c, "d", nil, nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := w.DeadLetter(ctx, origMessage(), Letter{Reason: ReasonInvalid}); err == nil {
			t.Fatal("DeadLetter with a cancelled context returned nil")
		}
	})
}

// TestWriterTruncatesTooLarge: a letter the DLQ topic refuses as too large is written without
// the value (then, if still too large, without the original key, headers and dlq-result), so the
// consumer can move on; the coordinates stay and dlq-truncated says what was left out.
func TestWriterTruncatesTooLarge(t *testing.T) {
	c := kafkatest.New(t)
	c.CreateTopic(t, "d", 1, "max.message.bytes", "4096")
	m := metrics.NewNop()
	w := newTestWriter(t, c, "d", nil, m)

	big := origMessage()
	big.Value = bytes.Repeat([]byte("v"), 3850) // fits a 4096-byte event topic, not with ~300 bytes of dlq-* headers
	if n := encodedSize(big) + 61; n > 4096 {
		t.Fatalf("test record is %d bytes in a batch: would not fit the event topic either", n)
	}
	if err := w.DeadLetter(testwait.Context(t, 20*time.Second), big, Letter{Reason: ReasonInvalid, Info: "bad"}); err != nil {
		t.Fatalf("value too large: %v", err)
	}
	heavy := origMessage()
	heavy.Offset = 4243
	heavy.Headers = append(heavy.Headers, kafka.Header{Key: "trace", Value: bytes.Repeat([]byte("h"), 5000)})
	if err := w.DeadLetter(testwait.Context(t, 20*time.Second), heavy, Letter{Reason: ReasonInvalid, Info: "bad"}); err != nil {
		t.Fatalf("headers too large: %v", err)
	}
	got := c.ReadAll(t, "d")
	if len(got) != 2 {
		t.Fatalf("%d letters, want 2", len(got))
	}
	for i, want := range []struct {
		off       int64
		truncated string
		headers   int
	}{{4242, "value 3850 bytes", 3}, {4243, "headers 4 (", 0}} {
		e, err := Parse(got[i])
		if err != nil {
			t.Fatal(err)
		}
		if e.OriginalOffset != want.off || e.Value != nil || !strings.Contains(e.Truncated, want.truncated) || len(e.Headers) != want.headers {
			t.Errorf("letter %d: offset %d value %d bytes truncated %q headers %d", i, e.OriginalOffset, len(e.Value), e.Truncated, len(e.Headers))
		}
	}
	if v := testutil.ToFloat64(m.DLQWriteFailures.WithLabelValues(metrics.DLQFailTooLarge)); v != 3 {
		t.Errorf("dlq_write_failures_total{reason=too_large} = %v, want 3 (1 + 2 refused writes)", v)
	}
	if v := testutil.ToFloat64(m.DLQTruncated); v != 2 {
		t.Errorf("dlq_truncated_total = %v, want 2", v)
	}
	// The letter whose value was left out is still counted by the original's type.
	if v := testutil.ToFloat64(m.DLQRecords.WithLabelValues("invalid", "0", "contact_group.created")); v != 1 {
		t.Errorf("dlq_records_total{invalid,0,contact_group.created} = %v, want 1", v)
	}
	if v := testutil.ToFloat64(m.DLQRecords.WithLabelValues("invalid", "0", metrics.EventTypeUnknown)); v != 1 {
		t.Errorf("dlq_records_total{invalid,0,unknown} = %v, want 1 (the value that is not JSON)", v)
	}
}

// produceError answers a produce request to topic with NOT_ENOUGH_REPLICAS for every partition,
// and lets any other request through.
func produceError(req kmsg.Request, topic string) (kmsg.Response, error, bool) {
	pr := req.(*kmsg.ProduceRequest)
	if len(pr.Topics) == 0 || pr.Topics[0].Topic != topic {
		return nil, nil, false
	}
	resp := pr.ResponseKind().(*kmsg.ProduceResponse)
	for _, rt := range pr.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic = rt.Topic
		st.TopicID = rt.TopicID
		for _, rp := range rt.Partitions {
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.ErrorCode = 19 // NOT_ENOUGH_REPLICAS
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp, nil, true
}

// After Close a dead letter fails rather than being silently dropped.
func TestWriterClose(t *testing.T) {
	c := kafkatest.New(t)
	c.CreateTopic(t, "d", 1)
	w, err := NewWriter(Config{Brokers: c.Brokers, Topic: "d", GroupID: "g"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testwait.Context(t, 20*time.Second)
	if err := w.DeadLetter(ctx, origMessage(), Letter{Reason: ReasonInvalid}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := w.DeadLetter(ctx, origMessage(), Letter{Reason: ReasonInvalid}); err == nil {
		t.Fatal("DeadLetter after Close returned nil")
	}
	if n := len(c.ReadAll(t, "d")); n != 1 {
		t.Fatalf("%d DLQ records, want 1", n)
	}
}

func ExampleNewWriter() {
	w, err := NewWriter(Config{
		Brokers: []string{"127.0.0.1:9092"},
		Topic:   "chat.contact-groups.dlq",
		GroupID: "chatgroupd",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// rec is the record the consumer could not apply; DeadLetter returns nil only once Kafka
	// acknowledged the DLQ copy with acks=all, and only then may rec's offset be committed.
	rec := kafka.Message{Topic: "chat.contact-groups", Partition: 3, Offset: 1207, Key: []byte("alice"), Value: []byte(`{}`)}
	if err := w.DeadLetter(ctx, rec, Letter{Reason: ReasonRejected, Code: 51010, Info: "20 groups", Attempts: 1}); err != nil {
		fmt.Println("not dead-lettered, keep the offset uncommitted:", err)
	}
}
