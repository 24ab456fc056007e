package dispatcher

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/ratelimit"
)

// v2Event is a contract v2 event of account's group "friends": renamed to "pals", bob and carol
// added or removed, or deleted.
func v2Event(typ event.Type, account string) *event.Event {
	e := &event.Event{EventID: fmt.Sprintf("e-%s-%s", account, typ), EventType: typ, FromAccount: account, GroupName: "friends"}
	switch typ {
	case event.TypeContactGroupRenamed:
		e.NewGroupName = "pals"
	case event.TypeContactGroupContactsAdded, event.TypeContactGroupContactsRemoved:
		e.Contacts = []event.Contact{c2c("bob"), c2c("carol")}
	}
	return e
}

// v2Types are the contract v2 event types, with the API each one's call uses.
var v2Types = []struct {
	typ event.Type
	api string
}{
	{event.TypeContactGroupRenamed, im.APIUpdate},
	{event.TypeContactGroupContactsAdded, im.APIUpdate},
	{event.TypeContactGroupContactsRemoved, im.APIUpdate},
	{event.TypeContactGroupDeleted, im.APIDelete},
}

// state is a user's groups as name → the sorted accounts of their (one-to-one) conversations,
// for comparing with what an event must leave.
func (f *fakeAPI) state(account string) map[string][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string][]string{}
	for _, g := range f.groups[account] {
		keys := []string{}
		for _, c := range g.contacts {
			keys = append(keys, c.ToAccount)
		}
		slices.Sort(keys)
		out[g.name] = keys
	}
	return out
}

// before is the state every v2 test starts from: "friends" with bob and dave.
func before(h *harness, account string) {
	h.api.seed(account, "friends", item("bob"), item("dave"))
}

// after is the state a v2 event of typ leaves, applied once, on before.
func after(typ event.Type) map[string][]string {
	const bob, carol, dave = "bob", "carol", "dave"
	switch typ {
	case event.TypeContactGroupRenamed:
		return map[string][]string{"pals": {bob, dave}}
	case event.TypeContactGroupContactsAdded:
		return map[string][]string{"friends": {bob, carol, dave}}
	case event.TypeContactGroupContactsRemoved:
		return map[string][]string{"friends": {dave}}
	}
	return map[string][]string{}
}

// TestLifecycleApplied: each v2 type makes its one call, with the request its type maps to,
// and leaves the group as the event says; no look-up for an event that is neither uncertain
// nor replayed.
func TestLifecycleApplied(t *testing.T) {
	for _, tc := range v2Types {
		t.Run(string(tc.typ), func(t *testing.T) {
			h := newHarness(t, nil)
			before(h, "alice")
			o := h.dispatch(Task{Event: v2Event(tc.typ, "alice")})
			if o.Result != Applied || o.Attempts != 1 {
				t.Fatalf("outcome %+v, want applied in one attempt", o)
			}
			if diff := cmp.Diff(after(tc.typ), h.api.state("alice")); diff != "" {
				t.Errorf("groups (-want +got):\n%s", diff)
			}
			if h.api.count(tc.api) != 1 || h.api.count(im.APIGet) != 0 {
				t.Errorf("%s calls %d, gets %d; want 1 and 0", tc.api, h.api.count(tc.api), h.api.count(im.APIGet))
			}
		})
	}
	// The update requests as the contract maps them.
	h := newHarness(t, nil)
	before(h, "alice")
	h.dispatch(Task{Event: v2Event(event.TypeContactGroupRenamed, "alice")})
	want := &im.UpdateRequest{FromAccount: "alice", UpdateType: im.UpdateTypeGroup, UpdateGroup: im.UpdateGroup{
		UpdateGroupType: im.UpdateGroupTypeRename, OldGroupName: "friends", NewGroupName: "pals"}}
	if diff := cmp.Diff(want, h.api.lastUpdate()); diff != "" {
		t.Errorf("rename request (-want +got):\n%s", diff)
	}
	h.dispatch(Task{Event: &event.Event{EventID: "rm", EventType: event.TypeContactGroupContactsRemoved, FromAccount: "alice",
		GroupName: "pals", Contacts: []event.Contact{c2c("dave")}}})
	want = &im.UpdateRequest{FromAccount: "alice", UpdateType: im.UpdateTypeGroup, UpdateGroup: im.UpdateGroup{
		UpdateGroupType: im.UpdateGroupTypeAddDel, OldGroupName: "pals",
		ContactUpdateItem: []im.ContactUpdateItem{{ContactOptType: im.ContactOptDel, ContactItem: item("dave")}}}}
	if diff := cmp.Diff(want, h.api.lastUpdate()); diff != "" {
		t.Errorf("remove request (-want +got):\n%s", diff)
	}
}

// TestLifecycleErrorClasses: each v2 type under each failure class of its call: transient and
// frequency-limit answers are retried (no look-up: nothing ambiguous), an expired sig is
// re-signed and retried, a configuration failure pauses until a probe passes, and a permanent
// answer — the group missing (51009) or another — rejects the event at once.
func TestLifecycleErrorClasses(t *testing.T) {
	classes := []struct {
		name     string
		code     int
		n        int
		want     Result
		attempts int // calls of the type's API
	}{
		{"transient 60008", 60008, 2, Applied, 3},
		{"rate limited 60007", im.CodeFrequency, 2, Applied, 3},
		{"credentials 70001", im.CodeSigExpired, 1, Applied, 2},
		{"config 70009", im.CodeSigKeyMismatch, 1, Applied, 2},
		{"group missing 51009", im.CodeGroupNotFound, 1, Rejected, 1},
		{"permanent 51008", im.CodeTooManyContacts, 1, Rejected, 1},
	}
	for _, tc := range v2Types {
		for _, cl := range classes {
			t.Run(string(tc.typ)+"/"+cl.name, func(t *testing.T) {
				h := newHarness(t, nil)
				h.run()
				before(h, "alice")
				h.api.failCodes(tc.api, cl.code, cl.n)
				o := h.dispatch(Task{Event: v2Event(tc.typ, "alice")})
				if o.Result != cl.want || h.api.count(tc.api) != cl.attempts {
					t.Fatalf("outcome %+v after %d %s calls, want %v after %d", o, h.api.count(tc.api), tc.api, cl.want, cl.attempts)
				}
				if n := testutil.ToFloat64(h.m.UncertainChecks.WithLabelValues("true")) +
					testutil.ToFloat64(h.m.UncertainChecks.WithLabelValues("false")); n != 0 {
					t.Errorf("%v look-ups after an unambiguous failure, want none", n) // probes are gets too
				}
				want := after(tc.typ)
				if cl.want == Rejected {
					want = map[string][]string{"friends": {"bob", "dave"}}
					if o.Code != cl.code {
						t.Errorf("code %d, want %d", o.Code, cl.code)
					}
					// The dead letter's detail names the group and every conversation of the
					// event as failed: an empty list (not null) for a rename or a delete.
					var det ResultDetail
					if err := json.Unmarshal(o.Detail, &det); err != nil || det.GroupName != "friends" || det.Failed == nil ||
						len(det.Failed) != len(v2Event(tc.typ, "alice").Contacts) {
						t.Errorf("detail %s (%v), want group friends and the event's %d conversations failed", o.Detail, err,
							len(v2Event(tc.typ, "alice").Contacts))
					}
				}
				if diff := cmp.Diff(want, h.api.state("alice")); diff != "" {
					t.Errorf("groups (-want +got):\n%s", diff)
				}
				if cl.code == im.CodeSigExpired && h.api.refreshCount() != 1 {
					t.Errorf("RefreshSig calls %d, want 1", h.api.refreshCount())
				}
				if got := testutil.ToFloat64(h.m.Paused.WithLabelValues(ReasonConfig)); got != 0 {
					t.Errorf("paused{config} = %v at the end, want 0", got)
				}
			})
		}
	}
}

// TestLifecycleRenameOntoExistingName: the API refuses a rename onto a name the user already
// has (50002): rejected, nothing changed.
func TestLifecycleRenameOntoExistingName(t *testing.T) {
	h := newHarness(t, nil)
	before(h, "alice")
	h.api.seed("alice", "pals")
	o := h.dispatch(Task{Event: v2Event(event.TypeContactGroupRenamed, "alice")})
	if o.Result != Rejected || o.Code != im.CodeBadParams || h.api.count(im.APIUpdate) != 1 {
		t.Fatalf("outcome %+v after %d updates, want rejected 50002 after 1", o, h.api.count(im.APIUpdate))
	}
	if _, ok := h.api.state("alice")["friends"]; !ok {
		t.Error("the group was renamed anyway")
	}
}

// TestLifecycleAmbiguousFailureLooksFirst: the call fails ambiguously (50004, a network error
// after the request was sent), applied or not. The next attempt looks the groups up first and
// makes the call only if its effect is missing: the event's effect is there exactly once. A
// blind second call would double it (the count) or fail on its own first effect (a rename or
// a delete of a name no longer there: 51009, rejected).
func TestLifecycleAmbiguousFailureLooksFirst(t *testing.T) {
	ambiguous := map[string]func(api string) error{
		"50004": func(api string) error { return imErr(api, im.CodeInternal) },
		"network": func(api string) error {
			return &im.Error{API: api, Class: im.ClassTransient, Network: true, Err: errNetwork}
		},
	}
	for _, tc := range v2Types {
		for name, failure := range ambiguous {
			for _, applied := range []bool{true, false} {
				t.Run(fmt.Sprintf("%s/%s/applied=%v", tc.typ, name, applied), func(t *testing.T) {
					h := newHarness(t, nil)
					before(h, "alice")
					h.api.fail(tc.api, step{err: failure(tc.api), apply: applied})
					o := h.dispatch(Task{Event: v2Event(tc.typ, "alice")})
					if o.Result != Applied {
						t.Fatalf("outcome %+v, want applied", o)
					}
					wantCalls := 2
					if applied {
						wantCalls = 1 // the look-up found the effect: no second call
					}
					if got := h.api.count(tc.api); got != wantCalls {
						t.Errorf("%s calls %d, want %d", tc.api, got, wantCalls)
					}
					if h.api.count(im.APIGet) != 1 {
						t.Errorf("gets %d, want the one look-up", h.api.count(im.APIGet))
					}
					if diff := cmp.Diff(after(tc.typ), h.api.state("alice")); diff != "" {
						t.Errorf("groups (-want +got):\n%s", diff)
					}
				})
			}
		}
	}
}

// TestLifecycleReplayAppliesOnce: a replayed (or uncertain) v2 event looks the groups up first.
// Already applied: no call, applied. Not applied: one call. Half applied (an add or remove of
// two conversations, one done): the call carries only the other. Its group missing: rejected
// without a call (a delete: applied).
func TestLifecycleReplayAppliesOnce(t *testing.T) {
	for _, tc := range v2Types {
		cases := []struct {
			name      string
			seed      func(h *harness)
			want      Result
			calls     int
			wantState map[string][]string
		}{
			{"already applied", func(h *harness) {
				for name, accounts := range after(tc.typ) {
					var items []im.ContactItem
					for _, a := range accounts {
						items = append(items, item(a))
					}
					h.api.seed("alice", name, items...)
				}
			}, Applied, 0, after(tc.typ)},
			{"not applied", func(h *harness) { before(h, "alice") }, Applied, 1, after(tc.typ)},
			{"group missing", func(*harness) {}, Rejected, 0, map[string][]string{}},
		}
		if tc.typ == event.TypeContactGroupDeleted {
			cases[2].want = Applied
		}
		for _, replay := range []Task{{ReplayCount: 1}, {Uncertain: true}} {
			for _, c := range cases {
				t.Run(fmt.Sprintf("%s/%s/replay=%d", tc.typ, c.name, replay.ReplayCount), func(t *testing.T) {
					h := newHarness(t, nil)
					c.seed(h)
					task := replay
					task.Event = v2Event(tc.typ, "alice")
					o := h.dispatch(task)
					if o.Result != c.want || h.api.count(tc.api) != c.calls {
						t.Fatalf("outcome %+v after %d %s calls, want %v after %d", o, h.api.count(tc.api), tc.api, c.want, c.calls)
					}
					if c.want == Rejected && o.Code != im.CodeGroupNotFound {
						t.Errorf("code %d, want 51009", o.Code)
					}
					if diff := cmp.Diff(c.wantState, h.api.state("alice")); diff != "" {
						t.Errorf("groups (-want +got):\n%s", diff)
					}
				})
			}
		}
		if tc.typ != event.TypeContactGroupContactsAdded && tc.typ != event.TypeContactGroupContactsRemoved {
			continue
		}
		// Half applied: of bob and carol, bob is in the group already (an add has carol left to
		// add; a remove, bob left to remove).
		t.Run(string(tc.typ)+"/half applied", func(t *testing.T) {
			h := newHarness(t, nil)
			before(h, "alice")
			o := h.dispatch(Task{Event: v2Event(tc.typ, "alice"), ReplayCount: 1})
			if o.Result != Applied || h.api.count(im.APIUpdate) != 1 {
				t.Fatalf("outcome %+v after %d updates, want applied after 1", o, h.api.count(im.APIUpdate))
			}
			opt, left := im.ContactOptAdd, item("carol")
			if tc.typ == event.TypeContactGroupContactsRemoved {
				opt, left = im.ContactOptDel, item("bob")
			}
			want := []im.ContactUpdateItem{{ContactOptType: opt, ContactItem: left}}
			if diff := cmp.Diff(want, h.api.lastUpdate().UpdateGroup.ContactUpdateItem); diff != "" {
				t.Errorf("update items (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(after(tc.typ), h.api.state("alice")); diff != "" {
				t.Errorf("groups (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPerAPIBudgets: each API has its own budget. Five deletes under a delete budget of 2 take
// two windows, while creates, at their own budget, do not wait for them.
func TestPerAPIBudgets(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.DeleteRateLimit = 2 })
	for i := range 5 {
		h.api.seed("alice", fmt.Sprintf("g%d", i))
	}
	start := h.clock.Now()
	for i := range 5 {
		ev := &event.Event{EventID: fmt.Sprint(i), EventType: event.TypeContactGroupDeleted, FromAccount: "alice", GroupName: fmt.Sprintf("g%d", i)}
		if o := h.dispatch(Task{Event: ev}); o.Result != Applied {
			t.Fatalf("delete %d: %+v", i, o)
		}
	}
	window := time.Second + ratelimit.DefaultJitterMargin
	if spent := h.clock.Now().Sub(start); spent < 2*window {
		t.Errorf("5 deletes at 2 per window took %v, want at least two windows (%v)", spent, 2*window)
	}
	start = h.clock.Now()
	for i := range 5 {
		if o := h.dispatch(Task{Event: newEvent("bob", fmt.Sprintf("g%d", i))}); o.Result != Applied {
			t.Fatalf("create %d: %+v", i, o)
		}
	}
	if spent := h.clock.Now().Sub(start); spent > 100*time.Millisecond {
		t.Errorf("5 creates at their own budget of 1000 took %v: held by the delete budget?", spent)
	}
	for api, want := range map[string]float64{im.APICreate: 1000, im.APIGet: 1000, im.APIUpdate: 1000, im.APIDelete: 2} {
		if got := h.d.limiterFor(api).Rate(); got != want {
			t.Errorf("%s rate %v, want %v", api, got, want)
		}
	}
}
