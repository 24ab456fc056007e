package chaos

import (
	"fmt"
	"slices"
	"time"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
)

// acctGroups is one account's groups as its events so far leave them, in creation order.
type acctGroups struct {
	names    []string
	contacts map[string][]event.Contact
}

// lifecycleEvent returns the account's next event under EventsLifecycle: a create when it has
// no group, else a create (40%), an add (25%), a remove (10%, of a group with two or more
// conversations, leaving one), a rename (15%) or a delete (10%) of a group it has. Each event
// is valid in the account's seq order, so every one must apply.
func (g *generator) lifecycleEvent(acct string) Record {
	a := g.groups[acct]
	if a == nil {
		a = &acctGroups{contacts: map[string][]event.Contact{}}
		g.groups[acct] = a
	}
	u := g.rng.Float64()
	if len(a.names) == 0 || u < 0.4 {
		r := g.create(acct)
		a.names = append(a.names, r.Group)
		a.contacts[r.Group] = eventContacts(r.Contacts)
		return r
	}
	name := a.names[g.rng.IntN(len(a.names))]
	have := a.contacts[name]
	g.n++
	g.seq[acct]++
	id := fmt.Sprintf("c%d-%d", g.o.Seed, g.n)
	var e *event.Event
	switch {
	case u < 0.65:
		var add []event.Contact
		for range 1 + g.rng.IntN(2) {
			c := event.ToAccount(fmt.Sprintf("peer-%d", g.rng.IntN(50)))
			if g.rng.IntN(4) == 0 {
				c = event.ToGroup(fmt.Sprintf("@TGS#%d", g.rng.IntN(20)))
			}
			if !slices.Contains(have, c) && !slices.Contains(add, c) {
				add = append(add, c)
			}
		}
		if len(add) == 0 { // every draw is in the group already: a re-add, no effect wanted
			add = []event.Contact{have[0]}
		}
		e = event.NewContactsAdded(id, acct, name, add...)
		for _, c := range add {
			if !slices.Contains(have, c) {
				have = append(have, c)
			}
		}
		a.contacts[name] = have
	case u < 0.75 && len(have) >= 2:
		i := g.rng.IntN(len(have))
		e = event.NewContactsRemoved(id, acct, name, have[i])
		a.contacts[name] = slices.Delete(slices.Clone(have), i, i+1)
	case u < 0.9:
		to := fmt.Sprintf("g%d-%d", g.o.Seed%100000, g.n)
		e = event.NewRenamed(id, acct, name, to)
		a.names[slices.Index(a.names, name)] = to
		delete(a.contacts, name)
		a.contacts[to] = have
	default:
		e = event.NewDeleted(id, acct, name)
		a.names = slices.DeleteFunc(a.names, func(n string) bool { return n == name })
		delete(a.contacts, name)
	}
	e.Seq = g.seq[acct]
	e.OccurredAt = time.Unix(1_700_000_000+int64(g.n), 0).UTC()
	v, err := e.Marshal()
	if err != nil {
		panic(fmt.Sprintf("chaos: generated event does not marshal: %v", err)) // a bug here, not a run outcome
	}
	rec := Record{Key: []byte(acct), Value: v, Kind: Valid, Account: acct, Seq: e.Seq, EventID: id, Type: string(e.EventType),
		Group: name, NewGroup: e.NewGroupName}
	for _, c := range e.Contacts {
		rec.Contacts = append(rec.Contacts, im.ContactItem{Type: c.Type, ToAccount: c.ToAccount, ToGroupID: c.ToGroupID})
	}
	return rec
}

func eventContacts(items []im.ContactItem) []event.Contact {
	out := make([]event.Contact, len(items))
	for i, c := range items {
		out[i] = event.Contact{Type: c.Type, ToAccount: c.ToAccount, ToGroupID: c.ToGroupID}
	}
	return out
}
