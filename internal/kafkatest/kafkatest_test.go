package kafkatest

import (
	"testing"

	"github.com/segmentio/kafka-go"
)

func TestProduceReadAll(t *testing.T) {
	c := New(t)
	c.CreateTopic(t, "t", 3)
	var msgs []kafka.Message
	for i := 0; i < 30; i++ {
		msgs = append(msgs, kafka.Message{Key: []byte{byte('a' + i%5)}, Value: []byte{byte(i)}})
	}
	c.Produce(t, "t", msgs...)
	got := c.ReadAll(t, "t")
	if len(got) != 30 {
		t.Fatalf("read %d records, want 30", len(got))
	}
	seen := map[string]int{}
	for _, m := range got {
		if p, ok := seen[string(m.Key)]; ok && p != m.Partition {
			t.Fatalf("key %q in partitions %d and %d: writer must hash keys", m.Key, p, m.Partition)
		}
		seen[string(m.Key)] = m.Partition
	}
}

// TestGroupLag: a partition without a commit counts every record, a committed one the records
// past its commit. (A group with no commit at all is an error from the broker, as before.)
func TestGroupLag(t *testing.T) {
	c := New(t)
	c.CreateTopic(t, "lag", 2)
	w := c.Writer("lag")
	w.Balancer = kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { return int(m.Key[0] - '0') })
	msgs := make([]kafka.Message, 0, 7)
	for i := range 7 {
		msgs = append(msgs, kafka.Message{Key: []byte{byte('0' + i%2)}, Value: []byte{byte(i)}}) // 4 to p0, 3 to p1
	}
	if err := w.WriteMessages(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()
	cl := &kafka.Client{Addr: kafka.TCP(c.Brokers...)}
	commit := func(p int, off int64) {
		t.Helper()
		resp, err := cl.OffsetCommit(t.Context(), &kafka.OffsetCommitRequest{GroupID: "g", GenerationID: -1,
			Topics: map[string][]kafka.OffsetCommit{"lag": {{Partition: p, Offset: off}}}})
		if err != nil || resp.Topics["lag"][0].Error != nil {
			t.Fatalf("commit: %v %+v", err, resp)
		}
	}
	commit(0, 3)
	if lag, err := GroupLag(t.Context(), cl, "g", "lag", 2); err != nil || lag != 4 {
		t.Fatalf("p0 committed at 3, p1 not: lag %d, %v; want 1+3", lag, err)
	}
	commit(1, 3)
	if lag, err := GroupLag(t.Context(), cl, "g", "lag", 2); err != nil || lag != 1 {
		t.Fatalf("both committed at 3: lag %d, %v; want 1", lag, err)
	}
}
