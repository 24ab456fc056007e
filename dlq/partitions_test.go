package dlq

import (
	"errors"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// dlq-original-partition-count round-trips, is left out when unknown, and a bad value makes the
// record malformed like any other bad dlq-* header.
func TestRecordPartitionCount(t *testing.T) {
	l := Letter{Reason: ReasonRejected, Code: 50001, Info: "x", Attempts: 1, FromAccount: "alice"}
	l.OriginalPartitions = 6
	m := Record(origMessage(), l, "g", failTime)
	if v := header(t, m.Headers, HeaderOriginalPartitionCount); v != "6" {
		t.Fatalf("%s = %q, want 6", HeaderOriginalPartitionCount, v)
	}
	e, err := Parse(m)
	if err != nil || e.OriginalPartitions != 6 || e.OriginalPartition != 7 {
		t.Fatalf("Parse: %+v %v", e, err)
	}
	// The header is ours: the original headers come back unchanged.
	if len(e.Headers) != len(origMessage().Headers) {
		t.Errorf("original headers %v", e.Headers)
	}

	l.OriginalPartitions = 0
	m = Record(origMessage(), l, "g", failTime)
	if _, ok := lastHeader(m.Headers, HeaderOriginalPartitionCount); ok {
		t.Fatal("an unknown partition count was written")
	}
	if e, err := Parse(m); err != nil || e.OriginalPartitions != 0 {
		t.Fatalf("Parse without the header: %+v %v", e, err)
	}

	for _, bad := range []string{"0", "-2", "six", ""} {
		l.OriginalPartitions = 6
		m := Record(origMessage(), l, "g", failTime)
		for i := range m.Headers {
			if m.Headers[i].Key == HeaderOriginalPartitionCount {
				m.Headers[i].Value = []byte(bad)
			}
		}
		var he *HeaderError
		if _, err := Parse(m); !errors.As(err, &he) || he.Header != HeaderOriginalPartitionCount {
			t.Errorf("partition count %q: Parse error %v, want a HeaderError for it", bad, err)
		}
	}
}

// The Writer records how many partitions the original topic has; when it cannot tell (topic
// unknown to the cluster) the letter is still written, without the header.
func TestWriterRecordsPartitionCount(t *testing.T) {
	c := kafkatest.New(t)
	c.CreateTopic(t, "d", 2)
	c.CreateTopic(t, "ev", 5)
	w := newTestWriter(t, c, "d", zap.NewNop(), metrics.NewNop())
	ctx := testCtx(t, 30*time.Second)
	l := Letter{Reason: ReasonInvalid, Info: "bad"}
	orig := kafka.Message{Topic: "ev", Partition: 3, Offset: 9, Key: []byte("alice"), Value: []byte("{")}
	if err := w.DeadLetter(ctx, orig, l); err != nil {
		t.Fatal(err)
	}
	orig.Topic = "nowhere"
	if err := w.DeadLetter(ctx, orig, l); err != nil {
		t.Fatal(err)
	}
	got := c.ReadAll(t, "d")
	if len(got) != 2 {
		t.Fatalf("%d letters, want 2", len(got))
	}
	counts := map[string]int{}
	for _, m := range got {
		e, err := Parse(m)
		if err != nil {
			t.Fatal(err)
		}
		counts[e.OriginalTopic] = e.OriginalPartitions
	}
	if counts["ev"] != 5 || counts["nowhere"] != 0 {
		t.Fatalf("recorded partition counts %v, want ev:5 nowhere:0", counts)
	}
}

// The count is asked again once older than partitionCountTTL; when the cluster can't answer
// then, the last known count is used rather than none.
func TestPartitionCountsRefreshAndKeepLastKnown(t *testing.T) {
	c := kafkatest.New(t)
	c.CreateTopic(t, "ev", 3)
	now := t0
	// kafka-go's transport caches metadata too (MetadataTTL); keep that out of the way here by
	// letting its short TTL pass before each expected refresh.
	const transportTTL = 20 * time.Millisecond
	rt := &kafka.Transport{MetadataTTL: transportTTL, DialTimeout: 5 * time.Second}
	defer rt.CloseIdleConnections()
	p := newPartitionCounts(c.Brokers, rt, zaptest.NewLogger(t), func() time.Time { return now })
	ctx := testCtx(t, 30*time.Second)
	if n := p.get(ctx, "ev"); n != 3 {
		t.Fatalf("count %d, want 3", n)
	}
	cl := &kafka.Client{Addr: kafka.TCP(c.Brokers...), Timeout: 10 * time.Second}
	if res, err := cl.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{Topics: []kafka.TopicPartitionsConfig{{Name: "ev", Count: 4}}}); err != nil || res.Errors["ev"] != nil {
		t.Fatalf("grow: %v %v", err, res)
	}
	if n := p.get(ctx, "ev"); n != 3 {
		t.Fatalf("count %d within the TTL, want the remembered 3", n)
	}
	now = now.Add(partitionCountTTL)
	time.Sleep(2 * transportTTL)
	if n := p.get(ctx, "ev"); n != 4 {
		t.Fatalf("count %d after the TTL, want 4", n)
	}
	if res, err := cl.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{"ev"}}); err != nil || res.Errors["ev"] != nil {
		t.Fatalf("delete: %v %v", err, res)
	}
	now = now.Add(partitionCountTTL)
	time.Sleep(2 * transportTTL)
	if n := p.get(ctx, "ev"); n != 4 {
		t.Fatalf("count %d when the cluster can't tell, want the last known 4", n)
	}
	if n := p.get(ctx, ""); n != 0 {
		t.Fatalf("count %d for no topic", n)
	}
}
