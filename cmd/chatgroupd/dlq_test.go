package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/chatgroupd/chatgroupd/dlq"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
)

// dlqTestCluster starts Kafka with topic "t" and a DLQ "t.dlq" holding three dead letters:
// alice 51010 (rejected), bob 51008 (partial), carol invalid.
func dlqTestCluster(t *testing.T) *kafkatest.Cluster {
	t.Helper()
	c := kafkatest.New(t)
	c.CreateTopic(t, "t", 2)
	c.CreateTopic(t, "t.dlq", 2)
	at := time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)
	mk := func(account string, i int, l dlq.Letter) kafka.Message {
		ev := event.Event{EventID: "e-" + account, EventType: event.TypeContactGroupCreated, FromAccount: account,
			GroupName: "friends", Contacts: []event.Contact{{Type: 1, ToAccount: "x"}}}
		v, _ := ev.Marshal()
		l.EventID, l.FromAccount = ev.EventID, account
		orig := kafka.Message{Topic: "t", Partition: 0, Offset: int64(i), Time: at, Key: []byte(account), Value: v}
		return dlq.Record(orig, l, "chatgroupd", at.Add(time.Duration(i)*time.Hour))
	}
	c.Produce(t, "t.dlq",
		mk("alice", 0, dlq.Letter{Reason: dlq.ReasonRejected, Code: 51010, Info: "alice already has 20 conversation groups, the most allowed per user", Attempts: 1}),
		mk("bob", 1, dlq.Letter{Reason: dlq.ReasonPartial, Code: 51008, Info: "1 of 1\nconversations failed", Attempts: 2, Result: []byte(`{"GroupId":"7"}`)}),
		mk("carol", 2, dlq.Letter{Reason: dlq.ReasonInvalid, Info: "invalid event: contacts: required field missing"}),
	)
	return c
}

func runDLQTest(t *testing.T, getenv env, args ...string) (string, string, error) {
	t.Helper()
	ctx := testwait.Context(t, 60*time.Second)
	var out, errOut bytes.Buffer
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	err := runDLQ(ctx, args, getenv, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestDLQListTable(t *testing.T) {
	c := dlqTestCluster(t)
	b := strings.Join(c.Brokers, ",")
	out, _, err := runDLQTest(t, nil, "list", "--brokers", b, "--topic", "t")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 {
		t.Fatalf("table:\n%s\nwant a header, 3 rows and a count", out)
	}
	for _, col := range []string{"TIME", "PARTITION/OFFSET", "ACCOUNT", "REASON", "CODE", "INFO", "ATTEMPTS", "REPLAYED"} {
		if !strings.Contains(lines[0], col) {
			t.Errorf("header %q lacks %s", lines[0], col)
		}
	}
	if !strings.Contains(out, "alice already has 20 conversation groups, the most allowed per user") {
		t.Errorf("INFO cut before its useful part:\n%s", out)
	}
	if !strings.Contains(out, "1 of 1 conversations failed") {
		t.Errorf("newline in info not flattened:\n%s", out)
	}
	if !strings.Contains(out, "2026-11-29T09:00:00Z") || lines[4] != "3 record(s)" {
		t.Errorf("table:\n%s", out)
	}

	// Filters, with the brokers from the environment.
	getenv := func(k string) string {
		if k == "CHATGROUPD_BROKERS" {
			return b
		}
		return ""
	}
	out, _, err = runDLQTest(t, getenv, "list", "--topic", "t", "--reason", "partial,invalid", "--code", "51008")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "bob") || strings.Contains(out, "alice") || strings.Contains(out, "carol") || !strings.Contains(out, "1 record(s)") {
		t.Errorf("filtered table:\n%s", out)
	}
	out, _, err = runDLQTest(t, getenv, "list", "--topic", "t", "--since", "2026-11-29T09:00:00Z", "--until", "2026-11-29T10:00:00Z")
	if err != nil || !strings.Contains(out, "bob") || !strings.Contains(out, "1 record(s)") {
		t.Errorf("time window: %v\n%s", err, out)
	}
	out, _, err = runDLQTest(t, getenv, "list", "--topic", "t", "--group", "someone-else")
	if err != nil || !strings.Contains(out, "0 record(s)") {
		t.Errorf("other group: %v\n%s", err, out)
	}
}

func TestDLQListJSON(t *testing.T) {
	c := dlqTestCluster(t)
	out, _, err := runDLQTest(t, nil, "list", "--brokers", strings.Join(c.Brokers, ","), "--topic", "t", "--output", "json", "--account", "bob")
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(got) != 1 {
		t.Fatalf("%d entries, want bob's only", len(got))
	}
	want := map[string]any{"account": "bob", "reason": "partial", "code": 51008.0, "attempts": 2.0,
		"event_id": "e-bob", "replayed": false, "key": "bob", "consumer_group": "chatgroupd", "replay_count": 0.0}
	// Only the fields that do not depend on the broker (offsets, times) are compared.
	if diff := cmp.Diff(want, got[0], cmpopts.IgnoreMapEntries(func(k string, _ any) bool { _, ok := want[k]; return !ok })); diff != "" {
		t.Errorf("entry (-want +got):\n%s", diff)
	}
	e := got[0]
	if r, _ := json.Marshal(e["result"]); string(r) != `{"GroupId":"7"}` {
		t.Errorf("result = %s", r)
	}
	if _, err := event.Parse([]byte(e["value"].(string))); err != nil {
		t.Errorf("value is not the original event: %v", err)
	}
	out, _, err = runDLQTest(t, nil, "list", "--brokers", strings.Join(c.Brokers, ","), "--topic", "t", "--output", "json", "--account", "nobody")
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Errorf("no match: %v %q, want []", err, out)
	}
}

func TestDLQReplayCommand(t *testing.T) {
	c := dlqTestCluster(t)
	b := strings.Join(c.Brokers, ",")
	args := []string{"replay", "--brokers", b, "--topic", "t", "--code", "51010", "--yes"}

	out, _, err := runDLQTest(t, nil, append(args, "--dry-run")...)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "DRY RUN") || !dlqLineHas(out, "would replay", "1") || !dlqLineHas(out, "filtered out", "2") {
		t.Errorf("dry run summary:\n%s", out)
	}
	if n := len(c.ReadAll(t, "t")); n != 0 {
		t.Fatalf("dry run produced %d records", n)
	}

	out, _, err = runDLQTest(t, nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	if !dlqLineHas(out, "replayed", "1") || !dlqLineHas(out, "matched", "1") {
		t.Errorf("summary:\n%s", out)
	}
	recs := c.ReadAll(t, "t")
	if len(recs) != 1 || string(recs[0].Key) != "alice" {
		t.Fatalf("main topic: %v", recs)
	}

	out, _, err = runDLQTest(t, nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	if !dlqLineHas(out, "replayed", "0") || !dlqLineHas(out, "skipped: already replayed", "1") {
		t.Errorf("second run summary:\n%s", out)
	}
	out, _, _ = runDLQTest(t, nil, "list", "--brokers", b, "--topic", "t", "--account", "alice")
	if !strings.Contains(out, "yes") {
		t.Errorf("list does not show alice's record as replayed:\n%s", out)
	}

	out, _, err = runDLQTest(t, nil, append(args, "--again", "--output", "json")...)
	if err != nil {
		t.Fatal(err)
	}
	var sum dlq.Summary
	if err := json.Unmarshal([]byte(out), &sum); err != nil || sum.Replayed != 1 {
		t.Fatalf("--again json summary %+v %v:\n%s", sum, err, out)
	}
	if n := len(c.ReadAll(t, "t")); n != 2 {
		t.Fatalf("%d main-topic records after --again, want 2", n)
	}
	out, _, err = runDLQTest(t, nil, "replay", "--brokers", b, "--topic", "t", "--max-replays", "1", "--again", "--reason", "rejected", "--dry-run")
	if err != nil || !dlqLineHas(out, "would replay", "1") {
		t.Errorf("max-replays 1 still allows a first replay: %v\n%s", err, out)
	}
}

// dlqLineHas reports whether some line of out starts with label and then shows n.
func dlqLineHas(out, label, n string) bool {
	for _, l := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(l, label); ok {
			if f := strings.Fields(rest); len(f) > 0 && f[0] == n {
				return true
			}
		}
	}
	return false
}

func TestDLQBadInput(t *testing.T) {
	c := dlqTestCluster(t)
	b := strings.Join(c.Brokers, ",")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no subcommand", nil, "no subcommand"},
		{"unknown subcommand", []string{"purge"}, `unknown subcommand "purge"`},
		{"no brokers", []string{"list"}, "--brokers is required"},
		{"unknown reason", []string{"list", "--brokers", b, "--reason", "rejected,lost"}, `unknown reason "lost"`},
		{"bad code", []string{"replay", "--brokers", b, "--code", "51010,x"}, `--code "x"`},
		{"bad since", []string{"list", "--brokers", b, "--since", "yesterday"}, `--since "yesterday"`},
		{"bad until", []string{"list", "--brokers", b, "--until", "2026-13-01"}, `--until "2026-13-01"`},
		{"empty window", []string{"list", "--brokers", b, "--since", "1h", "--until", "2h"}, "is not before"},
		{"bad output", []string{"list", "--brokers", b, "--output", "xml"}, `--output "xml"`},
		{"bad log level", []string{"list", "--brokers", b, "--log-level", "loud"}, "--log-level"},
		{"max replays 0", []string{"replay", "--brokers", b, "--max-replays", "0"}, `--max-replays "0": want an integer from 1 to 1000`},
		{"negative limit", []string{"replay", "--brokers", b, "--limit", "-1"}, `--limit "-1": want an integer from 0`},
		{"replay flag on list", []string{"list", "--brokers", b, "--dry-run"}, "unknown flag --dry-run"},
		{"stray argument", []string{"list", "--brokers", b, "extra"}, "unexpected arguments"},
		{"missing DLQ topic", []string{"list", "--brokers", b, "--topic", "nope"}, "nope.dlq: topic does not exist"},
		{"missing replay target", []string{"replay", "--brokers", b, "--topic", "nope", "--dlq-topic", "t.dlq"}, "replay target: nope: topic does not exist"},
		{"unreachable brokers", []string{"list", "--brokers", dead}, dead},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, _, err := runDLQTest(t, nil, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("took %v to fail", d)
			}
		})
	}
	if _, _, err := runDLQTest(t, nil, "list", "--help"); !errors.Is(err, errHelp) {
		t.Errorf("--help: %v, want errHelp", err)
	}
	if n := len(c.ReadAll(t, "t")); n != 0 {
		t.Fatalf("bad input produced %d records", n)
	}
}

// A record in the DLQ without our headers stops list and replay with a message naming it, and
// replays nothing; --skip-malformed steps over it.
func TestDLQMalformedRecordCommand(t *testing.T) {
	c := dlqTestCluster(t)
	c.Produce(t, "t.dlq", kafka.Message{Key: []byte("zed"), Value: []byte(`{"event_id":"x"}`)})
	b := strings.Join(c.Brokers, ",")
	for _, sub := range []string{"list", "replay"} {
		_, _, err := runDLQTest(t, nil, sub, "--brokers", b, "--topic", "t")
		if err == nil || !strings.Contains(err.Error(), "not a chatgroupd DLQ record") || !strings.Contains(err.Error(), "t.dlq") {
			t.Errorf("%s: %v", sub, err)
		}
	}
	if n := len(c.ReadAll(t, "t")); n != 0 {
		t.Fatalf("replay produced %d records despite the malformed one", n)
	}
	out, _, err := runDLQTest(t, nil, "replay", "--brokers", b, "--topic", "t", "--skip-malformed", "--dry-run")
	if err != nil || !dlqLineHas(out, "malformed", "1") || !dlqLineHas(out, "would replay", "3") {
		t.Errorf("--skip-malformed: %v\n%s", err, out)
	}
}

func TestDLQParseTime(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Time
		bad  bool
	}{
		{"", time.Time{}, false},
		{"2026-11-28T10:00:00Z", time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC), false},
		{"2026-11-28T10:00:00+08:00", time.Date(2026, 11, 28, 2, 0, 0, 0, time.UTC), false},
		{"24h", now.Add(-24 * time.Hour), false},
		{"90m", now.Add(-90 * time.Minute), false},
		{"7d", now.Add(-7 * 24 * time.Hour), false},
		{"-1h", time.Time{}, true},
		{"2026-11-28", time.Time{}, true},
		{"soon", time.Time{}, true},
	}
	for _, tc := range cases {
		got, err := dlqParseTime("--since", tc.in, now)
		if (err != nil) != tc.bad || !got.Equal(tc.want) {
			t.Errorf("%q: %v %v, want %v bad=%v", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

// The shared Kafka flags reach the tools: list and replay work against a SASL cluster with the
// password from the environment, and fail clearly without it.
func TestDLQOverSASL(t *testing.T) {
	c := kafkatest.New(t, kfake.EnableSASL(), kfake.Superuser("PLAIN", "ops", "s3cret"), kfake.SeedTopics(1, "t", "t.dlq"))
	rt := &kafka.Transport{SASL: plain.Mechanism{Username: "ops", Password: "s3cret"}}
	defer rt.CloseIdleConnections()
	w, err := dlq.NewWriter(dlq.Config{Brokers: c.Brokers, Topic: "t.dlq", GroupID: "chatgroupd", Transport: rt})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx := testwait.Context(t, 30*time.Second)
	orig := kafka.Message{Topic: "t", Key: []byte("alice"), Value: []byte(`{}`), Time: time.Now()}
	if err := w.DeadLetter(ctx, orig, dlq.Letter{Reason: dlq.ReasonRejected, Code: 51010, FromAccount: "alice"}); err != nil {
		t.Fatal(err)
	}
	getenv := func(k string) string {
		return map[string]string{"CHATGROUPD_BROKERS": strings.Join(c.Brokers, ","), "CHATGROUPD_KAFKA_SASL_PASSWORD": "s3cret"}[k]
	}
	sasl := []string{"--topic", "t", "--kafka-sasl-mechanism", "plain", "--kafka-sasl-username", "ops", "--kafka-sasl-allow-plaintext"}
	out, _, err := runDLQTest(t, getenv, append([]string{"list"}, sasl...)...)
	if err != nil || !strings.Contains(out, "alice") {
		t.Fatalf("list over SASL: %v\n%s", err, out)
	}
	out, _, err = runDLQTest(t, getenv, append([]string{"replay", "--yes"}, sasl...)...)
	if err != nil || !dlqLineHas(out, "replayed", "1") {
		t.Fatalf("replay over SASL: %v\n%s", err, out)
	}
	_, _, err = runDLQTest(t, getenv, "list", "--topic", "t")
	if err == nil || !strings.Contains(err.Error(), "SASL") {
		t.Fatalf("list without SASL flags: %v", err)
	}
}

// TestDLQInfoCell: the table's INFO cell keeps the server's words, not the IM prefix that repeats
// the CODE column (the old 60-character cut ended just before them).
func TestDLQInfoCell(t *testing.T) {
	for _, tc := range []struct{ info, want string }{
		{"im create_contact_group: code 51010 (permanent): Err_SNS_ContactGroup_Count_Limit: the user has 20 groups", "Err_SNS_ContactGroup_Count_Limit: the user has 20 groups"},
		{"retry budget 1h0m0s spent after 9 attempts; last: im create_contact_group: code 50004 (transient): internal error", "retry budget 1h0m0s spent after 9 attempts; last: internal error"},
		{"invalid event: group_name: 33 bytes, at most 32 allowed", "invalid event: group_name: 33 bytes, at most 32 allowed"},
	} {
		if got := dlqInfoCell(tc.info); got != tc.want {
			t.Errorf("dlqInfoCell(%q) = %q, want %q", tc.info, got, tc.want)
		}
	}
	if got := dlqInfoCell(strings.Repeat("x", 200)); len([]rune(got)) != 80 {
		t.Errorf("long info: %d runes, want 80", len([]rune(got)))
	}
}
