package loadgen

import (
	"fmt"
	"maps"
	"slices"

	"github.com/chatgroupd/chatgroupd/event"
)

// maxConversations is the IM API's cap on the conversations across one user's groups (51008).
// The generator counts a conversation once per group it is in, which never undercounts.
const maxConversations = 1000

// group is one conversation group as it is once the account's events so far are applied.
type group struct {
	name     string
	contacts []event.Contact
}

// account is one active account's life so far.
type account struct {
	name       string
	seq        int64
	groupsMade int      // creates emitted, over-quota ones included
	limit      int      // creates before retiring; > 20 for an over-quota account
	overQuota  bool     // creates only, past the 20-group quota
	live       []*group // groups that exist, in creation order
	convs      int      // conversations across live groups
}

// removable returns the live groups a contacts_removed event may act on: those with at least
// two conversations, so a group is never emptied (what the API does with an empty group is not
// documented).
func (a *account) removable() []*group {
	var gs []*group
	for _, gr := range a.live {
		if len(gr.contacts) >= 2 {
			gs = append(gs, gr)
		}
	}
	return gs
}

// can reports whether an event of type t has something to act on in a's current state.
func (a *account) can(t event.Type) bool {
	switch t {
	case event.TypeContactGroupCreated:
		return a.groupsMade < a.limit && (a.overQuota || a.convs < maxConversations)
	case event.TypeContactGroupContactsAdded:
		return len(a.live) > 0 && a.convs < maxConversations
	case event.TypeContactGroupContactsRemoved:
		return slices.ContainsFunc(a.live, func(gr *group) bool { return len(gr.contacts) >= 2 })
	}
	return len(a.live) > 0 // renamed, deleted
}

// pickType draws the type of a's next event from the mix, among the types a can do now. ok is
// false when it can do none (retire already retires such accounts; this is a safety net).
func (g *Generator) pickType(a *account) (event.Type, bool) {
	create := event.TypeContactGroupCreated
	if g.cfg.Mix.IsV1() || a.overQuota {
		return create, a.can(create)
	}
	w := g.cfg.Mix.weights()
	var sum float64
	for i, t := range event.Types() {
		if !a.can(t) {
			w[i] = 0
		}
		sum += w[i]
	}
	if sum == 0 {
		return "", false
	}
	x := g.rng.Float64() * sum
	for i, t := range event.Types() {
		if w[i] > 0 && x < w[i] {
			return t, true
		}
		x -= w[i]
	}
	for i := len(w) - 1; ; i-- { // rounding left x at sum: the last possible type
		if w[i] > 0 {
			return event.Types()[i], true
		}
	}
}

// done reports whether a, having just emitted an event, retires. A creates-only account retires
// with its last group made. A lifecycle account goes on acting on its groups after that and
// retires when it would create again (the user moves on: a draw with the create weight's share)
// or has nothing left to act on.
func (g *Generator) done(a *account) bool {
	create := event.TypeContactGroupCreated
	if a.can(create) {
		return false
	}
	if g.cfg.Mix.IsV1() || a.overQuota {
		return true
	}
	w := g.cfg.Mix.weights()
	var sum, other float64
	for i, t := range event.Types() {
		sum += w[i]
		if t != create && a.can(t) {
			other += w[i]
		}
	}
	return other == 0 || g.rng.Float64()*sum < w[0]
}

// State is what a correct pipeline leaves at the API: per account, its groups by name, each with
// its conversations (in no particular order).
type State map[string]map[string][]event.Contact

// groups returns a's groups as a State entry.
func (a *account) groups() map[string][]event.Contact {
	m := make(map[string][]event.Contact, len(a.live))
	for _, gr := range a.live {
		m[gr.name] = slices.Clone(gr.contacts)
	}
	return m
}

// State returns the groups every account has once each valid event generated so far is applied
// once, in its account's seq order; rejected (over-quota), invalid and duplicate records change
// nothing. Retired accounts are included only with Config.KeepState. Call Flush first when a
// swapped partner may still be held back: State already counts it.
func (g *Generator) State() State {
	s := make(State, len(g.final)+len(g.accounts))
	for name, gs := range g.final {
		s[name] = maps.Clone(gs)
	}
	for _, a := range g.accounts {
		if len(a.live) > 0 {
			s[a.name] = a.groups()
		}
	}
	return s
}

// Diff compares got, a state read back from the API (or a simulator), with s, the state the
// stream must leave, and describes each difference: an account's group missing or extra, or its
// conversations differing (compared as sets). It returns nil when they are equal; accounts
// without groups may be absent from either.
func (s State) Diff(got State) []string {
	var out []string
	for _, acct := range slices.Sorted(maps.Keys(unionKeys(s, got))) {
		want, have := s[acct], got[acct]
		for _, name := range slices.Sorted(maps.Keys(unionKeys(want, have))) {
			w, inWant := want[name]
			h, inHave := have[name]
			switch {
			case !inHave:
				out = append(out, fmt.Sprintf("%s: group %q missing", acct, name))
			case !inWant:
				out = append(out, fmt.Sprintf("%s: group %q should not exist", acct, name))
			default:
				if miss, extra := setDiff(w, h), setDiff(h, w); len(miss)+len(extra) > 0 {
					out = append(out, fmt.Sprintf("%s: group %q lacks %v, has extra %v", acct, name, miss, extra))
				}
			}
		}
	}
	return out
}

func unionKeys[V any](a, b map[string]V) map[string]bool {
	u := make(map[string]bool, len(a)+len(b))
	for k := range a {
		u[k] = true
	}
	for k := range b {
		u[k] = true
	}
	return u
}

// setDiff returns the contacts of a that are not in b.
func setDiff(a, b []event.Contact) []event.Contact {
	var out []event.Contact
	for _, c := range a {
		if !slices.Contains(b, c) {
			out = append(out, c)
		}
	}
	return out
}
