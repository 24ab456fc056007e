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
