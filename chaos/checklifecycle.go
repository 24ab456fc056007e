package chaos

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
)

// The lifecycle event types of contract v2 (Record.Type). A create is "" or
// EventCreated.
const (
	EventCreated         = "contact_group.created"
	EventRenamed         = "contact_group.renamed"
	EventContactsAdded   = "contact_group.contacts_added"
	EventContactsRemoved = "contact_group.contacts_removed"
	EventDeleted         = "contact_group.deleted"
)

// lifecycle reports whether the record is one of the v2 lifecycle events (not a create).
func (r *Record) lifecycle() bool { return r.Type != "" && r.Type != EventCreated }

// An effect is one change to a user's groups that the checker counts: a rename, one
// conversation added or removed, a group deleted. Creates are judged on their own
// (appliedCreates), a group name being created once per create event.
type effect struct {
	op    string // "rename", "add", "remove", "delete"
	group string // the group's name when the effect happened
	arg   string // rename: the new name; add, remove: the conversation's key
}

func (e effect) String() string {
	if e.arg == "" {
		return e.op + " " + e.group
	}
	return e.op + " " + e.group + " " + e.arg
}

// wanted is an effect some event must have, and whether a call had it yet.
type wanted struct {
	effect
	rec  *Record
	used bool
}

// lifecycleResult is what checkLifecycle found per lifecycle record.
type lifecycleResult struct {
	applied   map[*Record]bool      // every effect the record wanted happened (or it wanted none)
	appliedAt map[*Record]time.Time // when its first effect happened
}

// checkLifecycle judges the lifecycle events against the calls that changed state.
//
// It plays each account's valid events in seq order on a model of the account's groups (the
// events with Kind Valid must all apply, so each must find its group — and a rename its new
// name free): the effects each event must have are the changes it makes to the model (an add
// of a conversation already in the group, a remove of one not in it and so a no-op event want
// nothing). Then it walks the account's calls in the order they ran (one at a time per
// account, so the order is total) and takes what each changed — Applied renames, the
// conversations of an add/remove with Changed set, the groups in Deleted; never a call that
// answered 51009 or changed nothing, so a retried delete of a group that is gone is no effect —
// and matches each effect to the earliest event in seq order that wants it and has not had it.
// An effect no event still wants is a double effect when an event already had it (the event
// was applied twice), else an effect no event asked for. An event left wanting is lost unless
// it was dead-lettered (which is itself a wrong outcome for a valid event).
//
// The model ignores the per-user limits (20 groups, 1000 conversations): a schedule that
// reaches them must mark the events they reject as Rejected.
func checkLifecycle(r *Report, recs []Record, calls []imsim.Call) lifecycleResult {
	res := lifecycleResult{applied: map[*Record]bool{}, appliedAt: map[*Record]time.Time{}}
	byAcct := map[string][]*Record{}
	for i := range recs {
		rec := &recs[i]
		if rec.Kind == Valid {
			byAcct[rec.Account] = append(byAcct[rec.Account], rec)
		}
	}
	want := map[string][]*wanted{}
	for acct, rs := range byAcct {
		slices.SortStableFunc(rs, func(a, b *Record) int { return cmp.Compare(a.Seq, b.Seq) })
		want[acct] = modelEffects(r, acct, rs)
	}
	var changing []imsim.Call
	for _, c := range calls {
		if c.Applied && (c.API == im.APIUpdate || c.API == im.APIDelete) {
			changing = append(changing, c)
		}
	}
	slices.SortStableFunc(changing, func(a, b imsim.Call) int { return a.Start.Compare(b.Start) })
	for _, c := range changing {
		for _, e := range callEffects(c) {
			matchEffect(r, c, e, want[c.Account], res)
		}
	}
	missing := map[*Record][]effect{}
	for _, ws := range want {
		for _, w := range ws {
			if !w.used {
				missing[w.rec] = append(missing[w.rec], w.effect)
			}
		}
	}
	for _, rs := range byAcct {
		for _, rec := range rs {
			if rec.lifecycle() && len(missing[rec]) == 0 {
				res.applied[rec] = true
			}
		}
	}
	return res
}

// matchEffect gives e, which call c had, to the first event of the account that wants it.
func matchEffect(r *Report, c imsim.Call, e effect, ws []*wanted, res lifecycleResult) {
	had := false
	for _, w := range ws {
		if w.effect != e {
			continue
		}
		if w.used {
			had = true
			continue
		}
		w.used = true
		if at, ok := res.appliedAt[w.rec]; !ok || c.Start.Before(at) {
			res.appliedAt[w.rec] = c.Start
		}
		return
	}
	at := c.Start.Format("15:04:05.000")
	if had {
		r.DoubleEffects++
		r.problem("double", "account %s: %s applied again by %s at %s (answered %d)", c.Account, e, c.API, at, c.Code)
		return
	}
	r.WrongOutcome++
	r.problem("outcome", "account %s: %s by %s at %s, which no event asked for", c.Account, e, c.API, at)
}

// callEffects lists what an applied update or delete changed.
func callEffects(c imsim.Call) []effect {
	var out []effect
	switch {
	case c.API == im.APIDelete:
		for _, g := range c.Deleted {
			out = append(out, effect{op: "delete", group: g})
		}
	case c.UpdateType == im.UpdateGroupTypeRename:
		out = append(out, effect{op: "rename", group: c.Group, arg: c.NewGroup})
	default:
		for i, it := range c.Contacts {
			if i >= len(c.Changed) || !c.Changed[i] {
				continue
			}
			op := "add"
			if i < len(c.Ops) && c.Ops[i] == im.ContactOptDel {
				op = "remove"
			}
			out = append(out, effect{op: op, group: c.Group, arg: it.Key()})
		}
	}
	return out
}

// modelEffects plays one account's valid events, in seq order, on a model of its groups and
// returns the lifecycle effects they must have, in that order. An event the model cannot apply
// is a schedule that contradicts itself (a valid rename of a missing group must be Rejected):
// reported as a wrong outcome, so the schedule is fixed rather than the run trusted.
func modelEffects(r *Report, acct string, rs []*Record) []*wanted {
	groups := map[string][]string{} // name → conversation keys
	var out []*wanted
	bad := func(rec *Record, why string) {
		r.WrongOutcome++
		r.problem("outcome", "account %s seq %d (%s %s): the schedule marks it valid, but %s", acct, rec.Seq, rec.Type, rec.EventID, why)
	}
	for _, rec := range rs {
		keys, exists := groups[rec.Group]
		if !rec.lifecycle() {
			// A create of a name that exists is judged by appliedCreates (it is refused).
			groups[rec.Group] = addKeys(nil, rec.Contacts)
			continue
		}
		if !exists {
			bad(rec, fmt.Sprintf("group %q does not exist then", rec.Group))
			continue
		}
		want := func(e effect) { out = append(out, &wanted{effect: e, rec: rec}) }
		switch rec.Type {
		case EventRenamed:
			if _, taken := groups[rec.NewGroup]; taken || rec.NewGroup == rec.Group {
				bad(rec, fmt.Sprintf("group %q already exists", rec.NewGroup))
				continue
			}
			delete(groups, rec.Group)
			groups[rec.NewGroup] = keys
			want(effect{op: "rename", group: rec.Group, arg: rec.NewGroup})
		case EventContactsAdded:
			for _, c := range rec.Contacts {
				if !slices.Contains(keys, c.Key()) {
					keys = append(keys, c.Key())
					want(effect{op: "add", group: rec.Group, arg: c.Key()})
				}
			}
			groups[rec.Group] = keys
		case EventContactsRemoved:
			for _, c := range rec.Contacts {
				if i := slices.Index(keys, c.Key()); i >= 0 {
					keys = slices.Delete(keys, i, i+1)
					want(effect{op: "remove", group: rec.Group, arg: c.Key()})
				}
			}
			groups[rec.Group] = keys
		case EventDeleted:
			delete(groups, rec.Group)
			want(effect{op: "delete", group: rec.Group})
		default:
			bad(rec, fmt.Sprintf("event type %q is unknown", rec.Type))
		}
	}
	return out
}

func addKeys(keys []string, cs []im.ContactItem) []string {
	for _, c := range cs {
		if !slices.Contains(keys, c.Key()) {
			keys = append(keys, c.Key())
		}
	}
	return keys
}
