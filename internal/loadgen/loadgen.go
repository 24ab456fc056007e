// Package loadgen produces realistic contact-group event streams: valid events in per-account seq
// order, with configurable shares of duplicates, swapped seq pairs, invalid records and accounts
// that run over the IM 20-group quota. With a lifecycle Mix, accounts also rename, add and remove
// conversations and delete groups, always of groups they created earlier in the stream. It counts
// what a correct pipeline must do with the records and keeps the groups each account must end up
// with, so the demo, benchmarks and tests can check invariants instead of eyeballing output.
// Writer and Produce put a stream on a Kafka topic the way real producers do.
package loadgen

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/chatgroupd/chatgroupd/event"
)

// Kind is what a generated record is meant to exercise.
type Kind int

const (
	Valid     Kind = iota // a new event that the API accepts
	Duplicate             // a byte-identical re-send of an earlier valid event
	Invalid               // a record that breaks the event contract (docs/events.md)
	OverQuota             // a valid event for an account already at 20 groups: 51010 expected
)

func (k Kind) String() string {
	return [...]string{"valid", "duplicate", "invalid", "over_quota"}[k]
}

// Record is one generated Kafka record.
type Record struct {
	Key     []byte
	Value   []byte
	Kind    Kind
	EventID string
	Type    event.Type // the event's type; "" for an invalid record
}

// Defaults of Config.
const (
	DefaultAccounts         = 100
	DefaultGroupsPerAccount = 15
	DefaultMaxContacts      = 5
	DefaultOverQuotaExtra   = 3
	DefaultPrefix           = "user"
)

// Config shapes the stream. Rates are fractions of the records generated. Zero values take the
// defaults documented on the fields.
type Config struct {
	Accounts int // accounts active at once (DefaultAccounts)
	// GroupsPerAccount is how many valid groups an account creates before it is retired and a
	// fresh one takes its place; keep it under the API's 20 (DefaultGroupsPerAccount).
	GroupsPerAccount int
	MaxContacts      int     // contacts per event, 1..MaxContacts (DefaultMaxContacts)
	DuplicateRate    float64 // default 0
	InvalidRate      float64
	SwapRate         float64 // chance a valid event is emitted together with its successor, swapped
	// OverQuotaAccounts is how many accounts push past 20 groups, each producing
	// OverQuotaExtra events that must be rejected with 51010.
	OverQuotaAccounts int
	OverQuotaExtra    int    // DefaultOverQuotaExtra
	Prefix            string // of account names (DefaultPrefix)
	// Mix weighs the event types of an account's life; the zero Mix (MixV1) is creates only.
	// With another mix an account renames, adds to, removes from and deletes only groups it
	// created earlier in the stream, and retires once it has created GroupsPerAccount groups
	// and draws another create. Over-quota accounts only create.
	Mix Mix
	// KeepState keeps the final groups of retired accounts for State (memory grows with the
	// stream); without it State covers the active accounts only.
	KeepState bool
	Seed      uint64
	Now       func() time.Time
}

// setDefaults fills the zero fields with the defaults above.
func (c *Config) setDefaults() {
	c.Accounts = cmp.Or(c.Accounts, DefaultAccounts)
	c.GroupsPerAccount = cmp.Or(c.GroupsPerAccount, DefaultGroupsPerAccount)
	c.MaxContacts = cmp.Or(c.MaxContacts, DefaultMaxContacts)
	c.OverQuotaExtra = cmp.Or(c.OverQuotaExtra, DefaultOverQuotaExtra)
	c.Prefix = cmp.Or(c.Prefix, DefaultPrefix)
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports every problem of c, defaults applied, joined, each naming its field.
func (c Config) Validate() error {
	c.setDefaults()
	var errs []error
	if c.Accounts < 1 {
		errs = append(errs, fmt.Errorf("accounts: must be >= 1, got %d", c.Accounts))
	}
	if c.GroupsPerAccount < 1 || c.GroupsPerAccount > 20 {
		errs = append(errs, fmt.Errorf("groups per account: must be 1-20, got %d", c.GroupsPerAccount))
	}
	if c.MaxContacts < 1 || c.MaxContacts > event.MaxContacts {
		errs = append(errs, fmt.Errorf("max contacts: must be 1-%d, got %d", event.MaxContacts, c.MaxContacts))
	}
	for _, r := range []struct {
		name string
		v    float64
	}{{"duplicate rate", c.DuplicateRate}, {"invalid rate", c.InvalidRate}, {"swap rate", c.SwapRate}} {
		if r.v < 0 || r.v > 0.5 {
			errs = append(errs, fmt.Errorf("%s: must be within 0-0.5, got %g", r.name, r.v))
		}
	}
	if c.OverQuotaAccounts < 0 {
		errs = append(errs, fmt.Errorf("over-quota accounts: must be >= 0, got %d", c.OverQuotaAccounts))
	}
	if err := c.Mix.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Expect is what a correct pipeline does with everything generated so far.
type Expect struct {
	Valid      int // events that must be applied
	Duplicates int // records that must be dropped as duplicates
	Invalid    int // records that must be dead-lettered as invalid
	OverQuota  int // events that must be dead-lettered as rejected with 51010
	Swapped    int // seq pairs emitted out of order
	// ByType splits Valid by event type; with MixV1 all are creates.
	ByType TypeCounts
}

// Total is every record generated.
func (e Expect) Total() int { return e.Valid + e.Duplicates + e.Invalid + e.OverQuota }

// Generator makes records. It is not safe for concurrent use.
type Generator struct {
	cfg      Config
	rng      *rand.Rand
	accounts []*account
	retired  int
	final    State    // retired accounts' groups, with KeepState
	recent   []Record // ring of recent valid records, source of duplicates
	pending  []Record // the swapped partner waiting to be emitted
	quotaLen int      // over-quota accounts still to start
	invalids int      // invalid records made, to rotate their kinds
	expect   Expect   // of the records Next has returned
}

// New returns a generator for cfg (zero fields take defaults).
func New(cfg Config) (*Generator, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	g := &Generator{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)), quotaLen: cfg.OverQuotaAccounts}
	if cfg.KeepState {
		g.final = State{}
	}
	for i := 0; i < cfg.Accounts; i++ {
		g.accounts = append(g.accounts, g.newAccount())
	}
	return g, nil
}

func (g *Generator) newAccount() *account {
	a := &account{name: g.cfg.Prefix + "-" + strconv.Itoa(g.retired+len(g.accounts)), limit: g.cfg.GroupsPerAccount}
	if g.quotaLen > 0 {
		g.quotaLen--
		a.limit = 20 + g.cfg.OverQuotaExtra
		a.overQuota = true
	}
	return a
}

// retire replaces a with a fresh account, keeping a's groups when asked to.
func (g *Generator) retire(a *account) *account {
	for i, b := range g.accounts {
		if b == a {
			if g.final != nil && len(a.live) > 0 {
				g.final[a.name] = a.groups()
			}
			g.retired++
			g.accounts[i] = g.newAccount()
			return g.accounts[i]
		}
	}
	panic("loadgen: retiring an account that is not active") // a bug in this file
}

// Expect returns the expectation for everything generated so far.
func (g *Generator) Expect() Expect { return g.expect }

// Next returns the next record. The expectation counts a record when Next returns it, so a
// swapped partner still held back is not expected until it is emitted.
func (g *Generator) Next() Record {
	r := g.next()
	switch r.Kind {
	case Valid:
		g.expect.Valid++
	case Duplicate:
		g.expect.Duplicates++
	case Invalid:
		g.expect.Invalid++
	case OverQuota:
		g.expect.OverQuota++
	}
	if r.Kind == Valid {
		g.expect.ByType.add(r.Type)
	}
	return r
}

// Flush returns the swapped partner held back, if any, counting it like Next: afterwards the
// expectation and State cover exactly the records returned.
func (g *Generator) Flush() []Record {
	var out []Record
	for len(g.pending) > 0 {
		out = append(out, g.Next())
	}
	return out
}

func (g *Generator) next() Record {
	if len(g.pending) > 0 {
		r := g.pending[0]
		g.pending = g.pending[1:]
		g.expect.Swapped++ // the pair is complete, in swapped order
		return r
	}
	x := g.rng.Float64()
	switch {
	case x < g.cfg.InvalidRate:
		return g.invalid()
	case x < g.cfg.InvalidRate+g.cfg.DuplicateRate && len(g.recent) > 0:
		r := g.recent[g.rng.IntN(len(g.recent))]
		r.Kind = Duplicate
		return r
	}
	i := g.rng.IntN(len(g.accounts))
	a := g.accounts[i]
	first := g.valid(a)
	if g.rng.Float64() < g.cfg.SwapRate && g.accounts[i] == a {
		second := g.valid(a)
		g.pending = append(g.pending, first)
		return second
	}
	return first
}

// valid makes the account's next event (or, when the account retires instead, its
// replacement's first), in the account's seq order.
func (g *Generator) valid(a *account) Record {
	t, ok := g.pickType(a)
	if !ok {
		a = g.retire(a) // only if done missed it
		t, _ = g.pickType(a)
	}
	a.seq++
	ev := event.Event{
		EventID:     fmt.Sprintf("%s-%d-%016x", a.name, a.seq, g.rng.Uint64()),
		EventType:   t,
		FromAccount: a.name,
		Seq:         a.seq,
		OccurredAt:  g.cfg.Now().UTC(),
	}
	kind := Valid
	switch t {
	case event.TypeContactGroupCreated:
		kind = g.create(a, &ev)
	case event.TypeContactGroupRenamed:
		gr := a.live[g.rng.IntN(len(a.live))]
		ev.GroupName, ev.NewGroupName = gr.name, groupName(a.seq)
		gr.name = ev.NewGroupName
	case event.TypeContactGroupContactsAdded:
		gr := a.live[g.rng.IntN(len(a.live))]
		ev.GroupName = gr.name
		ev.Contacts = g.newContacts(min(1+g.rng.IntN(g.cfg.MaxContacts), maxConversations-a.convs), gr.contacts)
		gr.contacts = append(gr.contacts, ev.Contacts...)
		a.convs += len(ev.Contacts)
	case event.TypeContactGroupContactsRemoved:
		rs := a.removable()
		gr := rs[g.rng.IntN(len(rs))]
		ev.GroupName = gr.name
		n := 1 + g.rng.IntN(min(g.cfg.MaxContacts, len(gr.contacts)-1))
		g.rng.Shuffle(len(gr.contacts), func(i, j int) { gr.contacts[i], gr.contacts[j] = gr.contacts[j], gr.contacts[i] })
		ev.Contacts = slices.Clone(gr.contacts[:n])
		gr.contacts = slices.Delete(gr.contacts, 0, n)
		a.convs -= n
	case event.TypeContactGroupDeleted:
		i := g.rng.IntN(len(a.live))
		ev.GroupName = a.live[i].name
		a.convs -= len(a.live[i].contacts)
		a.live = slices.Delete(a.live, i, i+1)
	}
	v, err := ev.Marshal()
	if err != nil {
		panic("loadgen: generated an invalid event: " + err.Error()) // a bug in this file
	}
	r := Record{Key: ev.Key(), Value: v, Kind: kind, EventID: ev.EventID, Type: t}
	if kind == Valid {
		if len(g.recent) < 1024 {
			g.recent = append(g.recent, r)
		} else {
			g.recent[g.rng.IntN(len(g.recent))] = r
		}
	}
	if g.done(a) {
		g.retire(a)
	}
	return r
}

// create fills a create event and, unless it is over the 20-group quota, adds the group.
func (g *Generator) create(a *account, ev *event.Event) Kind {
	a.groupsMade++
	ev.GroupName = groupName(a.seq)
	n := 1 + g.rng.IntN(g.cfg.MaxContacts)
	if a.overQuota {
		// Small enough that 20 groups fit under the conversation cap: the 21st create must
		// fail for the group count (51010), not for its conversations.
		n = min(n, maxConversations/20)
	}
	if a.groupsMade > 20 {
		ev.Contacts = g.newContacts(n, nil)
		return OverQuota // rejected with 51010: the group never exists
	}
	ev.Contacts = g.newContacts(min(n, maxConversations-a.convs), nil)
	a.live = append(a.live, &group{name: ev.GroupName, contacts: slices.Clone(ev.Contacts)})
	a.convs += len(ev.Contacts)
	return Valid
}

// groupName names the group an account's event seq creates or renames to: unique in the
// account's life, so a name never means two groups.
func groupName(seq int64) string { return "group-" + strconv.FormatInt(seq, 10) }

// newContacts makes n conversations, none of them already in have or repeated.
func (g *Generator) newContacts(n int, have []event.Contact) []event.Contact {
	cs := make([]event.Contact, 0, n)
	for len(cs) < n {
		var c event.Contact
		if g.rng.IntN(4) == 0 {
			c = event.ToGroup("@TGS#" + strconv.Itoa(g.rng.IntN(1_000_000)))
		} else {
			c = event.ToAccount("peer-" + strconv.Itoa(g.rng.IntN(1_000_000)))
		}
		if !slices.Contains(have, c) && !slices.Contains(cs, c) {
			cs = append(cs, c)
		}
	}
	return cs
}

// InvalidKinds names the ways invalid() breaks the contract, in rotation order.
var invalidKinds = []string{"bad_json", "bad_utf8", "missing_field", "long_name", "too_many_contacts", "unknown_type", "wrong_contact_type"}

// lifecycleInvalidKinds are the ways a v2 event breaks its type's rules, rotated in after
// invalidKinds when the mix has v2 types.
var lifecycleInvalidKinds = []string{"rename_to_same_name", "rename_without_new_name", "delete_with_contacts", "add_without_contacts"}

func (g *Generator) invalid() Record {
	kinds := invalidKinds
	if !g.cfg.Mix.IsV1() {
		kinds = append(slices.Clip(invalidKinds), lifecycleInvalidKinds...)
	}
	kind := kinds[g.invalids%len(kinds)]
	id := fmt.Sprintf("bad-%d-%016x", g.invalids, g.rng.Uint64())
	g.invalids++
	acct := g.cfg.Prefix + "-invalid"
	base := map[string]any{
		"event_id": id, "event_type": event.TypeContactGroupCreated, "from_account": acct,
		"group_name": "g", "contacts": []map[string]any{{"type": 1, "to_account": "x"}},
	}
	var v []byte
	switch kind {
	case "bad_json":
		v = []byte(`{"event_id":"` + id + `",`)
	case "bad_utf8":
		v = []byte("{\"event_id\":\"" + id + "\",\"group_name\":\"\xff\xfe\"}")
	case "missing_field":
		delete(base, "group_name")
	case "long_name":
		base["group_name"] = "this-group-name-is-33-bytes-long!"
	case "too_many_contacts":
		cs := make([]map[string]any, event.MaxContacts+1)
		for i := range cs {
			cs[i] = map[string]any{"type": 1, "to_account": "p" + strconv.Itoa(i)}
		}
		base["contacts"] = cs
	case "unknown_type":
		base["event_type"] = "contact_group.archived"
	case "wrong_contact_type":
		base["contacts"] = []map[string]any{{"type": 3, "to_account": "x"}}
	case "rename_to_same_name":
		base["event_type"], base["new_group_name"] = event.TypeContactGroupRenamed, base["group_name"]
		delete(base, "contacts")
	case "rename_without_new_name":
		base["event_type"] = event.TypeContactGroupRenamed
	case "delete_with_contacts":
		base["event_type"] = event.TypeContactGroupDeleted
	case "add_without_contacts":
		base["event_type"] = event.TypeContactGroupContactsAdded
		delete(base, "contacts")
	}
	if v == nil {
		v, _ = json.Marshal(base)
	}
	return Record{Key: []byte(acct), Value: v, Kind: Invalid, EventID: id}
}
