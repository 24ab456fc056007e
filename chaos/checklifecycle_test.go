package chaos

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/dlq"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
)

func u(name string) im.ContactItem { return im.ContactItem{Type: im.ContactC2C, ToAccount: name} }

// lifecycleRun is synthetic evidence of a correct run with every event type, written as the
// simulator's call log would show it:
//
//	alice 1 create g {u1 u2}      create
//	alice 2 add g {u3 u1}         update: u3 added, u1 already in (not changed)
//	alice 3 rename g → h          update applied, answered 50005; a get shows it applied
//	alice 4 remove h {u2 u9}      update: u2 removed, u9 was never in (the event sends only u2)
//	alice 5 delete h              delete applied, answered 50005; the retry answers 51009
//	alice 6 create g {u5}         the name g again (renamed away at 3)
//	alice 7 rename g → h          onto the name deleted at 5
//	bob   1 create k {u1}
//	bob   2 add k {u2}
//	bob   3 remove k {u2}
//	bob   4 add k {u2}            the same conversation again, after its remove
//	bob   5 remove k {u7}         a no-op: u7 is not in k, nothing is sent
//	ghost-0 rename x → y          not imported: dead-lettered as rejected
//	a re-send of alice 3           dropped
type lifecycleRun struct {
	ev   Evidence
	recs map[string]*Record // by "account/seq"
	call map[string]int     // index in ev.Calls of the effect-making call, by "account/seq"
}

func newLifecycleRun() lifecycleRun {
	t0 := time.Date(2026, 11, 30, 22, 0, 0, 0, time.UTC)
	var recs []Record
	rec := func(acct string, seq int64, typ, group, newGroup string, cs ...im.ContactItem) {
		k := Valid
		if strings.HasPrefix(acct, ghostPrefix) {
			k = Rejected
		}
		recs = append(recs, Record{Key: []byte(acct), Value: fmt.Appendf(nil, `{"%s/%d"}`, acct, seq), Kind: k, Account: acct, Seq: seq,
			EventID: fmt.Sprintf("%s-%d", acct, seq), Type: typ, Group: group, NewGroup: newGroup, Contacts: cs})
	}
	rec("alice", 1, EventCreated, "g", "", u("u1"), u("u2"))
	rec("alice", 2, EventContactsAdded, "g", "", u("u3"), u("u1"))
	rec("alice", 3, EventRenamed, "g", "h")
	rec("alice", 4, EventContactsRemoved, "h", "", u("u2"), u("u9"))
	rec("alice", 5, EventDeleted, "h", "")
	rec("alice", 6, "", "g", "", u("u5"))
	rec("alice", 7, EventRenamed, "g", "h")
	rec("bob", 1, EventCreated, "k", "", u("u1"))
	rec("bob", 2, EventContactsAdded, "k", "", u("u2"))
	rec("bob", 3, EventContactsRemoved, "k", "", u("u2"))
	rec("bob", 4, EventContactsAdded, "k", "", u("u2"))
	rec("bob", 5, EventContactsRemoved, "k", "", u("u7"))
	rec("ghost-0", 1, EventRenamed, "x", "y")
	dup := recs[2]
	dup.Kind = Duplicate
	recs = append(recs, dup)
	for i := range recs {
		recs[i].Partition, recs[i].Offset, recs[i].ProducedAt = 0, int64(i), t0
	}
	run := lifecycleRun{recs: map[string]*Record{}, call: map[string]int{}}
	for i := range recs {
		if recs[i].Kind != Duplicate {
			run.recs[fmt.Sprintf("%s/%d", recs[i].Account, recs[i].Seq)] = &recs[i]
		}
	}

	var calls []imsim.Call
	next := map[string]time.Duration{"alice": time.Second, "bob": time.Second + 5*time.Millisecond, "ghost-0": time.Second}
	add := func(key string, c imsim.Call) {
		s := next[c.Account]
		c.Start, c.End = t0.Add(s), t0.Add(s+30*time.Millisecond)
		next[c.Account] = s + 50*time.Millisecond
		if key != "" {
			run.call[key] = len(calls)
		}
		calls = append(calls, c)
	}
	create := func(acct, g string, cs ...im.ContactItem) imsim.Call {
		ch := make([]bool, len(cs))
		for i := range ch {
			ch[i] = true
		}
		return imsim.Call{API: im.APICreate, Account: acct, Group: g, Contacts: cs, Applied: true, Results: make([]int, len(cs)), Changed: ch}
	}
	get := func(acct string) imsim.Call { return imsim.Call{API: im.APIGet, Account: acct} }
	addDel := func(acct, g string, op int, cs []im.ContactItem, changed ...bool) imsim.Call {
		ops := make([]int, len(cs))
		applied := false
		for i := range ops {
			ops[i] = op
			applied = applied || changed[i]
		}
		return imsim.Call{API: im.APIUpdate, Account: acct, Group: g, UpdateType: im.UpdateGroupTypeAddDel, Contacts: cs, Ops: ops,
			Applied: applied, Results: make([]int, len(cs)), Changed: changed}
	}
	rename := func(acct, from, to string) imsim.Call {
		return imsim.Call{API: im.APIUpdate, Account: acct, Group: from, NewGroup: to, UpdateType: im.UpdateGroupTypeRename, Applied: true}
	}
	del := func(acct, g string) imsim.Call {
		return imsim.Call{API: im.APIDelete, Account: acct, Group: g, Applied: true, Deleted: []string{g}}
	}

	add("alice/1", create("alice", "g", u("u1"), u("u2")))
	add("alice/2", addDel("alice", "g", im.ContactOptAdd, []im.ContactItem{u("u3"), u("u1")}, true, false))
	r := rename("alice", "g", "h")
	r.Code = im.CodeTimeout // applied, then failed
	add("alice/3", r)
	add("", get("alice")) // the existence check: h is there, g is not → applied
	add("alice/4", addDel("alice", "h", im.ContactOptDel, []im.ContactItem{u("u2")}, true))
	d := del("alice", "h")
	d.Code = im.CodeTimeout
	add("alice/5", d)
	add("", imsim.Call{API: im.APIDelete, Account: "alice", Group: "h", Code: im.CodeGroupNotFound}) // a retry: the group is gone
	add("alice/6", create("alice", "g", u("u5")))
	add("alice/7", rename("alice", "g", "h"))

	add("bob/1", create("bob", "k", u("u1")))
	add("bob/2", addDel("bob", "k", im.ContactOptAdd, []im.ContactItem{u("u2")}, true))
	add("bob/3", addDel("bob", "k", im.ContactOptDel, []im.ContactItem{u("u2")}, true))
	add("bob/4", addDel("bob", "k", im.ContactOptAdd, []im.ContactItem{u("u2")}, true))
	add("", imsim.Call{API: im.APIUpdate, Account: "ghost-0", Group: "x", NewGroup: "y", UpdateType: 1, Code: im.CodeNotImported})

	ghost := run.recs["ghost-0/1"]
	run.ev = Evidence{Topic: "t", Records: recs, Calls: calls, Budget: 200, ReorderWindow: time.Second,
		Letters: []*dlq.Entry{{OriginalTopic: "t", OriginalPartition: ghost.Partition, OriginalOffset: ghost.Offset,
			Reason: dlq.ReasonRejected, Key: ghost.Key, Value: ghost.Value}}}
	return run
}

// later returns c moved d later.
func later(c imsim.Call, d time.Duration) imsim.Call {
	c.Start, c.End = c.Start.Add(d), c.End.Add(d)
	return c
}

// TestCheckLifecycle proves the checker understands the lifecycle calls: a correct run with
// every type passes, and each broken call log is reported as the violation it is.
func TestCheckLifecycle(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(run *lifecycleRun)
		want   string // substring of Err; "" for none
		check  func(r Report) bool
	}{
		{name: "correct run", mutate: func(*lifecycleRun) {},
			check: func(r Report) bool {
				return r.Applied == 12 && r.DeadLettered == 1 && r.DuplicatesDropped == 1 && r.Lost == 0 && r.DoubleEffects == 0
			}},
		{name: "rename applied twice", want: "1 lifecycle effects applied twice", mutate: func(run *lifecycleRun) {
			ev := &run.ev
			ev.Calls = append(ev.Calls, later(ev.Calls[run.call["alice/7"]], 10*time.Second))
		}},
		{name: "add replayed onto a re-created group", want: "1 lifecycle effects applied twice", mutate: func(run *lifecycleRun) {
			// alice 2's add of u3 to g applied again after alice 6 made a new g: a stale replay.
			ev := &run.ev
			c := later(ev.Calls[run.call["alice/2"]], 10*time.Second)
			c.Contacts, c.Ops, c.Changed, c.Results = c.Contacts[:1], c.Ops[:1], c.Changed[:1], c.Results[:1]
			ev.Calls = append(ev.Calls, c)
		}},
		{name: "conversation added twice", want: "1 lifecycle effects applied twice", mutate: func(run *lifecycleRun) {
			ev := &run.ev
			ev.Calls = append(ev.Calls, later(ev.Calls[run.call["bob/4"]], 10*time.Second))
		}},
		{name: "conversation removed twice", want: "1 lifecycle effects applied twice", mutate: func(run *lifecycleRun) {
			ev := &run.ev
			ev.Calls = append(ev.Calls, later(ev.Calls[run.call["alice/4"]], 10*time.Second))
		}},
		{name: "delete applied twice", want: "1 lifecycle effects applied twice", mutate: func(run *lifecycleRun) {
			ev := &run.ev
			c := later(ev.Calls[run.call["alice/5"]], 10*time.Second)
			c.Code = 0
			ev.Calls = append(ev.Calls, c)
		}},
		{name: "delete of a deleted group answered 51009 is no double effect", mutate: func(run *lifecycleRun) {
			ev := &run.ev
			ev.Calls = append(ev.Calls, imsim.Call{API: im.APIDelete, Account: "alice", Group: "h", Code: im.CodeGroupNotFound,
				Start: ev.Calls[0].Start.Add(10 * time.Second), End: ev.Calls[0].Start.Add(10*time.Second + time.Millisecond)})
		}},
		{name: "delete that succeeds without deleting is no double effect", mutate: func(run *lifecycleRun) {
			ev := &run.ev // as with --delete-missing-ok
			ev.Calls = append(ev.Calls, imsim.Call{API: im.APIDelete, Account: "alice", Group: "h",
				Start: ev.Calls[0].Start.Add(10 * time.Second), End: ev.Calls[0].Start.Add(10*time.Second + time.Millisecond)})
		}},
		{name: "add re-sent without a change is no double effect", mutate: func(run *lifecycleRun) {
			ev := &run.ev
			c := later(ev.Calls[run.call["bob/4"]], 10*time.Second)
			c.Applied, c.Changed = false, []bool{false}
			ev.Calls = append(ev.Calls, c)
		}},
		{name: "rename lost", want: "1 records lost", mutate: func(run *lifecycleRun) {
			// alice 7's g → h is taken for alice 3's (the log does not say which event a call
			// was for): alice 7 is the one reported lost, and applied out of order.
			ev := &run.ev
			ev.Calls[run.call["alice/3"]].Applied = false
		}, check: func(r Report) bool { return r.Lost == 1 && r.OrderViolations == 1 }},
		{name: "delete lost", want: "1 records lost", mutate: func(run *lifecycleRun) {
			ev := &run.ev
			c := &ev.Calls[run.call["alice/5"]]
			c.Applied, c.Deleted, c.Code = false, nil, im.CodeInternal
		}},
		{name: "one conversation of an add lost", want: "1 records lost", mutate: func(run *lifecycleRun) {
			ev := &run.ev
			c := &ev.Calls[run.call["alice/2"]]
			c.Changed = []bool{false, false}
			c.Applied = false
		}},
		{name: "rename before the add that precedes it", want: "1 seq order violations", mutate: func(run *lifecycleRun) {
			ev := &run.ev
			a, b := &ev.Calls[run.call["alice/2"]], &ev.Calls[run.call["alice/3"]]
			a.Start, b.Start = b.Start, a.Start
			a.End, b.End = b.End, a.End
		}},
		{name: "create before the delete that precedes it", want: "1 seq order violations", mutate: func(run *lifecycleRun) {
			ev := &run.ev // alice 6's create g made before alice 5's delete h: out of order across types
			a, b := &ev.Calls[run.call["alice/5"]], &ev.Calls[run.call["alice/6"]]
			a.Start, b.Start = b.Start, a.Start
			a.End, b.End = b.End, a.End
		}},
		{name: "lifecycle seq late is counted, not a violation", mutate: func(run *lifecycleRun) {
			ev := &run.ev // the same, but alice 5 was produced 3s after alice 6: the consumer went on
			a, b := &ev.Calls[run.call["alice/5"]], &ev.Calls[run.call["alice/6"]]
			a.Start, b.Start = b.Start, a.Start
			a.End, b.End = b.End, a.End
			run.recs["alice/5"].ProducedAt = run.recs["alice/6"].ProducedAt.Add(3 * time.Second)
		}, check: func(r Report) bool { return r.Late == 1 && r.OrderViolations == 0 }},
		{name: "update of one account while its create runs", want: "1 concurrent calls", mutate: func(run *lifecycleRun) {
			ev := &run.ev
			c := &ev.Calls[run.call["bob/2"]]
			c.Start = ev.Calls[run.call["bob/1"]].Start.Add(10 * time.Millisecond)
			c.End = c.Start.Add(30 * time.Millisecond)
		}},
		{name: "delete of one account while its update runs", want: "1 concurrent calls", mutate: func(run *lifecycleRun) {
			ev := &run.ev
			d := &ev.Calls[run.call["alice/5"]]
			d.Start = ev.Calls[run.call["alice/4"]].Start.Add(5 * time.Millisecond)
		}},
		{name: "delete no event asked for", want: "wrong outcomes", mutate: func(run *lifecycleRun) {
			ev := &run.ev
			c := later(ev.Calls[run.call["alice/5"]], 10*time.Second)
			c.Code, c.Group, c.Deleted = 0, "other", []string{"other"}
			ev.Calls = append(ev.Calls, c)
		}},
		{name: "valid rename dead-lettered", want: "wrong outcomes", mutate: func(run *lifecycleRun) {
			ev := &run.ev
			rec := run.recs["alice/7"]
			ev.Letters = append(ev.Letters, &dlq.Entry{OriginalTopic: "t", OriginalPartition: rec.Partition, OriginalOffset: rec.Offset,
				Reason: dlq.ReasonRejected, Code: im.CodeGroupNotFound})
		}},
		{name: "ghost's rename not dead-lettered", want: "1 records lost", mutate: func(run *lifecycleRun) {
			run.ev.Letters = nil
		}},
		{name: "schedule with a valid rename of a missing group", want: "wrong outcomes", mutate: func(run *lifecycleRun) {
			run.recs["bob/5"].Type, run.recs["bob/5"].Group, run.recs["bob/5"].NewGroup = EventRenamed, "nope", "x"
		}, check: func(r Report) bool {
			return strings.Contains(strings.Join(r.Problems, "\n"), "the schedule marks it valid")
		}},
		{name: "original of a re-sent rename lost: the duplicate is not dropped", want: "2 records lost", mutate: func(run *lifecycleRun) {
			run.ev.Calls[run.call["alice/3"]].Applied = false
			run.ev.Calls[run.call["alice/7"]].Applied = false
		}, check: func(r Report) bool { return r.DuplicatesDropped == 0 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run := newLifecycleRun()
			tc.mutate(&run)
			r := Check(run.ev)
			err := r.Err()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected violation: %v\n%s", err, r.Summary())
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Err = %v, want one containing %q\n%s", err, tc.want, r.Summary())
			}
			if tc.check != nil && !tc.check(r) {
				t.Fatalf("report %s\n%s", r.Summary(), strings.Join(r.Problems, "\n"))
			}
		})
	}
}

// TestCheckBudgetPerAPI: each API is held to its own budget — a full second of creates,
// updates, deletes and gets together is fine, one call over on one API is not, and Budgets
// gives an API a budget of its own.
func TestCheckBudgetPerAPI(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 22, 0, 0, 0, time.UTC)
	flood := func(api string, n int, from time.Time) []imsim.Call {
		var out []imsim.Call
		for i := range n {
			s := from.Add(time.Duration(i) * 900 * time.Millisecond / time.Duration(n))
			out = append(out, imsim.Call{API: api, Account: fmt.Sprintf("%s-%d", api, i), Start: s, End: s.Add(time.Millisecond)})
		}
		return out
	}
	all := func(n map[string]int) []imsim.Call {
		var out []imsim.Call
		for _, api := range []string{im.APICreate, im.APIGet, im.APIUpdate, im.APIDelete} {
			out = append(out, flood(api, n[api], t0)...)
		}
		return out
	}
	tests := []struct {
		name    string
		calls   []imsim.Call
		budgets map[string]int
		want    string
		max     int
	}{
		{"every API at its budget in one second", all(map[string]int{im.APICreate: 200, im.APIGet: 200, im.APIUpdate: 200, im.APIDelete: 200}), nil, "", 200},
		{"201 deletes", all(map[string]int{im.APICreate: 200, im.APIUpdate: 200, im.APIDelete: 201}), nil, "del_contact_group: 201 calls", 201},
		{"201 updates", all(map[string]int{im.APIUpdate: 201}), nil, "update_contact_group: 201 calls", 201},
		{"an API's own budget", all(map[string]int{im.APICreate: 200, im.APIDelete: 101}), map[string]int{im.APIDelete: 100}, "del_contact_group: 101 calls in the second", 200},
		{"an API's own budget kept", all(map[string]int{im.APIDelete: 100, im.APIUpdate: 200}), map[string]int{im.APIDelete: 100}, "", 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Report{}
			checkBudget(&r, tc.calls, 200, tc.budgets)
			got := strings.Join(r.Problems, "\n")
			switch {
			case tc.want == "" && r.WindowsOverBudget != 0:
				t.Fatalf("over budget: %s", got)
			case tc.want != "" && (r.WindowsOverBudget == 0 || !strings.Contains(got, tc.want)):
				t.Fatalf("problems %q, want %q", got, tc.want)
			}
			if r.MaxWindow != tc.max {
				t.Errorf("max window %d, want %d", r.MaxWindow, tc.max)
			}
		})
	}
}
