package dlq_test

import (
	"context"
	"slices"
	"strconv"
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

// TestReplayCRC32ProducerKeepsPartitionOrder: the product app produces with librdkafka's default
// partitioner (CRC32), not murmur2. A dead-lettered event replays into the partition its account's
// events are in, after the account's earlier events and before its later ones in that partition's
// order, and is applied in that order; replaying it a second time (ledger bypassed) lands in the
// same partition and the consumer's per-partition dedupe drops it.
func TestReplayCRC32ProducerKeepsPartitionOrder(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: consumer group, simulator and DLQ")
	}
	// An account that CRC32 and murmur2 put in different partitions of the 2-partition topic, so
	// a replay keyed with murmur2 would leave the account's partition.
	acct := ""
	for i := 0; acct == ""; i++ {
		a := "crc-" + strconv.Itoa(i)
		if event.PartitionerCRC32.Partition([]byte(a), 2) != event.PartitionerMurmur2.Partition([]byte(a), 2) {
			acct = a
		}
	}
	home := event.PartitionerCRC32.Partition([]byte(acct), 2)

	// The account may hold 4 groups and already has 3: its first event fills it, the second is
	// rejected (51010) and dead-lettered.
	p := startPipeline(t, imsim.Config{MaxGroups: 4}, func(ctx context.Context, c *im.Client) {
		for _, g := range []string{"old1", "old2", "old3"} {
			_, err := c.CreateContactGroup(ctx, &im.CreateRequest{FromAccount: acct,
				GroupContactItem: []im.GroupContactItem{{GroupName: g, ContactItem: imContacts("y")}}})
			if err != nil {
				t.Fatalf("seed %s: %v", g, err)
			}
		}
	})
	crc := &kafka.Writer{Addr: kafka.TCP(p.k.Brokers...), Topic: p.topic, Balancer: &kafka.CRC32Balancer{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: 2 * time.Millisecond}
	defer crc.Close()
	produce := func(n int) {
		t.Helper()
		ev := event.Event{EventID: acct + "-" + strconv.Itoa(n), EventType: event.TypeContactGroupCreated,
			FromAccount: acct, Seq: int64(n), GroupName: "g" + strconv.Itoa(n), Contacts: contacts("x")}
		v, err := ev.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := crc.WriteMessages(ctx, kafka.Message{Key: ev.Key(), Value: v}); err != nil {
			t.Fatal(err)
		}
	}
	hasGroup := func(g string) func() bool {
		return func() bool { return slices.Contains(groupNames(p.sim.Groups(acct)), g) }
	}

	produce(1)
	testwait.For(t, 30*time.Second, "g1 applied", hasGroup("g1"))
	produce(2)
	testwait.For(t, 30*time.Second, "g2 dead-lettered", func() bool { return len(p.list(t, dlq.Filter{})) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := p.api.DelContactGroup(ctx, &im.DeleteRequest{FromAccount: acct, GroupName: []string{"old1", "old2", "old3"}}); err != nil {
		t.Fatal(err)
	}
	produce(3)
	testwait.For(t, 30*time.Second, "g3 applied", hasGroup("g3"))

	sum := p.replay(t, dlq.ReplayOptions{Filter: dlq.Filter{Account: acct}})
	if sum.Replayed != 1 || sum.ToOriginalPartition != 1 || sum.ByPartitioner != 0 {
		t.Fatalf("replay summary %+v, want 1 replayed to its original partition", sum)
	}
	testwait.For(t, 30*time.Second, "the replayed g2 applied", hasGroup("g2"))
	produce(4)
	testwait.For(t, 30*time.Second, "g4 applied", hasGroup("g4"))

	// The partition's order: 1, 2, 3, the replay of 2, 4; no record of the account elsewhere.
	var order []string
	for _, m := range p.k.ReadAll(t, p.topic) {
		if string(m.Key) != acct {
			continue
		}
		if m.Partition != home {
			t.Fatalf("a record of %s in partition %d, its producer's partition is %d (replay-of %q)",
				acct, m.Partition, home, header(m.Headers, event.HeaderReplayOf))
		}
		ev, err := event.Parse(m.Value)
		if err != nil {
			t.Fatal(err)
		}
		if rc := header(m.Headers, event.HeaderReplayCount); rc != "" {
			order = append(order, ev.GroupName+"@replay"+rc)
		} else {
			order = append(order, ev.GroupName)
		}
	}
	if want := []string{"g1", "g2", "g3", "g2@replay1", "g4"}; !slices.Equal(order, want) {
		t.Fatalf("partition %d holds %v, want %v", home, order, want)
	}
	if got := groupNames(p.sim.Groups(acct)); !slices.Equal(got, []string{"g1", "g3", "g2", "g4"}) {
		t.Fatalf("groups applied in the order %v, want g1 g3 g2 g4", got)
	}
	// The consumer, configured with the default murmur2, sees the CRC32 producer: all five of the
	// account's records are counted as misrouted.
	if n := testutil.ToFloat64(p.m.EventsMisrouted.WithLabelValues(p.topic)); n != 5 {
		t.Errorf("chatgroupd_events_misrouted_total{topic=%s} = %v, want 5", p.topic, n)
	}

	// A double replay: the ledger is bypassed (--again), the copy lands in the same partition
	// with the same replay-count and is dropped as a duplicate.
	dups := metricstest.CollectorSum(p.m.EventsProcessed, metrics.LabelOutcome, metrics.OutcomeDuplicate)
	sum = p.replay(t, dlq.ReplayOptions{Filter: dlq.Filter{Account: acct}, Again: true})
	if sum.Replayed != 1 || sum.ToOriginalPartition != 1 {
		t.Fatalf("second replay %+v", sum)
	}
	testwait.For(t, 30*time.Second, "the second replay dropped as a duplicate", func() bool {
		return metricstest.CollectorSum(p.m.EventsProcessed, metrics.LabelOutcome, metrics.OutcomeDuplicate) == dups+1
	})
	for _, m := range p.k.ReadAll(t, p.topic) {
		if string(m.Key) == acct && m.Partition != home {
			t.Fatalf("the second replay went to partition %d, not %d", m.Partition, home)
		}
	}
	if got := groupNames(p.sim.Groups(acct)); !slices.Equal(got, []string{"g1", "g3", "g2", "g4"}) {
		t.Fatalf("after the double replay the groups are %v", got)
	}
}
