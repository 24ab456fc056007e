package dlq

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
	"github.com/chatgroupd/chatgroupd/metrics"
)

func testEvent(t *testing.T, account string, n int) kafka.Message {
	t.Helper()
	ev := event.Event{EventID: account + "-" + strconv.Itoa(n), EventType: event.TypeContactGroupCreated,
		FromAccount: account, GroupName: "g" + strconv.Itoa(n), Contacts: []event.Contact{{Type: 1, ToAccount: "x"}}}
	v, err := ev.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return kafka.Message{Key: ev.Key(), Value: v}
}

// TestReplayPartitionCountChanged: partitions were added to the event topic after the letter was
// written, so the original partition no longer holds the account's new events. The plan says so,
// and the replay goes where the named fallback partitioner (here crc32, the producer's) puts the
// account now, not to the original partition and not where murmur2 would.
func TestReplayPartitionCountChanged(t *testing.T) {
	c := kafkatest.New(t)
	c.CreateTopic(t, "t", 2)
	c.CreateTopic(t, "t.dlq", 2)
	ctx := testwait.Context(t, 60*time.Second)
	acct := ""
	for i := 0; acct == ""; i++ {
		a := "grow-" + strconv.Itoa(i)
		k := []byte(a)
		if now := event.PartitionerCRC32.Partition(k, 4); now != event.PartitionerCRC32.Partition(k, 2) &&
			now != event.PartitionerMurmur2.Partition(k, 4) {
			acct = a
		}
	}
	// The producer (CRC32) writes the event; the consumer's writer dead-letters the record as read.
	crc := &kafka.Writer{Addr: kafka.TCP(c.Brokers...), Topic: "t", Balancer: &kafka.CRC32Balancer{}, BatchTimeout: time.Millisecond}
	if err := crc.WriteMessages(ctx, testEvent(t, acct, 1)); err != nil {
		t.Fatal(err)
	}
	crc.Close()
	orig := c.ReadAll(t, "t")[0]
	w := newTestWriter(t, c, "t.dlq", zap.NewNop(), metrics.NewNop())
	if err := w.DeadLetter(ctx, orig, Letter{Reason: ReasonRejected, Code: 51010, Attempts: 1, FromAccount: acct}); err != nil {
		t.Fatal(err)
	}

	cl := &kafka.Client{Addr: kafka.TCP(c.Brokers...), Timeout: 10 * time.Second}
	res, err := cl.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{Topics: []kafka.TopicPartitionsConfig{{Name: "t", Count: 4}}})
	if err != nil || res.Errors["t"] != nil {
		t.Fatalf("grow t to 4 partitions: %v %v", err, res)
	}

	cfg := ToolConfig{Brokers: c.Brokers, Topic: "t", DialTimeout: 2 * time.Second}
	var plan Summary
	sum, err := Replay(ctx, cfg, ReplayOptions{DryRun: true, Partitioner: event.PartitionerCRC32,
		Plan: func(s Summary) error { plan = s; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	why := "t had 2 partitions when dead-lettered, has 4 now"
	if plan.ByPartitioner != 1 || plan.ToOriginalPartition != 0 || plan.FallbackReasons[why] != 1 ||
		plan.Partitioner != "crc32" || plan.TargetPartitions != 4 || sum.FallbackReasons[why] != 1 {
		t.Fatalf("plan %+v, want one replay by crc32 because %q", plan, why)
	}

	sum, err = Replay(ctx, cfg, ReplayOptions{Partitioner: event.PartitionerCRC32})
	if err != nil || sum.Replayed != 1 || sum.ByPartitioner != 1 || sum.FallbackReasons[why] != 1 {
		t.Fatalf("replay %+v %v", sum, err)
	}
	var replays []kafka.Message
	for _, m := range c.ReadAll(t, "t") {
		if _, ok := lastHeader(m.Headers, event.HeaderReplayOf); ok {
			replays = append(replays, m)
		}
	}
	want := event.PartitionerCRC32.Partition([]byte(acct), 4)
	if len(replays) != 1 || replays[0].Partition != want {
		t.Fatalf("replays %v, want one in partition %d (original %d)", replays, want, orig.Partition)
	}

	if _, err := Replay(ctx, cfg, ReplayOptions{Partitioner: "murmur3"}); err == nil || !strings.Contains(err.Error(), "murmur3") {
		t.Errorf("unknown partitioner: %v", err)
	}
}

// TestDuplicateLettersCollapse: a DLQ write retried after a lost acknowledgement leaves two
// letters for one original record (the second with a later dlq-failed-at). List shows it once,
// Replay replays it once, and a replay recorded against either copy counts for both.
func TestDuplicateLettersCollapse(t *testing.T) {
	c := kafkatest.New(t)
	c.CreateTopic(t, "t", 3)
	c.CreateTopic(t, "t.dlq", 3)
	ctx := testwait.Context(t, 60*time.Second)
	letter := func(account string, offset int64) (kafka.Message, Letter) {
		m := testEvent(t, account, 1)
		m.Topic, m.Partition, m.Offset, m.Time = "t", 1, offset, t0
		return m, Letter{Reason: ReasonRejected, Code: 51010, Attempts: 1, FromAccount: account, OriginalPartitions: 3}
	}
	var msgs []kafka.Message
	for _, a := range []struct {
		account string
		offset  int64
		copies  int
	}{{"alice", 10, 2}, {"bob", 11, 1}, {"carol", 12, 3}} {
		m, l := letter(a.account, a.offset)
		for i := range a.copies {
			msgs = append(msgs, Record(m, l, "chatgroupd", t0.Add(time.Duration(i)*time.Second)))
		}
	}
	c.Produce(t, "t.dlq", msgs...)
	// carol's third copy was replayed by a version that did not collapse duplicates.
	var carol3 kafka.Message
	for _, m := range c.ReadAll(t, "t.dlq") {
		if e, _ := Parse(m); string(m.Key) == "carol" && e.FailedAt.Equal(t0.Add(2*time.Second)) {
			carol3 = m
		}
	}
	v, _ := json.Marshal(ledgerEntry{ReplayedAt: t0, ReplayCount: 1, Topic: "t", FailedAt: t0.Add(2 * time.Second)})
	c.CreateTopic(t, "t.dlq.replays", 1)
	c.Produce(t, "t.dlq.replays", kafka.Message{Key: []byte(Coordinate("t.dlq", carol3.Partition, carol3.Offset)), Value: v})

	cfg := ToolConfig{Brokers: c.Brokers, Topic: "t", DialTimeout: 2 * time.Second}
	l, err := Scan(ctx, cfg, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range l.Entries {
		got[e.Account()] += "dups=" + strconv.Itoa(e.Duplicates) + ",replayed=" + strconv.FormatBool(e.Replayed) + ";"
	}
	want := map[string]string{"alice": "dups=1,replayed=false;", "bob": "dups=0,replayed=false;", "carol": "dups=2,replayed=true;"}
	if len(got) != 3 || got["alice"] != want["alice"] || got["bob"] != want["bob"] || got["carol"] != want["carol"] ||
		l.Scanned != 6 || l.Duplicates != 3 {
		t.Fatalf("Scan %v (read %d, duplicates %d), want %v, read 6, duplicates 3", got, l.Scanned, l.Duplicates, want)
	}
	if es, err := List(ctx, cfg, Filter{}); err != nil || len(es) != 3 {
		t.Fatalf("List: %d entries, %v; want 3", len(es), err)
	}

	sum, err := Replay(ctx, cfg, ReplayOptions{})
	if err != nil || sum.Replayed != 2 || sum.Duplicates != 3 || sum.AlreadyReplayed != 1 || sum.ToOriginalPartition != 2 {
		t.Fatalf("replay %+v %v; want alice and bob replayed once each", sum, err)
	}
	perAccount := map[string]int{}
	for _, m := range c.ReadAll(t, "t") {
		perAccount[string(m.Key)]++
		if m.Partition != 1 {
			t.Errorf("%s replayed to partition %d, want its original 1", m.Key, m.Partition)
		}
	}
	if perAccount["alice"] != 1 || perAccount["bob"] != 1 || perAccount["carol"] != 0 {
		t.Fatalf("replays per account %v, want alice 1, bob 1", perAccount)
	}
	if sum, err = Replay(ctx, cfg, ReplayOptions{}); err != nil || sum.Replayed != 0 || sum.AlreadyReplayed != 3 {
		t.Fatalf("second replay %+v %v, want nothing replayed", sum, err)
	}
}

// TestReplayRefusesLettersFromAnotherTopic: --dlq-topic names another environment's DLQ. Replay
// (and its dry run) refuses with ErrOtherTopic, naming the topics; nothing is produced and no
// ledger is created. With Force the letters go to the target, placed by the partitioner.
func TestReplayRefusesLettersFromAnotherTopic(t *testing.T) {
	c := kafkatest.New(t)
	c.CreateTopic(t, "prod", 2)
	c.CreateTopic(t, "staging.dlq", 2)
	var msgs []kafka.Message
	for i, a := range []string{"alice", "bob"} {
		m := testEvent(t, a, 1)
		m.Topic, m.Partition, m.Offset = "staging", 1, int64(i)
		msgs = append(msgs, Record(m, Letter{Reason: ReasonRejected, Code: 51010, FromAccount: a, OriginalPartitions: 2}, "chatgroupd", t0))
	}
	c.Produce(t, "staging.dlq", msgs...)
	ctx := testwait.Context(t, 60*time.Second)
	cfg := ToolConfig{Brokers: c.Brokers, Topic: "prod", DLQTopic: "staging.dlq", DialTimeout: 2 * time.Second}

	for _, dry := range []bool{true, false} {
		planned := false
		sum, err := Replay(ctx, cfg, ReplayOptions{DryRun: dry, Plan: func(s Summary) error {
			planned = s.OtherTopic == 2 && s.OtherTopics["staging"] == 2 && s.Source == "staging.dlq" && s.Target == "prod"
			return nil
		}})
		if !errors.Is(err, ErrOtherTopic) || !strings.Contains(err.Error(), `"staging" (2)`) || !strings.Contains(err.Error(), "--force") {
			t.Fatalf("dry run %v: error %v, want ErrOtherTopic naming staging", dry, err)
		}
		if !planned || sum.Replayed != 0 {
			t.Fatalf("dry run %v: plan shown %v, summary %+v", dry, planned, sum)
		}
	}
	if n := len(c.ReadAll(t, "prod")); n != 0 {
		t.Fatalf("%d records produced to prod by a refused replay", n)
	}
	if topicExists(t, c, "staging.dlq.replays") {
		t.Fatal("a refused replay created the ledger")
	}

	sum, err := Replay(ctx, cfg, ReplayOptions{Force: true})
	if err != nil || sum.Replayed != 2 || sum.ByPartitioner != 2 || sum.FallbackReasons["letter from another topic (--force)"] != 2 {
		t.Fatalf("forced replay %+v %v", sum, err)
	}
	for _, m := range c.ReadAll(t, "prod") {
		if want := event.PartitionerMurmur2.Partition(m.Key, 2); m.Partition != want {
			t.Errorf("forced replay of %s in partition %d, murmur2 says %d", m.Key, m.Partition, want)
		}
	}
}

// TestLedgerSkipsMalformedRecords: records in <dlq>.replays that are not ledger entries (not
// JSON, no key, no dlq_failed_at) are skipped and counted; List and Replay go on, and the good
// entries still count.
func TestLedgerSkipsMalformedRecords(t *testing.T) {
	c, cfg := setup(t)
	ctx := testwait.Context(t, 60*time.Second)
	dlqRecs := c.ReadAll(t, "t.dlq")
	first, _ := Parse(dlqRecs[0])
	good, _ := json.Marshal(ledgerEntry{ReplayedAt: t0, ReplayCount: 1, Topic: "t", FailedAt: first.FailedAt})
	c.CreateTopic(t, "t.dlq.replays", 1)
	c.Produce(t, "t.dlq.replays",
		kafka.Message{Key: []byte(Coordinate("t.dlq", first.Partition, first.Offset)), Value: good},
		kafka.Message{Key: []byte("t.dlq/0/1"), Value: []byte("{not json")},
		kafka.Message{Value: good},
		kafka.Message{Key: []byte("t.dlq/0/2"), Value: []byte(`{"replayed_at":"2026-11-29T08:00:00Z"}`)},
	)
	l, err := Scan(ctx, cfg, Filter{})
	if err != nil {
		t.Fatalf("Scan with a malformed ledger: %v", err)
	}
	replayed := 0
	for _, e := range l.Entries {
		if e.Replayed {
			replayed++
		}
	}
	if l.LedgerMalformed != 3 || len(l.Entries) != 8 || replayed != 1 {
		t.Fatalf("Scan: %d ledger records skipped, %d entries, %d replayed; want 3, 8, 1", l.LedgerMalformed, len(l.Entries), replayed)
	}
	sum, err := Replay(ctx, cfg, ReplayOptions{DryRun: true})
	if err != nil || sum.LedgerMalformed != 3 || sum.AlreadyReplayed != 1 {
		t.Fatalf("Replay with a malformed ledger: %+v %v", sum, err)
	}
}

// TestReplaySkipsTruncatedLetters: a letter the DLQ topic only took without the event's value
// (dlq-truncated) is not replayed — it would come back as invalid — but counted and named, so the
// operator can fetch the event from its original coordinates.
func TestReplaySkipsTruncatedLetters(t *testing.T) {
	c := kafkatest.New(t)
	c.CreateTopic(t, "t", 2)
	c.CreateTopic(t, "t.dlq", 1)
	var msgs []kafka.Message
	for i, a := range []string{"alice", "bob"} {
		m := testEvent(t, a, 1)
		m.Topic, m.Partition, m.Offset = "t", 0, int64(i)
		l := Letter{Reason: ReasonExhausted, Code: 50004, FromAccount: a, OriginalPartitions: 2}
		if a == "bob" {
			msgs = append(msgs, record(m, l, "chatgroupd", t0, dropValue))
		} else {
			msgs = append(msgs, Record(m, l, "chatgroupd", t0))
		}
	}
	c.Produce(t, "t.dlq", msgs...)
	cfg := ToolConfig{Brokers: c.Brokers, Topic: "t", DialTimeout: 2 * time.Second}
	sum, err := Replay(testwait.Context(t, 30*time.Second), cfg, ReplayOptions{})
	if err != nil || sum.Replayed != 1 || sum.Truncated != 1 || len(sum.TruncatedRecords) != 1 || sum.TruncatedRecords[0] != "t.dlq/0/1" {
		t.Fatalf("replay %+v %v; want alice replayed and bob's truncated letter skipped", sum, err)
	}
	got := c.ReadAll(t, "t")
	if len(got) != 1 || string(got[0].Key) != "alice" {
		t.Fatalf("main topic %v, want only alice's replay", got)
	}
}
