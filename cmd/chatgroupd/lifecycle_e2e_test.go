package main

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/loadgen"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
)

// TestServiceLifecycleEndToEnd: contract v2 through the whole pipeline. A lifecycle mix
// (creates, adds, removes, renames, deletes) with duplicates and swapped seqs goes through
// Kafka, the consumer and the dispatcher to the simulator, which applies a fifth of all
// creates, updates and deletes and then answers 50005. Every valid event ends applied, and
// the simulator's groups are the model's: each account's events applied once, in seq order.
func TestServiceLifecycleEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole pipeline")
	}
	h := startService(t, "k", "k", imsim.Faults{Latency: time.Millisecond, ApplyThenFailRate: 0.2,
		APIs: []string{im.APICreate, im.APIUpdate, im.APIDelete}})
	testwait.For(t, 30*time.Second, "/readyz 200", func() bool { code, _ := h.get("/readyz"); return code == 200 })
	gen, err := loadgen.New(loadgen.Config{Accounts: 10, GroupsPerAccount: 6, MaxContacts: 4, DuplicateRate: 0.05,
		SwapRate: 0.05, Mix: loadgen.MixLifecycle, KeepState: true, Seed: 19})
	if err != nil {
		t.Fatal(err)
	}
	const n = 400
	var msgs []kafka.Message
	for range n {
		r := gen.Next()
		msgs = append(msgs, kafka.Message{Key: r.Key, Value: r.Value})
	}
	for _, r := range gen.Flush() {
		msgs = append(msgs, kafka.Message{Key: r.Key, Value: r.Value})
	}
	h.kafka.Produce(t, h.topic, msgs...)
	want := gen.Expect()
	testwait.For(t, 90*time.Second, "every record to end", func() bool {
		return h.scrape().Sum("chatgroupd_events_processed_total") >= float64(len(msgs))
	})
	s := h.scrape()
	if got := s.Sum("chatgroupd_events_processed_total", "outcome", "applied"); got != float64(want.Valid) {
		t.Errorf("applied %v, want %d (%+v)", got, want.Valid, want.ByType)
	}
	if got := s.Sum("chatgroupd_events_processed_total", "outcome", "duplicate"); got != float64(want.Duplicates) {
		t.Errorf("duplicates %v, want %d", got, want.Duplicates)
	}
	state := gen.State()
	t.Logf("%d records: %+v; %d accounts in the model", len(msgs), want, len(state))
	if len(state) < 10 || want.ByType.Renamed == 0 || want.ByType.Deleted == 0 || want.ByType.ContactsRemoved == 0 {
		t.Fatalf("the load lacks a type or accounts: %+v, %d accounts", want.ByType, len(state))
	}
	for account, groups := range state {
		wantGroups := map[string][]string{}
		for name, cs := range groups {
			var keys []string
			for _, c := range cs {
				keys = append(keys, im.ContactItem{Type: c.Type, ToAccount: c.ToAccount, ToGroupID: c.ToGroupID}.Key())
			}
			slices.Sort(keys)
			wantGroups[name] = keys
		}
		got := map[string][]string{}
		for _, g := range h.sim.Groups(account) {
			keys := []string{}
			for _, c := range g.Contacts {
				keys = append(keys, c.Key())
			}
			slices.Sort(keys)
			got[g.Name] = keys
		}
		if diff := cmp.Diff(wantGroups, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s's groups (-model +simulator):\n%s", account, diff)
		}
	}
	if st := h.sim.Stats(); st.APIs[im.APIUpdate].Codes[im.CodeTimeout] == 0 || st.DuplicateCreates != 0 {
		t.Errorf("simulator: %d updates applied then answered 50005 (want some), %d duplicate creates (want 0)",
			st.APIs[im.APIUpdate].Codes[im.CodeTimeout], st.DuplicateCreates)
	}
}
