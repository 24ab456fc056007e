package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/dispatcher"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
	"github.com/chatgroupd/chatgroupd/metrics"
	"github.com/chatgroupd/chatgroupd/ratelimit"
)

// prefixAccount is one account of TestUncertainPrefixTakeover: base was applied and committed
// long ago; of evs (uncertain for the successor) the previous owner applied the first applied,
// then died before committing any. hidden: a later applied record hides an earlier one's effect
// from that record's own existence check.
type prefixAccount struct {
	name    string
	evs     []event.Event
	applied int
	hidden  bool
}

func lc(typ event.Type, group, newName string, who ...string) event.Event {
	ev := event.Event{EventType: typ, GroupName: group, NewGroupName: newName}
	for _, w := range who {
		ev.Contacts = append(ev.Contacts, event.Contact{Type: event.ContactC2C, ToAccount: w})
	}
	return ev
}

var (
	pfCreate = func(g string, who ...string) event.Event { return lc(event.TypeContactGroupCreated, g, "", who...) }
	pfRename = func(g, to string) event.Event { return lc(event.TypeContactGroupRenamed, g, to) }
	pfAdd    = func(g string, who ...string) event.Event {
		return lc(event.TypeContactGroupContactsAdded, g, "", who...)
	}
	pfRemove = func(g string, who ...string) event.Event {
		return lc(event.TypeContactGroupContactsRemoved, g, "", who...)
	}
	pfDelete = func(g string) event.Event { return lc(event.TypeContactGroupDeleted, g, "") }
)

// prefixAccounts share one partition; each starts with group "friends" holding bob and dave.
var prefixAccounts = []prefixAccount{
	{"create-rename", []event.Event{pfCreate("g3", "bob"), pfRename("g3", "g4")}, 2, true},
	{"rename-delete", []event.Event{pfRename("friends", "pals"), pfDelete("pals")}, 2, true},
	{"delete-create-same-name", []event.Event{pfDelete("friends"), pfCreate("friends", "carol")}, 2, true},
	{"noop-add-middle", []event.Event{pfRemove("friends", "dave"), pfAdd("friends", "bob"), pfRename("friends", "pals")}, 3, true},
	{"noop-add-middle-first", []event.Event{pfRemove("friends", "dave"), pfAdd("friends", "bob"), pfRename("friends", "pals")}, 1, false},
	{"mix-prefix", []event.Event{pfAdd("friends", "carol"), pfRename("friends", "pals"), pfCreate("friends", "erin"),
		pfRemove("pals", "bob"), pfDelete("friends")}, 3, true},
	{"mix-none", []event.Event{pfAdd("friends", "carol"), pfRename("friends", "pals"), pfCreate("friends", "erin")}, 0, false},
	{"v1-creates", []event.Event{pfCreate("g1", "bob"), pfCreate("g2", "carol"), pfCreate("g3", "erin")}, 2, false},
}

// prefixSim is a simulator with an IM client and a real dispatcher on it.
type prefixSim struct {
	sim  *imsim.Server
	disp *dispatcher.Dispatcher
}

func newPrefixSim(t *testing.T) *prefixSim {
	const appID, key = 1400000002, "prefix-key"
	sim, err := imsim.New(imsim.Config{SDKAppID: appID, SecretKey: key, RateLimit: 1000000, CallLog: true, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	t.Cleanup(func() { sim.Close(); srv.Close() })
	client, err := im.New(im.Config{SDKAppID: appID, SecretKey: key, BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	d, err := dispatcher.New(dispatcher.Config{API: client, Limiter: ratelimit.Config{Standalone: true}, RateLimit: 100000,
		GetRateLimit: 100000, UpdateRateLimit: 100000, DeleteRateLimit: 100000, RetryBudget: time.Minute,
		Metrics: metrics.New(prometheus.NewRegistry(), "test", false)})
	if err != nil {
		t.Fatal(err)
	}
	return &prefixSim{sim: sim, disp: d}
}

// apply dispatches ev as a fresh record and fails the test unless it is applied.
func (s *prefixSim) apply(t *testing.T, ev *event.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if o, err := s.disp.Dispatch(ctx, dispatcher.Task{Event: ev}); err != nil || o.Result != dispatcher.Applied {
		t.Fatalf("%s: %+v, %v", ev.EventID, o, err)
	}
}

// groups is account's groups as name → sorted conversation accounts.
func (s *prefixSim) groups(account string) map[string][]string {
	out := map[string][]string{}
	for _, g := range s.sim.Groups(account) {
		who := []string{}
		for _, c := range g.Contacts {
			who = append(who, c.ToAccount)
		}
		slices.Sort(who)
		out[g.Name] = who
	}
	return out
}

// sends counts account's creates, updates and deletes at the simulator.
func (s *prefixSim) sends(account string) int {
	n := 0
	for _, c := range s.sim.Calls() {
		if c.Account == account && c.API != im.APIGet {
			n++
		}
	}
	return n
}

// prefixEvent is account's i-th uncertain event (seq base+i+1).
func prefixEvent(a prefixAccount, i int) *event.Event {
	ev := a.evs[i]
	ev.EventID, ev.FromAccount, ev.Seq = fmt.Sprintf("%s-%d", a.name, i+2), a.name, int64(i+2)
	return &ev
}

func baseEvent(account string) *event.Event {
	ev := pfCreate("friends", "bob", "dave")
	ev.EventID, ev.FromAccount, ev.Seq = account+"-1", account, 1
	return &ev
}

// stripPrefix is the consumer before the prefix scan: every uncertain record checked on its own.
type stripPrefix struct{ d *dispatcher.Dispatcher }

func (s stripPrefix) Dispatch(ctx context.Context, t dispatcher.Task) (dispatcher.Outcome, error) {
	t.Prefix, t.Later = false, nil
	return s.d.Dispatch(ctx, t)
}

// TestUncertainPrefixTakeover: a previous owner applied a prefix of each account's records and
// died without committing; the successor gets them all as uncertain. With the prefix scan every
// record ends applied, nothing applied before is sent again, and each account's groups are what
// applying its records once in order leaves. The same run with every record checked on its own
// (the consumer before the scan) is shown to fail the accounts whose later records hide an
// earlier one's effect — a create repeated after its rename, a valid rename or add rejected,
// a re-created group deleted — and only those.
func TestUncertainPrefixTakeover(t *testing.T) {
	model := newPrefixSim(t)
	for _, a := range prefixAccounts {
		model.apply(t, baseEvent(a.name))
		for i := range a.evs {
			model.apply(t, prefixEvent(a, i))
		}
	}
	run := func(t *testing.T, scan bool) map[string]string {
		s := newPrefixSim(t)
		e := newEnv(t, 1)
		var msgs []kafka.Message
		for _, a := range prefixAccounts {
			s.apply(t, baseEvent(a.name))
			for i := range a.evs {
				ev := prefixEvent(a, i)
				if i < a.applied {
					s.apply(t, ev) // the previous owner
				}
				v, err := json.Marshal(ev)
				if err != nil {
					t.Fatal(err)
				}
				msgs = append(msgs, kafka.Message{Key: []byte(a.name), Value: v})
			}
		}
		e.k.Produce(t, e.topic, msgs...)
		// Committed at 0 with metadata the successor can't use: everything up to the log end
		// may have been dispatched.
		e.commitAs(0, "not-ours")
		before := map[string]int{}
		for _, a := range prefixAccounts {
			before[a.name] = s.sends(a.name)
		}
		var d Dispatcher = s.disp
		if !scan {
			d = stripPrefix{s.disp}
		}
		e.cfgEdit = func(c *Config) { c.Dispatcher, c.UncertainHold = d, -1 }
		r := e.start()
		testwait.For(t, 30*time.Second, "every record committed", func() bool {
			return e.committed()[0].CommittedOffset == int64(len(msgs))
		})
		r.stop(t)
		bad := map[string]string{}
		for _, l := range e.dl.snapshot() {
			bad[l.l.FromAccount] += fmt.Sprintf("%s dead-lettered %s (%s); ", l.l.EventID, l.l.Reason, l.l.Info)
		}
		for _, a := range prefixAccounts {
			if diff := cmp.Diff(model.groups(a.name), s.groups(a.name)); diff != "" {
				bad[a.name] += "groups (-want +got):\n" + diff
			}
			// Records applied before are never sent again; the others at most once each.
			if got, most := s.sends(a.name)-before[a.name], len(a.evs)-a.applied; got > most {
				bad[a.name] += fmt.Sprintf("%d creates/updates/deletes, want at most %d; ", got, most)
			}
		}
		return bad
	}
	t.Run("scan", func(t *testing.T) {
		for account, what := range run(t, true) {
			t.Errorf("%s: %s", account, what)
		}
	})
	t.Run("each on its own", func(t *testing.T) {
		bad := run(t, false)
		for account, what := range bad {
			t.Logf("caught %s: %s", account, what)
		}
		for _, a := range prefixAccounts {
			if _, failed := bad[a.name]; failed != a.hidden {
				t.Errorf("%s: failed %v (%s), want %v", a.name, failed, bad[a.name], a.hidden)
			}
		}
	})
}
