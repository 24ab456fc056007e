package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
)

var t0 = time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)

// seeded is one dead letter put in the test DLQ.
type seeded struct {
	account string
	l       Letter
	group   string
	at      time.Time
	typ     event.Type // contact_group.created when empty
}

func seedLetters() []seeded {
	return []seeded{
		{"alice", Letter{Reason: ReasonRejected, Code: 51010, Info: "20 groups", Attempts: 1}, "chatgroupd", t0, ""},
		{"bob", Letter{Reason: ReasonRejected, Code: 51010, Info: "20 groups", Attempts: 1}, "chatgroupd", t0.Add(time.Hour), ""},
		{"carol", Letter{Reason: ReasonPartial, Code: 51008, Info: "1 of 3 failed", Attempts: 2, Result: []byte(`{"GroupId":"9"}`)}, "chatgroupd", t0.Add(2 * time.Hour), ""},
		{"alice", Letter{Reason: ReasonRejected, Code: 50001, Info: "not imported", Attempts: 1}, "chatgroupd", t0.Add(3 * time.Hour), event.TypeContactGroupContactsAdded},
		{"dave", Letter{Reason: ReasonExhausted, Code: 50004, Info: "budget", Attempts: 30}, "chatgroupd", t0.Add(4 * time.Hour), event.TypeContactGroupDeleted},
		{"erin", Letter{Reason: ReasonInvalid, Info: "bad JSON"}, "chatgroupd", t0.Add(5 * time.Hour), ""},
		{"frank", Letter{Reason: ReasonRejected, Code: 51010, Info: "20 groups", Attempts: 1, ReplayCount: 3}, "chatgroupd", t0.Add(6 * time.Hour), ""},
		{"gina", Letter{Reason: ReasonRejected, Code: 51010, Info: "20 groups", Attempts: 1}, "other-group", t0.Add(7 * time.Hour), ""},
	}
}

// setup starts Kafka with a main topic "t" and its DLQ "t.dlq" holding seedLetters.
func setup(t *testing.T) (*kafkatest.Cluster, ToolConfig) {
	t.Helper()
	c := kafkatest.New(t)
	c.CreateTopic(t, "t", 3)
	c.CreateTopic(t, "t.dlq", 3)
	var msgs []kafka.Message
	for i, s := range seedLetters() {
		id, name := "e-"+strconv.Itoa(i), "g"+strconv.Itoa(i)
		ev := event.NewCreated(id, s.account, name, event.ToAccount("x"))
		switch s.typ {
		case event.TypeContactGroupContactsAdded:
			ev = event.NewContactsAdded(id, s.account, name, event.ToAccount("x"))
		case event.TypeContactGroupDeleted:
			ev = event.NewDeleted(id, s.account, name)
		}
		v, err := ev.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		orig := kafka.Message{Topic: "t", Partition: i % 3, Offset: int64(100 + i), Time: s.at.Add(-time.Minute),
			Key: ev.Key(), Value: v, Headers: []kafka.Header{{Key: "trace", Value: []byte("tr-" + strconv.Itoa(i))}}}
		if s.l.ReplayCount > 0 {
			orig.Headers = append(orig.Headers, kafka.Header{Key: event.HeaderReplayCount, Value: []byte(strconv.Itoa(s.l.ReplayCount))})
		}
		s.l.EventID, s.l.FromAccount = ev.EventID, ev.FromAccount
		msgs = append(msgs, Record(orig, s.l, s.group, s.at))
	}
	c.Produce(t, "t.dlq", msgs...)
	return c, ToolConfig{Brokers: c.Brokers, Topic: "t", DialTimeout: 2 * time.Second,
		Now: func() time.Time { return t0.Add(24 * time.Hour) }}
}

func accounts(es []Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Account()+":"+strconv.Itoa(e.Code))
	}
	slices.Sort(out)
	return out
}

func TestListFilters(t *testing.T) {
	_, cfg := setup(t)
	all := []string{"alice:50001", "alice:51010", "bob:51010", "carol:51008", "dave:50004", "erin:0", "frank:51010", "gina:51010"}
	cases := []struct {
		name string
		f    Filter
		want []string
	}{
		{"none", Filter{}, all},
		{"code", Filter{Codes: []int{51010}}, []string{"alice:51010", "bob:51010", "frank:51010", "gina:51010"}},
		{"codes", Filter{Codes: []int{51008, 0}}, []string{"carol:51008", "erin:0"}},
		{"reason", Filter{Reasons: []string{ReasonPartial}}, []string{"carol:51008"}},
		{"reasons", Filter{Reasons: []string{ReasonInvalid, ReasonExhausted}}, []string{"dave:50004", "erin:0"}},
		{"account", Filter{Account: "alice"}, []string{"alice:50001", "alice:51010"}},
		{"group", Filter{Group: "chatgroupd"}, all[:7]},
		{"since (inclusive)", Filter{Since: t0.Add(5 * time.Hour)}, []string{"erin:0", "frank:51010", "gina:51010"}},
		{"until (exclusive)", Filter{Until: t0.Add(time.Hour)}, []string{"alice:51010"}},
		{"window and code", Filter{Codes: []int{51010}, Since: t0.Add(30 * time.Minute), Until: t0.Add(7 * time.Hour)}, []string{"bob:51010", "frank:51010"}},
		{"nothing", Filter{Account: "zed"}, nil},
		{"event type", Filter{EventTypes: []event.Type{event.TypeContactGroupDeleted}}, []string{"dave:50004"}},
		{"event types and reason", Filter{EventTypes: []event.Type{event.TypeContactGroupContactsAdded, event.TypeContactGroupCreated},
			Reasons: []string{ReasonRejected}}, []string{"alice:50001", "alice:51010", "bob:51010", "frank:51010", "gina:51010"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			es, err := List(testwait.Context(t, 30*time.Second), cfg, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, accounts(es)); diff != "" {
				t.Fatalf("List (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("order and fields", func(t *testing.T) {
		es, err := List(testwait.Context(t, 30*time.Second), cfg, Filter{Reasons: []string{ReasonPartial}})
		if err != nil || len(es) != 1 {
			t.Fatalf("List: %v %v", es, err)
		}
		e := es[0]
		if e.EventID != "e-2" || e.EventType != event.TypeContactGroupCreated || e.Attempts != 2 || e.Info != "1 of 3 failed" || string(e.Result) != `{"GroupId":"9"}` ||
			!e.FailedAt.Equal(t0.Add(2*time.Hour)) || e.OriginalOffset != 102 || e.Replayed {
			t.Errorf("entry %+v", e)
		}
		es, _ = List(testwait.Context(t, 30*time.Second), cfg, Filter{})
		for i := 1; i < len(es); i++ {
			a, b := es[i-1], es[i]
			if a.Partition > b.Partition || (a.Partition == b.Partition && a.Offset >= b.Offset) {
				t.Fatalf("entries not in (partition, offset) order: %d/%d before %d/%d", a.Partition, a.Offset, b.Partition, b.Offset)
			}
		}
	})
}

func TestListBadInput(t *testing.T) {
	_, cfg := setup(t)
	ctx := testwait.Context(t, 30*time.Second)
	if _, err := List(ctx, cfg, Filter{Reasons: []string{"rejected", "lost"}}); !errors.Is(err, ErrUnknownReason) || !strings.Contains(err.Error(), `"lost"`) {
		t.Errorf("unknown reason: %v", err)
	}
	if _, err := List(ctx, cfg, Filter{EventTypes: []event.Type{"contact_group.archived"}}); !errors.Is(err, ErrUnknownEventType) || !strings.Contains(err.Error(), "archived") {
		t.Errorf("unknown event type: %v", err)
	}
	if _, err := List(ctx, cfg, Filter{Since: t0, Until: t0}); err == nil {
		t.Error("empty time range accepted")
	}
	missing := cfg
	missing.DLQTopic = "no-such-dlq"
	if _, err := List(ctx, missing, Filter{}); !errors.Is(err, ErrTopicNotFound) {
		t.Errorf("missing DLQ topic: %v", err)
	}
	if _, err := List(ctx, ToolConfig{Topic: "t"}, Filter{}); err == nil {
		t.Error("no brokers accepted")
	}
}

func TestListUnreachableBrokersFailsFast(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	start := time.Now()
	_, err = List(testwait.Context(t, 30*time.Second), ToolConfig{Brokers: []string{addr}, Topic: "t", DialTimeout: time.Second}, Filter{})
	if err == nil {
		t.Fatal("List against no broker returned nil")
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("took %v to fail", d)
	}
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not name the broker", err)
	}
}

func TestMalformedDLQRecord(t *testing.T) {
	c, cfg := setup(t)
	c.Produce(t, "t.dlq", kafka.Message{Key: []byte("alice"), Value: []byte("{}"), Headers: []kafka.Header{{Key: "trace", Value: []byte("x")}}})
	ctx := testwait.Context(t, 30*time.Second)
	_, err := List(ctx, cfg, Filter{})
	if !errors.Is(err, ErrNotDLQRecord) || !strings.Contains(err.Error(), "dlq-reason missing") {
		t.Fatalf("List: %v, want ErrNotDLQRecord naming the header", err)
	}
	sum, err := Replay(ctx, cfg, ReplayOptions{})
	if !errors.Is(err, ErrNotDLQRecord) || sum.Replayed != 0 {
		t.Fatalf("Replay: %+v %v, want ErrNotDLQRecord and nothing replayed", sum, err)
	}
	if n := len(c.ReadAll(t, "t")); n != 0 {
		t.Fatalf("%d records replayed before the error", n)
	}
	cfg.SkipMalformed = true
	es, err := List(ctx, cfg, Filter{})
	if err != nil || len(es) != len(seedLetters()) {
		t.Fatalf("List with SkipMalformed: %d entries, %v", len(es), err)
	}
	sum, err = Replay(ctx, cfg, ReplayOptions{DryRun: true})
	if err != nil || sum.Malformed != 1 || sum.Scanned != len(seedLetters())+1 {
		t.Fatalf("dry run with SkipMalformed: %+v %v", sum, err)
	}
}

// readLedger returns the ledger records, failing when the topic is missing.
func ledgerRecords(t *testing.T, c *kafkatest.Cluster) map[string]ledgerEntry {
	t.Helper()
	out := map[string]ledgerEntry{}
	for _, m := range c.ReadAll(t, "t.dlq.replays") {
		var le ledgerEntry
		if err := json.Unmarshal(m.Value, &le); err != nil {
			t.Fatal(err)
		}
		out[string(m.Key)] = le
	}
	return out
}

func topicExists(t *testing.T, c *kafkatest.Cluster, topic string) bool {
	t.Helper()
	cl := &kafka.Client{Addr: kafka.TCP(c.Brokers...), Timeout: 5 * time.Second}
	_, err := topicPartitions(testwait.Context(t, 10*time.Second), cl, topic)
	if err != nil && !errors.Is(err, ErrTopicNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func TestReplay(t *testing.T) {
	c, cfg := setup(t)
	ctx := testwait.Context(t, 60*time.Second)
	opts := ReplayOptions{Filter: Filter{Codes: []int{51010}, Group: "chatgroupd"}}

	// A dry run reports and changes nothing: no main-topic record, no ledger topic.
	dry := opts
	dry.DryRun = true
	sum, err := Replay(ctx, cfg, dry)
	if err != nil {
		t.Fatal(err)
	}
	want := Summary{DryRun: true, Source: "t.dlq", Target: "t", TargetPartitions: 3, Partitioner: "murmur2",
		Scanned: 8, FilteredOut: 5, Matched: 3, Replayed: 2, OverMax: 1, ByPartitioner: 2,
		FallbackReasons: map[string]int{"letter does not record the topic's partition count": 2},
		ByEventType:     map[string]int{"contact_group.created": 2},
		OverMaxRecords:  sum.OverMaxRecords, ReplayedRecords: sum.ReplayedRecords}
	if diff := cmp.Diff(want, sum); diff != "" || len(sum.OverMaxRecords) != 1 || len(sum.ReplayedRecords) != 2 {
		t.Fatalf("dry run summary (-want +got):\n%s\ngot %+v", diff, sum)
	}
	if n := len(c.ReadAll(t, "t")); n != 0 {
		t.Fatalf("dry run produced %d records", n)
	}
	if topicExists(t, c, "t.dlq.replays") {
		t.Fatal("dry run created the ledger topic")
	}

	// The real run: alice and bob's 51010 records go back to the main topic, frank's (already
	// replayed 3 times) is skipped and named.
	sum, err = Replay(ctx, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Replayed != 2 || sum.OverMax != 1 || sum.AlreadyReplayed != 0 || sum.DryRun || sum.ByEventType["contact_group.created"] != 2 {
		t.Fatalf("summary %+v", sum)
	}
	dlqRecs := c.ReadAll(t, "t.dlq")
	byCoord := map[string]kafka.Message{}
	for _, m := range dlqRecs {
		byCoord[Coordinate("t.dlq", m.Partition, m.Offset)] = m
	}
	if !strings.HasPrefix(sum.OverMaxRecords[0], "t.dlq/") || string(byCoord[sum.OverMaxRecords[0]].Key) != "frank" {
		t.Errorf("over-max records %v, want frank's", sum.OverMaxRecords)
	}
	replays := c.ReadAll(t, "t")
	if len(replays) != 2 {
		t.Fatalf("%d records in the main topic, want 2", len(replays))
	}
	b := &kafka.Murmur2Balancer{}
	for _, r := range replays {
		of, _ := lastHeader(r.Headers, event.HeaderReplayOf)
		d, ok := byCoord[string(of)]
		if !ok {
			t.Fatalf("replay-of %q names no DLQ record", of)
		}
		e, _ := Parse(d)
		if string(r.Key) != string(e.Key) || string(r.Value) != string(e.Value) {
			t.Errorf("replay of %s changed key or value", of)
		}
		wantHeaders := append(append([]kafka.Header(nil), e.Headers...),
			kafka.Header{Key: event.HeaderReplayCount, Value: []byte("1")},
			kafka.Header{Key: event.HeaderReplayOf, Value: of})
		sameHeaders(t, r.Headers, wantHeaders)
		if p := b.Balance(kafka.Message{Key: r.Key}, 0, 1, 2); r.Partition != p {
			t.Errorf("replay of %s in partition %d, its key hashes to %d", r.Key, r.Partition, p)
		}
	}
	led := ledgerRecords(t, c)
	if len(led) != 2 {
		t.Fatalf("ledger %v, want 2 entries", led)
	}
	for _, r := range replays {
		of, _ := lastHeader(r.Headers, event.HeaderReplayOf)
		if le, ok := led[string(of)]; !ok || le.ReplayCount != 1 || le.Topic != "t" {
			t.Errorf("ledger entry for %s: %+v %v", of, le, ok)
		}
	}

	// The same command again, from "another machine" (a fresh config and connections), replays
	// nothing.
	cfg2 := ToolConfig{Brokers: c.Brokers, Topic: "t"}
	sum, err = Replay(ctx, cfg2, opts)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Replayed != 0 || sum.AlreadyReplayed != 2 || sum.OverMax != 1 || sum.Matched != 3 {
		t.Fatalf("second run summary %+v, want nothing replayed", sum)
	}
	if n := len(c.ReadAll(t, "t")); n != 2 {
		t.Fatalf("second run: %d main-topic records, want still 2", n)
	}
	es, err := List(ctx, cfg2, Filter{Codes: []int{51010}})
	if err != nil {
		t.Fatal(err)
	}
	var replayed []string
	for _, e := range es {
		if e.Replayed {
			replayed = append(replayed, e.Account())
		}
	}
	if slices.Sort(replayed); !cmp.Equal(replayed, []string{"alice", "bob"}) {
		t.Errorf("List marks %v replayed, want alice and bob", replayed)
	}

	// The ledger survives compaction (kfake compacts like Kafka: the newest value per key).
	c.Fake.Compact()
	if sum, err = Replay(ctx, cfg2, opts); err != nil || sum.Replayed != 0 {
		t.Fatalf("after compaction: %+v %v", sum, err)
	}

	// --again replays anyway, with the same replay-count (the consumer dedupes on it).
	again := opts
	again.Again = true
	again.Account = "bob"
	sum, err = Replay(ctx, cfg2, again)
	if err != nil || sum.Replayed != 1 {
		t.Fatalf("again: %+v %v", sum, err)
	}
	replays = c.ReadAll(t, "t")
	if len(replays) != 3 {
		t.Fatalf("after --again %d main-topic records, want 3", len(replays))
	}
	last := replays[0]
	for _, r := range replays {
		if string(r.Key) == "bob" {
			last = r
		}
	}
	if rc, _ := lastHeader(last.Headers, event.HeaderReplayCount); string(rc) != "1" {
		t.Errorf("--again replay-count %q, want 1", rc)
	}
}

func TestReplayLimitAndMaxReplays(t *testing.T) {
	c, cfg := setup(t)
	ctx := testwait.Context(t, 60*time.Second)
	sum, err := Replay(ctx, cfg, ReplayOptions{Limit: 2, MaxReplays: 4})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Matched != 8 || sum.Replayed != 2 || sum.OverLimit != 6 || sum.OverMax != 0 {
		t.Fatalf("limit 2: %+v", sum)
	}
	if n := len(c.ReadAll(t, "t")); n != 2 {
		t.Fatalf("%d replays, want 2", n)
	}
	// The rest, on the next run; frank's record (dlq-replay-count 3) passes only because
	// MaxReplays is 4 here.
	sum, err = Replay(ctx, cfg, ReplayOptions{MaxReplays: 4})
	if err != nil || sum.Replayed != 6 || sum.AlreadyReplayed != 2 {
		t.Fatalf("second run: %+v %v", sum, err)
	}
	for _, r := range c.ReadAll(t, "t") {
		if string(r.Key) == "frank" {
			if rc, _ := lastHeader(r.Headers, event.HeaderReplayCount); string(rc) != "4" {
				t.Errorf("frank's replay-count %q, want 4", rc)
			}
		}
	}
	if _, err := Replay(ctx, cfg, ReplayOptions{MaxReplays: -1}); err == nil {
		t.Error("negative max replays accepted")
	}
	if _, err := Replay(ctx, cfg, ReplayOptions{Filter: Filter{Reasons: []string{"bogus"}}}); !errors.Is(err, ErrUnknownReason) {
		t.Errorf("unknown reason: %v", err)
	}
}

func TestReplayTargetMissing(t *testing.T) {
	c, cfg := setup(t)
	cfg.DLQTopic = "t.dlq"
	cfg.Topic = "gone"
	_, err := Replay(testwait.Context(t, 30*time.Second), cfg, ReplayOptions{})
	if !errors.Is(err, ErrTopicNotFound) || !strings.Contains(err.Error(), "gone") {
		t.Fatalf("Replay to a missing topic: %v", err)
	}
	if topicExists(t, c, "t.dlq.replays") {
		t.Fatal("a failed replay created the ledger")
	}
}

// When the main topic refuses the writes, nothing is recorded in the ledger, the error says so and
// a later run replays them.
func TestReplayWriteFailureLeavesLedgerAlone(t *testing.T) {
	c, cfg := setup(t)
	ctx := testwait.Context(t, 60*time.Second)
	var failing atomic.Bool
	failing.Store(true)
	c.Fake.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.Fake.KeepControl()
		if !failing.Load() {
			return nil, nil, false
		}
		return produceError(req, "t")
	})
	sum, err := Replay(ctx, cfg, ReplayOptions{Filter: Filter{Account: "alice"}})
	if err == nil || sum.Replayed != 0 || !strings.Contains(err.Error(), "not acknowledged") {
		t.Fatalf("Replay with a failing main topic: %+v %v", sum, err)
	}
	if n := len(ledgerRecords(t, c)); n != 0 {
		t.Fatalf("%d ledger entries after a failed replay", n)
	}
	failing.Store(false)
	sum, err = Replay(ctx, cfg, ReplayOptions{Filter: Filter{Account: "alice"}})
	if err != nil || sum.Replayed != 2 {
		t.Fatalf("retry: %+v %v", sum, err)
	}
}

func ExampleReplay() {
	cfg := ToolConfig{Brokers: []string{"127.0.0.1:9092"}, Topic: "chat.contact-groups"}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// After raising the account's group quota: put its 51010 records back, at most once each.
	sum, err := Replay(ctx, cfg, ReplayOptions{Filter: Filter{Codes: []int{51010}, Account: "alice"}})
	if err != nil {
		fmt.Println("replay:", err)
		return
	}
	fmt.Printf("replayed %d of %d matching records\n", sum.Replayed, sum.Matched)
}

// The tools and the writer speak through the given Transport only, so SASL (and TLS, configured
// on the same Transport) reaches every request: metadata, offsets, fetches, produces, topic
// creation.
func TestToolsOverSASL(t *testing.T) {
	c := kafkatest.New(t, kfake.EnableSASL(), kfake.Superuser("PLAIN", "ops", "s3cret"), kfake.SeedTopics(2, "t", "t.dlq"))
	rt := &kafka.Transport{SASL: plain.Mechanism{Username: "ops", Password: "s3cret"}, DialTimeout: 2 * time.Second}
	defer rt.CloseIdleConnections()
	ctx := testwait.Context(t, 60*time.Second)

	w, err := NewWriter(Config{Brokers: c.Brokers, Topic: "t.dlq", GroupID: "chatgroupd", Transport: rt})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Check(ctx); err != nil {
		t.Fatalf("Check over SASL: %v", err)
	}
	orig := origMessage()
	orig.Topic, orig.Partition = "t", 1
	if err := w.DeadLetter(ctx, orig, Letter{Reason: ReasonRejected, Code: 51010, FromAccount: "alice"}); err != nil {
		t.Fatalf("DeadLetter over SASL: %v", err)
	}
	cfg := ToolConfig{Brokers: c.Brokers, Topic: "t", Transport: rt}
	es, err := List(ctx, cfg, Filter{})
	if err != nil || len(es) != 1 {
		t.Fatalf("List over SASL: %v %v", es, err)
	}
	sum, err := Replay(ctx, cfg, ReplayOptions{})
	if err != nil || sum.Replayed != 1 || sum.ToOriginalPartition != 1 {
		t.Fatalf("Replay over SASL: %+v %v", sum, err)
	}
	if sum, err = Replay(ctx, cfg, ReplayOptions{}); err != nil || sum.AlreadyReplayed != 1 {
		t.Fatalf("second Replay over SASL: %+v %v", sum, err)
	}

	// Without credentials the tools fail, quickly and with the broker named.
	_, err = List(ctx, ToolConfig{Brokers: c.Brokers, Topic: "t", DialTimeout: time.Second}, Filter{})
	if err == nil || !strings.Contains(err.Error(), c.Brokers[0]) || !strings.Contains(err.Error(), "SASL") {
		t.Fatalf("List without SASL: %v", err)
	}
}

// TestReplaySkipsTruncated: a letter written without its value can't be replayed (it would only
// come back as invalid); Replay counts it apart.
func TestReplaySkipsTruncated(t *testing.T) {
	c := kafkatest.New(t)
	c.CreateTopic(t, "t", 1)
	c.CreateTopic(t, "t.dlq", 1)
	orig := kafka.Message{Topic: "t", Offset: 5, Time: t0, Key: []byte("alice"), Value: []byte(`{"big":1}`)}
	l := Letter{Reason: ReasonExhausted, Code: CodeTimeout, Info: "budget", EventID: "e", FromAccount: "alice"}
	whole := orig
	whole.Offset = 6
	c.Produce(t, "t.dlq", record(orig, l, "chatgroupd", t0, dropValue), Record(whole, l, "chatgroupd", t0))
	sum, err := Replay(testwait.Context(t, 30*time.Second), ToolConfig{Brokers: c.Brokers, Topic: "t", DialTimeout: 2 * time.Second},
		ReplayOptions{Filter: Filter{Codes: []int{CodeTimeout}}})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Truncated != 1 || sum.Replayed != 1 || sum.Matched != 2 {
		t.Fatalf("summary %+v, want the truncated letter skipped and the whole one replayed", sum)
	}
	got := c.ReadAll(t, "t")
	if len(got) != 1 || string(got[0].Value) != `{"big":1}` {
		t.Fatalf("replayed %v", got)
	}
}

// TestReplayByEventType: a replay filtered by type takes only those letters and counts them by
// type, in the plan and in the result.
func TestReplayByEventType(t *testing.T) {
	c, cfg := setup(t)
	ctx := testwait.Context(t, 60*time.Second)
	opts := ReplayOptions{Filter: Filter{EventTypes: []event.Type{event.TypeContactGroupContactsAdded, event.TypeContactGroupDeleted}}}
	var planned Summary
	opts.Plan = func(s Summary) error { planned = s; return nil }
	sum, err := Replay(ctx, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"contact_group.contacts_added": 1, "contact_group.deleted": 1}
	if diff := cmp.Diff(want, planned.ByEventType); diff != "" {
		t.Errorf("plan by type (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, sum.ByEventType); diff != "" || sum.Replayed != 2 {
		t.Errorf("replayed %d, by type (-want +got):\n%s", sum.Replayed, diff)
	}
	var got []event.Type
	for _, m := range c.ReadAll(t, "t") {
		got = append(got, event.PeekType(m.Value))
	}
	slices.Sort(got)
	if diff := cmp.Diff([]event.Type{event.TypeContactGroupContactsAdded, event.TypeContactGroupDeleted}, got); diff != "" {
		t.Errorf("main topic (-want +got):\n%s", diff)
	}
}
