package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
)

// TestDeadLetteredCreateThenReplayInOrder runs the operator's case end to end through the
// service: a create is rejected (its account is not imported: 50001), so the rename that follows
// finds no group (51009, rejected too). Both letters carry their type; the metrics count them by
// type. Once the account is fixed, replaying the create alone and then the 51009 letter leaves
// the user with the renamed group, each event applied once.
func TestDeadLetteredCreateThenReplayInOrder(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole pipeline")
	}
	h := startService(t, "k", "k", imsim.Faults{})
	testwait.For(t, 30*time.Second, "/readyz 200", func() bool { code, _ := h.get("/readyz"); return code == 200 })
	h.sim.SetAccountFault("u1", im.CodeNotImported, time.Hour, im.APICreate)

	created := event.NewCreated("c-1", "u1", "friends", event.ToAccount("bob"))
	renamed := event.NewRenamed("r-1", "u1", "friends", "besties")
	created.Seq, renamed.Seq = 1, 2
	var msgs []kafka.Message
	for _, e := range []*event.Event{created, renamed} {
		m, err := e.Message()
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	h.kafka.Produce(t, h.topic, msgs...)
	testwait.For(t, 60*time.Second, "both dead-lettered", func() bool {
		return h.scrape().Sum("chatgroupd_dlq_records_total", "reason", "rejected") == 2
	})
	s := h.scrape()
	for _, c := range []struct{ typ, code string }{{"contact_group.created", "50001"}, {"contact_group.renamed", "51009"}} {
		if n := s.Sum("chatgroupd_dlq_records_total", "reason", "rejected", "code", c.code, "event_type", c.typ); n != 1 {
			t.Errorf("dlq_records_total{rejected,%s,%s} = %v, want 1", c.code, c.typ, n)
		}
		if n := s.Sum("chatgroupd_events_processed_total", "outcome", "rejected", "event_type", c.typ); n != 1 {
			t.Errorf("events_processed_total{rejected,%s} = %v, want 1", c.typ, n)
		}
	}

	replay := func(args ...string) string {
		t.Helper()
		out, _, err := runDLQTest(t, nil, append([]string{"replay", "--brokers", strings.Join(h.kafka.Brokers, ","),
			"--topic", h.topic, "--group", h.flags.group, "--account", "u1", "--yes"}, args...)...)
		if err != nil {
			t.Fatalf("replay %v: %v\n%s", args, err, out)
		}
		return out
	}
	h.sim.SetAccountFault("u1", 0, 0) // the account is imported now
	if out := replay("--event-type", "created"); !dlqLineHas(out, "replayed", "1") {
		t.Fatalf("create replay:\n%s", out)
	}
	names := func() []string {
		var out []string
		for _, g := range h.sim.Groups("u1") {
			out = append(out, g.Name)
		}
		return out
	}
	testwait.For(t, 60*time.Second, "the create applied", func() bool { return slices.Equal(names(), []string{"friends"}) })
	if out := replay("--code", "51009"); !dlqLineHas(out, "replayed", "1") {
		t.Fatalf("rename replay:\n%s", out)
	}
	testwait.For(t, 60*time.Second, "the rename applied", func() bool { return slices.Equal(names(), []string{"besties"}) })
	testwait.For(t, 30*time.Second, "applied counted by type", func() bool {
		s := h.scrape()
		return s.Sum("chatgroupd_events_processed_total", "outcome", "applied", "event_type", "contact_group.created") == 1 &&
			s.Sum("chatgroupd_events_processed_total", "outcome", "applied", "event_type", "contact_group.renamed") == 1
	})
	if st := h.sim.Stats(); st.GroupsCreated != 1 || st.DuplicateCreates != 0 {
		t.Errorf("simulator: %d groups created, %d duplicate creates; want 1 and 0", st.GroupsCreated, st.DuplicateCreates)
	}
}
