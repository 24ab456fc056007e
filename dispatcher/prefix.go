package dispatcher

import (
	"context"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
)

// Deciding which of an account's uncertain records a previous owner applied (the consumer's
// DESIGN.md, "Uncertain records of one account: the applied prefix").
//
// The previous owner dispatched an account's records one at a time in order, so the ones it
// applied are a prefix of them. A record's own existence check can't tell: the user's groups
// now also show the effects of the account's later records (a create whose group a later
// rename moved looks missing). appliedPrefix instead asks, for each prefix length k from the
// longest down, whether the groups seen now can be the result of applying exactly the first k
// records: it undoes them from the last back to the first, and each record's postcondition
// (what is certainly true right after it applied) must hold in the state reached so far.
// Undoing forgets what a record may have overwritten (whether a conversation an add brought was
// there before), and an unknown fact never contradicts. k = 0 always fits; the longest fitting
// k is the answer. A record that changes nothing (an add of conversations already there) fits
// whether applied or not: taking it as applied costs nothing, since sending it would change
// nothing either, and it can't carry an unapplied earlier record with it — that record must
// fit on its own, in the state before the no-op.

// tri is a fact the scan knows, knows the opposite of, or can't tell.
type tri int8

const (
	unknown tri = iota
	yes
	no
)

// holds reports whether want is consistent with what is known.
func (t tri) holds(want tri) bool { return t == unknown || t == want }

// scanGroup is one group name's state during the backward scan.
type scanGroup struct {
	exists  tri
	members map[string]tri // conversation key → in the group
}

func (g *scanGroup) member(k string) tri {
	if g.members == nil {
		return unknown
	}
	return g.members[k]
}

// scanState maps group names to what is known of them.
type scanState map[string]*scanGroup

func (s scanState) group(name string) *scanGroup {
	g := s[name]
	if g == nil {
		g = &scanGroup{}
		s[name] = g
	}
	return g
}

// observed is what a look-up shows of the names the events mention: each name's existence
// and, for an existing group, every conversation in it and each mentioned one not in it.
func observed(evs []*event.Event, groups []im.GroupItem, contacts []im.ContactInfo) scanState {
	keys := map[string]bool{}
	names := map[string]bool{}
	for _, ev := range evs {
		names[ev.GroupName] = true
		if ev.EventType == event.TypeContactGroupRenamed {
			names[ev.NewGroupName] = true
		}
		for _, c := range contactItems(ev.Contacts) {
			keys[c.Key()] = true
		}
	}
	in := map[int64][]string{} // group ID → conversations in it
	for _, c := range contacts {
		for _, id := range c.ContactGroupID {
			in[id] = append(in[id], c.Item().Key())
		}
	}
	s := scanState{}
	for name := range names {
		g := findGroup(groups, name)
		if g == nil {
			s[name] = &scanGroup{exists: no}
			continue
		}
		sg := &scanGroup{exists: yes, members: map[string]tri{}}
		for k := range keys {
			sg.members[k] = no
		}
		for _, k := range in[g.GroupID] {
			sg.members[k] = yes
		}
		s[name] = sg
	}
	return s
}

func (s scanState) clone() scanState {
	out := make(scanState, len(s))
	for name, g := range s {
		c := &scanGroup{exists: g.exists}
		if g.members != nil {
			c.members = make(map[string]tri, len(g.members))
			for k, v := range g.members {
				c.members[k] = v
			}
		}
		out[name] = c
	}
	return out
}

// undo checks that ev's postcondition holds in s (the state right after ev, by the scan's
// assumption) and turns s into the state right before ev. false: ev can't have been applied
// as the last of the records undone so far.
func (s scanState) undo(ev *event.Event) bool {
	g := s.group(ev.GroupName)
	switch ev.EventType {
	case event.TypeContactGroupRenamed:
		// After: the new name exists and the old one doesn't. Before: the group had the old
		// name, and the new name was free (a rename onto a taken name is refused).
		to := s.group(ev.NewGroupName)
		if !to.exists.holds(yes) || !g.exists.holds(no) {
			return false
		}
		s[ev.GroupName] = &scanGroup{exists: yes, members: to.members}
		s[ev.NewGroupName] = &scanGroup{exists: no}
	case event.TypeContactGroupContactsAdded, event.TypeContactGroupContactsRemoved:
		// After: the group exists; every conversation is in it (added) or out of it (removed).
		// Before: unknown (a conversation may have been there already, or not at all).
		want := yes
		if ev.EventType == event.TypeContactGroupContactsRemoved {
			want = no
		}
		if !g.exists.holds(yes) {
			return false
		}
		for _, c := range contactItems(ev.Contacts) {
			if !g.member(c.Key()).holds(want) {
				return false
			}
		}
		g.exists = yes
		for _, c := range contactItems(ev.Contacts) {
			if g.members != nil {
				delete(g.members, c.Key())
			}
		}
	case event.TypeContactGroupDeleted:
		// After: the name is free. Before: the group existed, contents unknown.
		if !g.exists.holds(no) {
			return false
		}
		s[ev.GroupName] = &scanGroup{exists: yes}
	default:
		// Created. After: the group exists and holds no conversation but its own (some of
		// those may be missing: a partial create still applied). Before: the name was free.
		if !g.exists.holds(yes) {
			return false
		}
		own := map[string]bool{}
		for _, c := range contactItems(ev.Contacts) {
			own[c.Key()] = true
		}
		for k, v := range g.members {
			if !own[k] && v == yes {
				return false
			}
		}
		s[ev.GroupName] = &scanGroup{exists: no}
	}
	return true
}

// appliedPrefix is how many of evs (one account's uncertain records, in dispatch order) a
// previous owner applied, judged from the user's groups and grouped conversations seen now: the
// longest prefix whose undoing, last record first, contradicts nothing seen.
func appliedPrefix(evs []*event.Event, groups []im.GroupItem, contacts []im.ContactInfo) int {
	seen := observed(evs, groups, contacts)
	for k := len(evs); k > 0; k-- {
		s := seen.clone()
		ok := true
		for i := k - 1; i >= 0 && ok; i-- {
			ok = s.undo(evs[i])
		}
		if ok {
			return k
		}
	}
	return 0
}

// scanList is ev and later for a prefix scan, or nil (each record is checked on its own, as
// before contract v2) when a later record is not valid — the scan's reasoning needs every
// record's type and names — or when all are creates: a create never hides an earlier record's
// effect, and checking each on its own also copes with a create the previous owner had
// dead-lettered (no effect) between applied ones, which the scan would take for a gap.
func scanList(ev *event.Event, later []*event.Event) []*event.Event {
	out := make([]*event.Event, 0, 1+len(later))
	out = append(out, ev)
	creates := ev.EventType == event.TypeContactGroupCreated
	for _, l := range later {
		if l == nil || l.Validate() != nil || l.FromAccount != ev.FromAccount {
			return nil
		}
		creates = creates && l.EventType == event.TypeContactGroupCreated
		out = append(out, l)
	}
	if creates {
		return nil
	}
	return out
}

// scanPrefix makes the one look-up of a prefix scan and acts on ev's place in the decision:
// inside the prefix and not its last, applied without a call; its last, the type's own
// existence check on the same look-up (it completes a partly applied record); outside it, no
// check (nothing of it was applied, nor of anything after it).
func (r *run) scanPrefix(ctx context.Context) (*Outcome, string, error) {
	lk, o, api, err := r.lookUp(ctx)
	if lk == nil {
		return o, api, err
	}
	n := appliedPrefix(r.scan, lk.groups, lk.contacts)
	r.scan, r.scanned, r.prefix = nil, true, n
	switch n {
	case 0:
		r.found(false)
		r.check = false
		return nil, "", nil
	case 1:
		r.cached = lk
		return r.op.look(ctx, r)
	}
	r.found(true)
	return r.applied(), "", nil
}
