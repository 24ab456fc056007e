package main

import (
	"encoding/json"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/dlq"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
)

// Without --yes (or --dry-run) replay prints the plan — source, target and counts first — and
// fails with a message saying what to add; nothing is produced. CHATGROUPD_YES in the
// environment does not count as a confirmation.
func TestDLQReplayNeedsYes(t *testing.T) {
	c := dlqTestCluster(t)
	b := strings.Join(c.Brokers, ",")
	yesEnv := func(k string) string { return map[string]string{"CHATGROUPD_YES": "true"}[k] }
	for _, getenv := range []env{nil, yesEnv} {
		out, _, err := runDLQTest(t, getenv, "replay", "--brokers", b, "--topic", "t", "--code", "51010")
		if !errors.Is(err, errNotConfirmed) || !strings.Contains(err.Error(), "--yes") || !strings.Contains(err.Error(), "--dry-run") {
			t.Fatalf("replay without --yes: %v", err)
		}
		lines := strings.Split(out, "\n")
		if len(lines) < 3 || lines[0] != "source: DLQ topic t.dlq" || lines[1] != "target: topic t (2 partitions)" ||
			!dlqLineHas(out, "would replay", "1") || !dlqLineHas(out, "matched", "1") {
			t.Fatalf("plan before the refusal:\n%s", out)
		}
		if n := len(c.ReadAll(t, "t")); n != 0 {
			t.Fatalf("an unconfirmed replay produced %d records", n)
		}
	}
	// The dry run names both topics and succeeds without --yes.
	out, _, err := runDLQTest(t, nil, "replay", "--brokers", b, "--topic", "t", "--code", "51010", "--dry-run")
	if err != nil || !strings.Contains(out, "source: DLQ topic t.dlq") || !strings.Contains(out, "target: topic t ") ||
		!strings.Contains(out, "DRY RUN: nothing was produced to t") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	// --yes replays.
	out, _, err = runDLQTest(t, nil, "replay", "--brokers", b, "--topic", "t", "--code", "51010", "--yes")
	if err != nil || !dlqLineHas(out, "replayed", "1") || len(c.ReadAll(t, "t")) != 1 {
		t.Fatalf("--yes: %v\n%s", err, out)
	}
}

// When Kafka can't be reached nothing is printed but the error: no table of zeros that reads
// like "nothing to replay".
func TestDLQReplayConnectionErrorPrintsNoSummary(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	for _, args := range [][]string{
		{"replay", "--brokers", dead, "--yes"},
		{"replay", "--brokers", dead, "--dry-run"},
		{"replay", "--brokers", dead, "--yes", "--output", "json"},
	} {
		out, _, err := runDLQTest(t, nil, args...)
		if err == nil || !strings.Contains(err.Error(), dead) {
			t.Fatalf("%v: error %v, want the unreachable broker named", args, err)
		}
		if out != "" {
			t.Errorf("%v printed before the connection error:\n%s", args, out)
		}
	}
}

// A mistyped --dlq-topic (another environment's DLQ) is refused: the plan shows where the letters
// came from, the error names --force, nothing is produced. With --force --yes they are replayed.
func TestDLQReplayOtherTopicCommand(t *testing.T) {
	c := dlqTestCluster(t)
	c.CreateTopic(t, "staging.dlq", 1)
	ev := event.Event{EventID: "s-1", EventType: event.TypeContactGroupCreated, FromAccount: "sam", GroupName: "g",
		Contacts: []event.Contact{{Type: 1, ToAccount: "x"}}}
	v, _ := ev.Marshal()
	orig := kafka.Message{Topic: "staging", Partition: 0, Offset: 5, Time: time.Now(), Key: ev.Key(), Value: v}
	c.Produce(t, "staging.dlq", dlq.Record(orig, dlq.Letter{Reason: dlq.ReasonRejected, Code: 51010, FromAccount: "sam"}, "chatgroupd", time.Now()))
	b := strings.Join(c.Brokers, ",")
	args := []string{"replay", "--brokers", b, "--topic", "t", "--dlq-topic", "staging.dlq"}
	for _, extra := range []string{"--yes", "--dry-run"} {
		out, _, err := runDLQTest(t, nil, append(args, extra)...)
		if !errors.Is(err, dlq.ErrOtherTopic) || !strings.Contains(err.Error(), "--force") {
			t.Fatalf("%s: error %v, want the other-topic refusal", extra, err)
		}
		if !dlqLineHas(out, "from another topic", "1") || !strings.Contains(out, `"staging" (1)`) || strings.Contains(out, "replayed 0") {
			t.Fatalf("%s: plan:\n%s", extra, out)
		}
	}
	if n := len(c.ReadAll(t, "t")); n != 0 {
		t.Fatalf("a refused replay produced %d records", n)
	}
	out, _, err := runDLQTest(t, nil, append(args, "--force", "--yes")...)
	if err != nil || !dlqLineHas(out, "replayed", "1") || len(c.ReadAll(t, "t")) != 1 {
		t.Fatalf("--force --yes: %v\n%s", err, out)
	}
}

// An unreadable record in <dlq>.replays is skipped and its count printed by list and replay.
func TestDLQMalformedLedgerCommand(t *testing.T) {
	c := dlqTestCluster(t)
	c.CreateTopic(t, "t.dlq.replays", 1)
	c.Produce(t, "t.dlq.replays", kafka.Message{Key: []byte("t.dlq/0/0"), Value: []byte("garbage")})
	b := strings.Join(c.Brokers, ",")
	out, _, err := runDLQTest(t, nil, "list", "--brokers", b, "--topic", "t")
	if err != nil || !strings.Contains(out, "3 record(s); 1 unreadable replay-ledger record(s) skipped") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	out, _, err = runDLQTest(t, nil, "replay", "--brokers", b, "--topic", "t", "--dry-run")
	if err != nil || !dlqLineHas(out, "ledger malformed", "1") || !dlqLineHas(out, "would replay", "3") {
		t.Fatalf("replay: %v\n%s", err, out)
	}
}

// Letters duplicated by a retried DLQ write are listed once and replayed once.
func TestDLQDuplicateLettersCommand(t *testing.T) {
	c := dlqTestCluster(t)
	// alice's letter written twice more, a second and two seconds later (the writer retried).
	for _, m := range c.ReadAll(t, "t.dlq") {
		e, err := dlq.Parse(m)
		if err != nil || e.Account() != "alice" {
			continue
		}
		orig := kafka.Message{Topic: e.OriginalTopic, Partition: e.OriginalPartition, Offset: e.OriginalOffset,
			Time: e.OriginalTime, Key: e.Key, Value: e.Value}
		l := dlq.Letter{Reason: e.Reason, Code: e.Code, Info: e.Info, Attempts: e.Attempts, EventID: e.EventID, FromAccount: "alice"}
		c.Produce(t, "t.dlq", dlq.Record(orig, l, "chatgroupd", e.FailedAt.Add(time.Second)),
			dlq.Record(orig, l, "chatgroupd", e.FailedAt.Add(2*time.Second)))
	}
	b := strings.Join(c.Brokers, ",")
	out, _, err := runDLQTest(t, nil, "list", "--brokers", b, "--topic", "t")
	if err != nil || strings.Count(out, "  alice  ") != 1 || !strings.Contains(out, "3 record(s); 2 duplicate letter(s)") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	out, _, err = runDLQTest(t, nil, "list", "--brokers", b, "--topic", "t", "--output", "json")
	var views []map[string]any
	dups := map[any]any{}
	if err == nil && json.Unmarshal([]byte(out), &views) == nil {
		for _, v := range views {
			dups[v["account"]] = v["duplicates"]
		}
	}
	if len(views) != 3 || dups["alice"] != 2.0 || dups["bob"] != nil {
		t.Fatalf("list json: %v\n%s", err, out)
	}
	out, _, err = runDLQTest(t, nil, "replay", "--brokers", b, "--topic", "t", "--account", "alice", "--yes")
	if err != nil || !dlqLineHas(out, "duplicates", "2") || !dlqLineHas(out, "replayed", "1") {
		t.Fatalf("replay: %v\n%s", err, out)
	}
	if n := len(c.ReadAll(t, "t")); n != 1 {
		t.Fatalf("%d replays of alice's one event, want 1", n)
	}
}

// The partition count of the event topic changed since the letters were written: the plan says
// so and the replays go where --partitioner puts the accounts now.
func TestDLQReplayPartitionCountChangedCommand(t *testing.T) {
	c := kafkatest.New(t)
	c.CreateTopic(t, "t", 2)
	c.CreateTopic(t, "t.dlq", 1)
	var letters []kafka.Message
	for i := range 6 {
		a := "acct-" + strconv.Itoa(i)
		ev := event.Event{EventID: a, EventType: event.TypeContactGroupCreated, FromAccount: a, GroupName: "g",
			Contacts: []event.Contact{{Type: 1, ToAccount: "x"}}}
		v, _ := ev.Marshal()
		orig := kafka.Message{Topic: "t", Partition: event.PartitionerCRC32.Partition(ev.Key(), 2), Offset: int64(i),
			Time: time.Now(), Key: ev.Key(), Value: v}
		letters = append(letters, dlq.Record(orig, dlq.Letter{Reason: dlq.ReasonExhausted, Code: 50004, FromAccount: a,
			OriginalPartitions: 2}, "chatgroupd", time.Now()))
	}
	c.Produce(t, "t.dlq", letters...)
	cl := &kafka.Client{Addr: kafka.TCP(c.Brokers...), Timeout: 10 * time.Second}
	ctx := testwait.Context(t, 30*time.Second)
	if res, err := cl.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{Topics: []kafka.TopicPartitionsConfig{{Name: "t", Count: 5}}}); err != nil || res.Errors["t"] != nil {
		t.Fatalf("grow t: %v %v", err, res)
	}
	b := strings.Join(c.Brokers, ",")
	out, _, err := runDLQTest(t, nil, "replay", "--brokers", b, "--topic", "t", "--partitioner", "crc32", "--yes")
	if err != nil || !dlqLineHas(out, "  by crc32", "6") || !dlqLineHas(out, "  to the original partition", "0") ||
		!strings.Contains(out, "by crc32 because t had 2 partitions when dead-lettered, has 5 now: 6") {
		t.Fatalf("replay: %v\n%s", err, out)
	}
	for _, m := range c.ReadAll(t, "t") {
		if want := event.PartitionerCRC32.Partition(m.Key, 5); m.Partition != want {
			t.Errorf("%s replayed to partition %d, crc32 over 5 says %d", m.Key, m.Partition, want)
		}
	}
	if _, _, err := runDLQTest(t, nil, "replay", "--brokers", b, "--partitioner", "random", "--dry-run"); err == nil ||
		!strings.Contains(err.Error(), `--partitioner "random": want one of murmur2, crc32, fnv1a`) {
		t.Errorf("bad --partitioner: %v", err)
	}
}
