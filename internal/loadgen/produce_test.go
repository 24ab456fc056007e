package loadgen

import (
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
)

func TestProduce(t *testing.T) {
	k := kafkatest.New(t)
	k.CreateTopic(t, "events", 3)
	gen, err := New(Config{Accounts: 5, SwapRate: 0.3, DuplicateRate: 0.1, InvalidRate: 0.1, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	w := Writer(k.Brokers, "events", nil)
	defer w.Close()
	var calls int
	n, want, err := Produce(t.Context(), w, gen, 1203, false, 0, func(produced int, e Expect, _ []kafka.Message) {
		calls++
		if e.Total() != produced {
			t.Errorf("after %d records the expectation covers %d", produced, e.Total())
		}
	})
	if err != nil || n != 1203 || want.Total() != 1203 || calls != 3 {
		t.Fatalf("produced %d (%+v) in %d writes, err %v; want 1203 in 3 batches", n, want, calls, err)
	}
	msgs := k.ReadAll(t, "events")
	if len(msgs) != 1203 {
		t.Fatalf("topic holds %d records", len(msgs))
	}
	for _, m := range msgs {
		if e, err := event.Parse(m.Value); err == nil && string(m.Key) != e.FromAccount {
			t.Fatalf("record keyed %q for account %q", m.Key, e.FromAccount)
		}
	}
}

// TestProduceInterrupted: a paced stream stops when ctx ends, without error, and reports only
// what Kafka acknowledged.
func TestProduceInterrupted(t *testing.T) {
	k := kafkatest.New(t)
	k.CreateTopic(t, "events", 1)
	gen, _ := New(Config{Accounts: 2, Seed: 1})
	w := Writer(k.Brokers, "events", nil)
	defer w.Close()
	n, want, err := Produce(testwait.Context(t, 300*time.Millisecond), w, gen, 0, true, 50, nil)
	if err != nil {
		t.Fatalf("interrupted stream: %v", err)
	}
	if n == 0 || n > 30 || want.Total() != n {
		t.Fatalf("produced %d with expectation %+v at 50/s for 0.3s", n, want)
	}
	if got := len(k.ReadAll(t, "events")); got != n {
		t.Fatalf("reported %d, topic holds %d", n, got)
	}
}
