package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
)

func TestLoadgenCommand(t *testing.T) {
	k := kafkatest.New(t)
	k.CreateTopic(t, "events", 2)
	var out bytes.Buffer
	err := run(t.Context(), []string{"loadgen", "--brokers", strings.Join(k.Brokers, ","), "--topic", "events",
		"--count", "250", "--seed", "3"}, mapEnv(nil), &out, &out)
	if err != nil {
		t.Fatalf("loadgen: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "produced 250 records to events") {
		t.Fatalf("summary: %s", out.String())
	}
	if got := len(k.ReadAll(t, "events")); got != 250 {
		t.Fatalf("topic holds %d records", got)
	}
	for _, args := range [][]string{{"--count", "5"}, {"--brokers", "a:1", "--invalid-rate", "0.9"}} {
		if err := run(t.Context(), append([]string{"loadgen"}, args...), mapEnv(nil), &out, &out); err == nil {
			t.Errorf("loadgen %v: no error", args)
		}
	}
}

// TestLoadgenLifecycleMix: --mix lifecycle produces every event type, keyed by account, each
// account's events in seq order within its partition, and the summary counts them by type.
func TestLoadgenLifecycleMix(t *testing.T) {
	k := kafkatest.New(t)
	k.CreateTopic(t, "events", 3)
	var out bytes.Buffer
	err := run(t.Context(), []string{"loadgen", "--brokers", strings.Join(k.Brokers, ","), "--topic", "events",
		"--count", "600", "--seed", "4", "--accounts", "10", "--mix", "lifecycle", "--swap-rate", "0", "--duplicate-rate", "0", "--invalid-rate", "0"},
		mapEnv(nil), &out, &out)
	if err != nil {
		t.Fatalf("loadgen: %v\n%s", err, out.String())
	}
	types := map[event.Type]int{}
	last := map[string]int64{}
	for _, m := range k.ReadAll(t, "events") {
		e, err := event.Parse(m.Value)
		if err != nil {
			t.Fatalf("record %s: %v", m.Value, err)
		}
		if string(m.Key) != e.FromAccount {
			t.Fatalf("record keyed %q for account %q", m.Key, e.FromAccount)
		}
		if e.Seq != last[e.FromAccount]+1 {
			t.Fatalf("%s: seq %d after %d", e.FromAccount, e.Seq, last[e.FromAccount])
		}
		last[e.FromAccount] = e.Seq
		types[e.EventType]++
	}
	for _, typ := range event.Types() {
		if types[typ] == 0 {
			t.Errorf("no %s in %v", typ, types)
		}
	}
	want := fmt.Sprintf("valid by type (mix lifecycle): created %d, renamed %d, contacts_added %d, contacts_removed %d, deleted %d",
		types[event.TypeContactGroupCreated], types[event.TypeContactGroupRenamed], types[event.TypeContactGroupContactsAdded],
		types[event.TypeContactGroupContactsRemoved], types[event.TypeContactGroupDeleted])
	if !strings.Contains(out.String(), "produced 600 records to events") || !strings.Contains(out.String(), want) {
		t.Fatalf("summary:\n%s\nwant a line %q", out.String(), want)
	}
	for _, mix := range []string{"renamed=1", "created=1,moved=1", "created=-1"} {
		err := run(t.Context(), []string{"loadgen", "--brokers", "a:1", "--mix", mix}, mapEnv(nil), &out, &out)
		if err == nil || !strings.Contains(err.Error(), "mix") {
			t.Errorf("--mix %s: %v", mix, err)
		}
	}
}
