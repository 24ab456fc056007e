package consumer

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
)

// TestReadCommitted: records of an aborted transaction are never applied, a committed
// transaction's are, and the commit/abort markers are neither applied nor dead-lettered —
// including an aborted transaction interleaved with another producer's committed one. kafka-go's
// Reader delivered all of them (markers as invalid records) even asked for read-committed.
func TestReadCommitted(t *testing.T) {
	e := newEnv(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	txn := func(id string) *kgo.Client {
		cl, err := kgo.NewClient(kgo.SeedBrokers(e.k.Brokers...), kgo.TransactionalID(id), kgo.DefaultProduceTopic(e.topic))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		return cl
	}
	produce := func(cl *kgo.Client, id, acct string) {
		ev := event.Event{EventID: id, EventType: event.TypeContactGroupCreated, FromAccount: acct, Seq: 0,
			GroupName: "g", Contacts: []event.Contact{{Type: 1, ToAccount: "peer"}}}
		v, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte(acct), Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	aborted, committed := txn(kafkatest.UniqueName("t-abort")), txn(kafkatest.UniqueName("t-commit"))
	produce(aborted, "aborted1", "a")
	produce(committed, "committed1", "b")
	produce(aborted, "aborted2", "c")
	if err := aborted.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
	if err := committed.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	e.k.Produce(t, e.topic, evMsg("plain1", "d", 0))
	// A real broker writes the markers after EndTransaction returns: wait for all six offsets
	// (3 events, 2 markers, 1 plain record).
	const end = 6
	cl := &kafka.Client{Addr: kafka.TCP(e.k.Brokers...)}
	testwait.For(t, 10*time.Second, "the markers written", func() bool {
		lo, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{e.topic: {kafka.LastOffsetOf(0)}}})
		return err == nil && len(lo.Topics[e.topic]) == 1 && lo.Topics[e.topic][0].LastOffset == end
	})
	e.start()
	testwait.For(t, 20*time.Second, "committed to the log end", func() bool { return e.committedTotal() == end })
	got := ids(e.disp.snapshot())
	for _, id := range []string{"committed1/0", "plain1/0"} {
		if got[id] != 1 {
			t.Errorf("%s dispatched %d times, want 1", id, got[id])
		}
	}
	for _, id := range []string{"aborted1/0", "aborted2/0"} {
		if got[id] != 0 {
			t.Errorf("%s of an aborted transaction dispatched", id)
		}
	}
	if l := e.dl.snapshot(); len(l) != 0 {
		t.Errorf("%d dead letters, want none (first: offset %d %s)", len(l), l[0].msg.Offset, l[0].l.Info)
	}
}
