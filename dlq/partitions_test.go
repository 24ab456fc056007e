package dlq

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
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
	ctx := testwait.Context(t, 30*time.Second)
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
	now := t0
	answers := []struct {
		n   int
		err error
	}{{3, nil}, {4, nil}, {0, ErrTopicNotFound}}
	asked := 0
	p := &partitionCounts{log: zaptest.NewLogger(t), now: func() time.Time { return now }, counts: map[string]countAt{},
		lookup: func(_ context.Context, topic string) (int, error) {
			if topic != "ev" {
				t.Fatalf("asked about %q", topic)
			}
			a := answers[min(asked, len(answers)-1)]
			asked++
			return a.n, a.err
		}}
	ctx := testwait.Context(t, 10*time.Second)
	for _, step := range []struct {
		advance time.Duration
		want    int
		asked   int
	}{
		{0, 3, 1},                               // first use: asked
		{partitionCountTTL - time.Second, 3, 1}, // within the TTL: remembered
		{time.Second, 4, 2},                     // TTL passed: asked again, the topic grew
		{partitionCountTTL, 4, 3},               // asked again, the cluster can't tell: last known
	} {
		now = now.Add(step.advance)
		if n := p.get(ctx, "ev"); n != step.want || asked != step.asked {
			t.Fatalf("after %s: count %d (asked %d times), want %d (asked %d)", step.advance, n, asked, step.want, step.asked)
		}
	}
	if n := p.get(ctx, ""); n != 0 || asked != 3 {
		t.Fatalf("count %d for no topic (asked %d)", n, asked)
	}
}
