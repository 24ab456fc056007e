package dispatcher

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
)

// Builders of one account's ("alice") events for the prefix tests; each gets a distinct ID.
func pCreate(name string, who ...string) *event.Event {
	return &event.Event{EventType: event.TypeContactGroupCreated, FromAccount: "alice", GroupName: name, Contacts: c2cs(who)}
}

func pRename(from, to string) *event.Event {
	return &event.Event{EventType: event.TypeContactGroupRenamed, FromAccount: "alice", GroupName: from, NewGroupName: to}
}

func pAdd(name string, who ...string) *event.Event {
	return &event.Event{EventType: event.TypeContactGroupContactsAdded, FromAccount: "alice", GroupName: name, Contacts: c2cs(who)}
}

func pRemove(name string, who ...string) *event.Event {
	return &event.Event{EventType: event.TypeContactGroupContactsRemoved, FromAccount: "alice", GroupName: name, Contacts: c2cs(who)}
}

func pDelete(name string) *event.Event {
	return &event.Event{EventType: event.TypeContactGroupDeleted, FromAccount: "alice", GroupName: name}
}

func c2cs(who []string) []event.Contact {
	var out []event.Contact
	for _, w := range who {
		out = append(out, c2c(w))
	}
	return out
}

// numbered gives evs IDs and seqs in order.
func numbered(evs ...*event.Event) []*event.Event {
	for i, ev := range evs {
		ev.EventID, ev.Seq = fmt.Sprintf("alice-%d", i+1), int64(i+1)
	}
	return evs
}

// settle plays the consumer's part for one account's uncertain records evs: each is dispatched
// in order; with prefix the first one asks for the scan with the rest as Task.Later, and its
// decision is applied to them (inside the prefix: ended applied without a dispatch; its last:
// checked on its own; after it: sent as not applied). Without prefix every record is checked on
// its own, as before the scan existed.
func settle(h *harness, evs []*event.Event, prefix bool) []Outcome {
	const (
		scan = iota
		appliedBefore
		checkAlone
		live
	)
	mode := make([]int, len(evs))
	outs := make([]Outcome, len(evs))
	for i, ev := range evs {
		if mode[i] == appliedBefore {
			outs[i] = Outcome{Result: Applied}
			continue
		}
		t := Task{Event: ev, Uncertain: mode[i] != live}
		if prefix && mode[i] == scan {
			t.Prefix, t.Later = true, evs[i+1:]
		}
		o := h.dispatch(t)
		outs[i] = o
		if !o.Scanned {
			continue
		}
		for j := i + 1; j < len(evs); j++ {
			switch rel := j - i; {
			case rel < o.Prefix-1:
				mode[j] = appliedBefore
			case rel == o.Prefix-1:
				mode[j] = checkAlone
			default:
				mode[j] = live
			}
		}
	}
	return outs
}

// prefixCases are one account's records, of which a previous owner applied the first applied
// before it died without committing any; the successor gets all of them as uncertain.
// hidden: a later applied record hides an earlier one's effect from that record's own check,
// so checking each record on its own (the way before the scan) goes wrong.
var prefixCases = []struct {
	name    string
	evs     []*event.Event
	applied int
	hidden  bool
}{
	{"create rename: both applied", numbered(pCreate("g3", "bob"), pRename("g3", "g4")), 2, true},
	{"create rename: create applied", numbered(pCreate("g3", "bob"), pRename("g3", "g4")), 1, false},
	{"create rename: none applied", numbered(pCreate("g3", "bob"), pRename("g3", "g4")), 0, false},
	{"rename delete: both applied", numbered(pRename("friends", "pals"), pDelete("pals")), 2, true},
	{"rename delete: rename applied", numbered(pRename("friends", "pals"), pDelete("pals")), 1, false},
	{"delete create same name: both applied", numbered(pDelete("friends"), pCreate("friends", "carol")), 2, true},
	{"delete create same name: none applied", numbered(pDelete("friends"), pCreate("friends", "carol")), 0, false},
	{"delete create same name: delete applied", numbered(pDelete("friends"), pCreate("friends", "carol")), 1, false},
	{"create add remove: all applied", numbered(pCreate("g", "bob", "carol", "erin"), pAdd("g", "frank"), pRemove("g", "carol", "erin")), 3, true},
	{"create add delete: all applied", numbered(pCreate("g", "bob"), pAdd("g", "carol"), pDelete("g")), 3, true},
	{"no-op add in the middle: all applied", numbered(pRemove("friends", "dave"), pAdd("friends", "bob"), pRename("friends", "pals")), 3, true},
	{"no-op add in the middle: first applied", numbered(pRemove("friends", "dave"), pAdd("friends", "bob"), pRename("friends", "pals")), 1, false},
	{"no-op add in the middle: none applied", numbered(pRemove("friends", "dave"), pAdd("friends", "bob"), pRename("friends", "pals")), 0, false},
	{"remove then add back: none applied", numbered(pRemove("friends", "bob", "dave"), pAdd("friends", "bob")), 0, false},
	{"mix: prefix of 3 of 5", numbered(pAdd("friends", "carol"), pRename("friends", "pals"), pCreate("friends", "erin"),
		pRemove("pals", "bob"), pDelete("friends")), 3, true},
	{"mix: all 5", numbered(pAdd("friends", "carol"), pRename("friends", "pals"), pCreate("friends", "erin"),
		pRemove("pals", "bob"), pDelete("friends")), 5, true},
	{"v1 creates: 2 of 3", numbered(pCreate("g1", "bob"), pCreate("g2", "carol"), pCreate("g3", "dave")), 2, false},
}

// TestUncertainPrefixSettles: whatever prefix of an account's records the previous owner
// applied, the successor's prefix scan ends every record applied and leaves the user's groups
// as applying each once in order does; checking each record on its own gets the hidden cases
// wrong (the checker is shown to catch that), and the scan never costs more look-ups.
func TestUncertainPrefixSettles(t *testing.T) {
	for _, tc := range prefixCases {
		t.Run(tc.name, func(t *testing.T) {
			model := newHarness(t, nil)
			before(model, "alice")
			for _, ev := range tc.evs {
				if o := model.dispatch(Task{Event: ev}); o.Result != Applied {
					t.Fatalf("model: %s = %+v; the case is not a valid history", ev.EventID, o)
				}
			}
			want := model.api.state("alice")

			run := func(prefix bool) (bad string, gets int) {
				h := newHarness(t, nil)
				before(h, "alice")
				for _, ev := range tc.evs[:tc.applied] { // the previous owner
					h.dispatch(Task{Event: ev})
				}
				h.api.mu.Lock()
				h.api.calls = map[string]int{}
				h.api.mu.Unlock()
				outs := settle(h, tc.evs, prefix)
				for i, o := range outs {
					if o.Result != Applied {
						bad += fmt.Sprintf("%s ended %s (%s); ", tc.evs[i].EventID, o.Result, o.Info)
					}
				}
				// A record applied before is never sent again (a second effect the final state
				// may not show, as a delete and re-create); the others at most once (fewer: a
				// record that changes nothing may be found applied).
				sends := h.api.count(im.APICreate) + h.api.count(im.APIUpdate) + h.api.count(im.APIDelete)
				if most := len(tc.evs) - tc.applied; sends > most {
					bad += fmt.Sprintf("%d creates, updates and deletes, want at most %d; ", sends, most)
				}
				if diff := cmp.Diff(want, h.api.state("alice")); diff != "" {
					bad += "groups (-want +got):\n" + diff
				}
				return bad, h.api.count(im.APIGet)
			}
			bad, gets := run(true)
			if bad != "" {
				t.Errorf("with the prefix scan: %s", bad)
			}
			oldBad, oldGets := run(false)
			if tc.hidden && oldBad == "" {
				t.Errorf("checking each record on its own got this right: the case hides nothing")
			}
			if !tc.hidden && oldBad != "" {
				t.Errorf("checking each record on its own: %s", oldBad)
			}
			if gets > oldGets {
				t.Errorf("look-ups: %d with the scan, %d without", gets, oldGets)
			}
		})
	}
}

// TestAppliedPrefix: the scan's decision on what a look-up shows, including no-op records that
// match whether applied or not, and states no prefix explains.
func TestAppliedPrefix(t *testing.T) {
	g := func(id int64, name string) im.GroupItem { return im.GroupItem{GroupID: id, GroupName: name} }
	in := func(who string, ids ...int64) im.ContactInfo {
		return im.ContactInfo{Type: im.ContactC2C, ToAccount: who, ContactGroupID: ids}
	}
	cases := []struct {
		name     string
		evs      []*event.Event
		groups   []im.GroupItem
		contacts []im.ContactInfo
		want     int
	}{
		{"create rename, renamed", []*event.Event{pCreate("a", "bob"), pRename("a", "b")}, []im.GroupItem{g(1, "b")}, []im.ContactInfo{in("bob", 1)}, 2},
		{"create rename, created", []*event.Event{pCreate("a", "bob"), pRename("a", "b")}, []im.GroupItem{g(1, "a")}, []im.ContactInfo{in("bob", 1)}, 1},
		{"create rename, nothing", []*event.Event{pCreate("a", "bob"), pRename("a", "b")}, nil, nil, 0},
		{"rename delete, deleted", []*event.Event{pRename("a", "b"), pDelete("b")}, nil, nil, 2},
		{"rename delete, renamed", []*event.Event{pRename("a", "b"), pDelete("b")}, []im.GroupItem{g(1, "b")}, nil, 1},
		{"rename delete, nothing", []*event.Event{pRename("a", "b"), pDelete("b")}, []im.GroupItem{g(1, "a")}, nil, 0},
		// The new group holds a conversation the create did not bring: the old group, not deleted.
		{"delete create, old group still there", []*event.Event{pDelete("a"), pCreate("a", "carol")}, []im.GroupItem{g(1, "a")},
			[]im.ContactInfo{in("bob", 1)}, 0},
		{"delete create, recreated", []*event.Event{pDelete("a"), pCreate("a", "bob")}, []im.GroupItem{g(2, "a")},
			[]im.ContactInfo{in("bob", 2)}, 2},
		{"add delete create, old group", []*event.Event{pAdd("a", "bob"), pDelete("a"), pCreate("a")}, []im.GroupItem{g(1, "a")},
			[]im.ContactInfo{in("bob", 1)}, 1},
		// The remove can't have applied (dave is still there), so the no-op add after it can't
		// make it count as applied.
		{"remove then no-op add", []*event.Event{pRemove("a", "bob", "dave"), pAdd("a", "bob")}, []im.GroupItem{g(1, "a")},
			[]im.ContactInfo{in("bob", 1), in("dave", 1)}, 0},
		{"no-op add alone", []*event.Event{pAdd("a", "bob")}, []im.GroupItem{g(1, "a")}, []im.ContactInfo{in("bob", 1)}, 1},
		{"add, not there", []*event.Event{pAdd("a", "bob")}, []im.GroupItem{g(1, "a")}, nil, 0},
		{"remove, gone", []*event.Event{pRemove("a", "bob")}, []im.GroupItem{g(1, "a")}, []im.ContactInfo{in("bob", 2)}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := appliedPrefix(tc.evs, tc.groups, tc.contacts); got != tc.want {
				t.Errorf("appliedPrefix = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestPrefixScanFallsBack: the scan is skipped — each record checked on its own, as before —
// for an account with only creates, for a replay, without Uncertain, and when a later record
// is invalid.
func TestPrefixScanFallsBack(t *testing.T) {
	creates := numbered(pCreate("g1", "bob"), pCreate("g2", "carol"))
	mixed := numbered(pCreate("g1", "bob"), pRename("g1", "g2"))
	cases := []struct {
		name string
		task Task
	}{
		{"creates only", Task{Event: creates[0], Uncertain: true, Prefix: true, Later: creates[1:]}},
		{"replay", Task{Event: mixed[0], Uncertain: true, ReplayCount: 1, Prefix: true, Later: mixed[1:]}},
		{"not uncertain", Task{Event: mixed[0], Prefix: true, Later: mixed[1:]}},
		{"invalid later", Task{Event: mixed[0], Uncertain: true, Prefix: true, Later: []*event.Event{pRename("g1", "")}}},
		{"nil later", Task{Event: mixed[0], Uncertain: true, Prefix: true, Later: []*event.Event{nil}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			o := h.dispatch(tc.task)
			if o.Scanned || o.Result != Applied {
				t.Errorf("outcome %+v, want applied without a scan", o)
			}
		})
	}
}
