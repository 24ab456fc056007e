package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	fetchapi "github.com/segmentio/kafka-go/protocol/fetch"

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

// slowFetch hands the consumer one record batch per fetch and holds the first fetch at or past
// offset from for delay: the successor has an account's first uncertain record well before the
// rest of them.
type slowFetch struct {
	kafka.RoundTripper
	from    int64
	delay   time.Duration
	delayed atomic.Bool
}

func (s *slowFetch) RoundTrip(ctx context.Context, addr net.Addr, req protocol.Message) (protocol.Message, error) {
	if f, ok := req.(*fetchapi.Request); ok {
		f.MaxBytes = 1
		for i := range f.Topics {
			for j := range f.Topics[i].Partitions {
				p := &f.Topics[i].Partitions[j]
				p.PartitionMaxBytes = 1
				if p.FetchOffset >= s.from && s.delayed.CompareAndSwap(false, true) {
					select {
					case <-time.After(s.delay):
					case <-ctx.Done():
					}
				}
			}
		}
	}
	return s.RoundTripper.RoundTrip(ctx, addr, req)
}

// TestUncertainPrefixWaitsForFetch: an account's first uncertain record (a create the previous
// owner applied, then renamed) arrives a while before the rest of its uncertain records. The
// account waits for them — deciding with the create alone would see its group missing and
// create it again, and the rename would then be refused — and then settles both with one scan.
func TestUncertainPrefixWaitsForFetch(t *testing.T) {
	s := newPrefixSim(t)
	e := newEnv(t, 1)
	a := prefixAccount{name: "late", evs: []event.Event{pfCreate("g3", "bob"), pfRename("g3", "g4")}}
	s.apply(t, baseEvent(a.name))
	for i := range a.evs {
		ev := prefixEvent(a, i)
		ev.Seq = 0 // no seq: nothing makes the account wait but the scan
		s.apply(t, ev)
		v, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		e.k.Produce(t, e.topic, kafka.Message{Key: []byte(a.name), Value: v}) // one batch each
	}
	e.commitAs(0, "not-ours")
	want := s.groups(a.name)
	sends := s.sends(a.name)
	tr := &slowFetch{RoundTripper: kafka.DefaultTransport, from: 1, delay: 1500 * time.Millisecond}
	e.cfgEdit = func(c *Config) { c.Dispatcher, c.UncertainHold, c.Transport = s.disp, -1, tr }
	r := e.start()
	testwait.For(t, 30*time.Second, "both records committed", func() bool {
		return e.committed()[0].CommittedOffset == 2
	})
	r.stop(t)
	if !tr.delayed.Load() {
		t.Fatal("the second record's fetch was never held: the test did not set up its case")
	}
	for _, l := range e.dl.snapshot() {
		t.Errorf("%s dead-lettered %s (%s)", l.l.EventID, l.l.Reason, l.l.Info)
	}
	if diff := cmp.Diff(want, s.groups(a.name)); diff != "" {
		t.Errorf("groups (-want +got):\n%s", diff)
	}
	if n := s.sends(a.name) - sends; n != 0 {
		t.Errorf("%d creates/updates/deletes after the hand-over, want 0 (both were applied)", n)
	}
}

// TestScanWaits: when an account whose next record needs a prefix scan waits for the fetch,
// and when it does not: the rest fetched, a full buffer (the fetch waits for room: waiting
// would deadlock), the partition's wait used up, a record that needs no scan (replayed,
// invalid, already decided). releaseScans frees the waiting accounts once the fetch gets there.
func TestScanWaits(t *testing.T) {
	t0 := time.Unix(1800000000, 0)
	ev := prefixEvent(prefixAccounts[0], 0)
	cases := []struct {
		name  string
		edit  func(p *part, r *rec)
		now   time.Time
		waits bool
	}{
		{"rest not fetched", func(*part, *rec) {}, t0, true},
		{"rest not fetched, then the buffer fills", func(*part, *rec) {}, t0, true},
		{"rest fetched", func(p *part, _ *rec) { p.tr.next = 5 }, t0, false},
		{"buffer full", func(p *part, _ *rec) { p.bytes = 1 << 20 }, t0, false},
		{"wait used up", func(p *part, _ *rec) { p.scanUntil = t0 }, t0, false},
		{"replay", func(_ *part, r *rec) { r.replay = 1 }, t0, false},
		{"invalid", func(_ *part, r *rec) { r.ev = nil }, t0, false},
		{"decided", func(_ *part, r *rec) { r.scanned = true }, t0, false},
		{"not uncertain", func(_ *part, r *rec) { r.uncertain = false }, t0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := &engine{cfg: &Config{MaxBuffered: 100, MaxBufferedBytes: 1 << 20, Now: func() time.Time { return tc.now }}}
			p := &part{tr: newTracker(0), scanTo: 5}
			p.tr.add(0, 0, nil)
			// A timer already set and queued: neither scanWaits nor releaseScans starts anything.
			a := &account{p: p, timer: time.NewTimer(time.Hour), queued: true}
			defer a.timer.Stop()
			r := &rec{ev: ev, uncertain: true, a: a}
			tc.edit(p, r)
			if got := e.scanWaits(a, r); got != tc.waits {
				t.Fatalf("scanWaits = %v, want %v", got, tc.waits)
			}
			if !tc.waits {
				if len(p.scanWait) != 0 {
					t.Errorf("an account not waiting is in scanWait")
				}
				return
			}
			if !p.scanUntil.Equal(t0.Add(scanWaitMax)) {
				t.Errorf("wait until %v, want %v", p.scanUntil, t0.Add(scanWaitMax))
			}
			e.scanWaits(a, r)
			if len(p.scanWait) != 1 || !a.scanWaiting {
				t.Fatalf("scanWait %d accounts (waiting %v), want the one once", len(p.scanWait), a.scanWaiting)
			}
			e.releaseScans(p) // not fetched yet
			if len(p.scanWait) != 1 {
				t.Fatal("released before the fetch got there")
			}
			if tc.name == "rest not fetched" {
				p.tr.add(4, 0, nil)
			} else {
				p.bytes = 1 << 20
			}
			e.releaseScans(p)
			if len(p.scanWait) != 0 || a.scanWaiting {
				t.Errorf("not released")
			}
		})
	}
}
