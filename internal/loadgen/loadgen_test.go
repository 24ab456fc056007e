package loadgen

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/internal/configtest"
)

func TestGeneratorMatchesExpectation(t *testing.T) {
	g, err := New(Config{Accounts: 10, DuplicateRate: 0.05, InvalidRate: 0.05, SwapRate: 0.1, OverQuotaAccounts: 2, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	counts := map[Kind]int{}
	seen := map[string]bool{}
	groups := map[string]map[string]bool{}
	seqs := map[string][]int64{}
	for i := 0; i < 5000; i++ {
		r := g.Next()
		counts[r.Kind]++
		ev, err := event.Parse(r.Value)
		if r.Kind == Invalid {
			if !errors.Is(err, event.ErrInvalid) {
				t.Fatalf("invalid record parsed fine: %s", r.Value)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s record does not parse: %v", r.Kind, err)
		}
		if string(r.Key) != ev.FromAccount {
			t.Fatalf("key %q != account %q", r.Key, ev.FromAccount)
		}
		if r.Kind == Duplicate {
			if !seen[ev.EventID] {
				t.Fatalf("duplicate of an event never sent: %s", ev.EventID)
			}
			continue
		}
		if seen[ev.EventID] {
			t.Fatalf("event id %s reused by a non-duplicate", ev.EventID)
		}
		seen[ev.EventID] = true
		if groups[ev.FromAccount] == nil {
			groups[ev.FromAccount] = map[string]bool{}
		}
		if groups[ev.FromAccount][ev.GroupName] {
			t.Fatalf("group name %s repeated for %s", ev.GroupName, ev.FromAccount)
		}
		groups[ev.FromAccount][ev.GroupName] = true
		if n := len(groups[ev.FromAccount]); (n > 20) != (r.Kind == OverQuota) {
			t.Fatalf("account %s group %d marked %s", ev.FromAccount, n, r.Kind)
		}
		seqs[ev.FromAccount] = append(seqs[ev.FromAccount], ev.Seq)
	}
	for acct, s := range seqs {
		slices.Sort(s)
		for i, v := range s {
			if v != int64(i+1) {
				t.Fatalf("%s: seqs %v are not 1..%d", acct, s, len(s))
			}
		}
	}
	want := g.Expect()
	if counts[Valid] != want.Valid || counts[Duplicate] != want.Duplicates || counts[Invalid] != want.Invalid || counts[OverQuota] != want.OverQuota {
		t.Fatalf("counted %v, expectation %+v", counts, want)
	}
	if want.OverQuota != 2*3 || want.Swapped == 0 || want.Duplicates == 0 || want.Invalid == 0 {
		t.Fatalf("stream does not exercise every path: %+v", want)
	}
}

// TestExpectCountsOnlyEmitted: whatever the stream's length, the expectation covers exactly the
// records returned, even when the last call held back a swapped partner.
func TestExpectCountsOnlyEmitted(t *testing.T) {
	for n := 1; n <= 300; n++ {
		g, err := New(Config{Accounts: 3, SwapRate: 0.5, DuplicateRate: 0.1, InvalidRate: 0.1, OverQuotaAccounts: 1, Seed: uint64(n)})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			g.Next()
		}
		if got := g.Expect().Total(); got != n {
			t.Fatalf("after %d records the expectation covers %d (%+v)", n, got, g.Expect())
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"defaults", Config{}, nil},
		{"accounts", Config{Accounts: -1}, []string{"accounts: must be >= 1, got -1"}},
		{"groups", Config{GroupsPerAccount: 21}, []string{"groups per account: must be 1-20, got 21"}},
		{"contacts", Config{MaxContacts: 101}, []string{"max contacts: must be 1-100, got 101"}},
		{"invalid rate", Config{InvalidRate: 0.9}, []string{"invalid rate: must be within 0-0.5, got 0.9"}},
		{"over quota", Config{OverQuotaAccounts: -1}, []string{"over-quota accounts: must be >= 0, got -1"}},
		{"mix", Config{Mix: Mix{Renamed: 1}}, []string{"mix: the created weight must be > 0"}},
		{"lifecycle", Config{Mix: MixLifecycle}, nil},
		{"everything", Config{Accounts: -1, GroupsPerAccount: -1, MaxContacts: -1, DuplicateRate: -1, InvalidRate: 1, SwapRate: 1, OverQuotaAccounts: -1},
			[]string{"accounts", "groups per account", "max contacts", "duplicate rate", "invalid rate", "swap rate", "over-quota accounts"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			configtest.Problems(t, tc.cfg.Validate(), tc.want...)
			if _, err := New(tc.cfg); (err == nil) != (len(tc.want) == 0) {
				t.Errorf("New error %v disagrees with Validate", err)
			}
		})
	}
}

func BenchmarkNext(b *testing.B) {
	for _, mix := range []Mix{MixV1, MixLifecycle} {
		b.Run(mix.String(), func(b *testing.B) {
			g, _ := New(Config{DuplicateRate: 0.01, InvalidRate: 0.01, SwapRate: 0.05, Mix: mix})
			b.ReportAllocs()
			for b.Loop() {
				g.Next()
			}
		})
	}
}

// applyInSeqOrder replays the generated stream the way a correct pipeline applies it: invalid and
// duplicate records dropped, each account's events in seq order, over-quota creates rejected. It
// returns the final state, or the first event that has nothing to act on or breaks an API limit.
func applyInSeqOrder(recs []Record) (State, error) {
	byAccount := map[string][]*event.Event{}
	quota := map[string]bool{}
	for _, r := range recs {
		if r.Kind == Invalid || r.Kind == Duplicate {
			continue
		}
		ev, err := event.Parse(r.Value)
		if err != nil {
			return nil, fmt.Errorf("%s record does not parse: %w", r.Kind, err)
		}
		if ev.EventType != r.Type {
			return nil, fmt.Errorf("record says %s, event is %s", r.Type, ev.EventType)
		}
		byAccount[ev.FromAccount] = append(byAccount[ev.FromAccount], ev)
		quota[ev.EventID] = r.Kind == OverQuota
	}
	st := State{}
	for acct, evs := range byAccount {
		slices.SortFunc(evs, func(a, b *event.Event) int { return cmp.Compare(a.Seq, b.Seq) })
		groups := map[string][]event.Contact{}
		convs := 0
		for i, ev := range evs {
			if ev.Seq != int64(i+1) {
				return nil, fmt.Errorf("%s: event %d has seq %d", acct, i+1, ev.Seq)
			}
			cur, exists := groups[ev.GroupName]
			switch ev.EventType {
			case event.TypeContactGroupCreated:
				if exists {
					return nil, fmt.Errorf("%s seq %d: creates %s twice", acct, ev.Seq, ev.GroupName)
				}
				if (len(groups) >= 20) != quota[ev.EventID] {
					return nil, fmt.Errorf("%s seq %d: create with %d groups marked over-quota %v", acct, ev.Seq, len(groups), quota[ev.EventID])
				}
				if !quota[ev.EventID] {
					groups[ev.GroupName] = ev.Contacts
					convs += len(ev.Contacts)
				}
				continue
			case event.TypeContactGroupRenamed, event.TypeContactGroupContactsAdded, event.TypeContactGroupContactsRemoved, event.TypeContactGroupDeleted:
				if !exists {
					return nil, fmt.Errorf("%s seq %d: %s of %s, which does not exist (51009)", acct, ev.Seq, ev.EventType, ev.GroupName)
				}
			}
			switch ev.EventType {
			case event.TypeContactGroupRenamed:
				if _, taken := groups[ev.NewGroupName]; taken {
					return nil, fmt.Errorf("%s seq %d: renames onto existing %s", acct, ev.Seq, ev.NewGroupName)
				}
				delete(groups, ev.GroupName)
				groups[ev.NewGroupName] = cur
			case event.TypeContactGroupContactsAdded:
				for _, c := range ev.Contacts {
					if slices.Contains(cur, c) {
						return nil, fmt.Errorf("%s seq %d: adds %v, already in %s", acct, ev.Seq, c, ev.GroupName)
					}
				}
				groups[ev.GroupName] = append(slices.Clip(cur), ev.Contacts...)
				convs += len(ev.Contacts)
			case event.TypeContactGroupContactsRemoved:
				for _, c := range ev.Contacts {
					if !slices.Contains(cur, c) {
						return nil, fmt.Errorf("%s seq %d: removes %v, not in %s", acct, ev.Seq, c, ev.GroupName)
					}
				}
				if len(ev.Contacts) >= len(cur) {
					return nil, fmt.Errorf("%s seq %d: empties %s", acct, ev.Seq, ev.GroupName)
				}
				groups[ev.GroupName] = slices.DeleteFunc(slices.Clone(cur), func(c event.Contact) bool { return slices.Contains(ev.Contacts, c) })
				convs -= len(ev.Contacts)
			case event.TypeContactGroupDeleted:
				delete(groups, ev.GroupName)
				convs -= len(cur)
			}
			if convs > 1000 {
				return nil, fmt.Errorf("%s seq %d: %d conversations (51008)", acct, ev.Seq, convs)
			}
		}
		if len(groups) > 0 {
			st[acct] = groups
		}
	}
	return st, nil
}

// TestLifecycleStreamIsConsistent: with the lifecycle mix every account's events, applied in
// seq order, act only on groups created earlier in the stream, never break an API limit, and end
// in exactly the State the generator reports; the mix is mostly creates and adds.
func TestLifecycleStreamIsConsistent(t *testing.T) {
	g, err := New(Config{Accounts: 20, Mix: MixLifecycle, KeepState: true, DuplicateRate: 0.03, InvalidRate: 0.03,
		SwapRate: 0.1, OverQuotaAccounts: 2, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	var recs []Record
	for i := 0; i < 20000; i++ {
		recs = append(recs, g.Next())
	}
	recs = append(recs, g.Flush()...)
	got, err := applyInSeqOrder(recs)
	if err != nil {
		t.Fatal(err)
	}
	if d := got.Diff(g.State()); d != nil {
		t.Fatalf("State() differs from the stream applied in seq order:\n%s", strings.Join(d, "\n"))
	}
	e := g.Expect()
	if e.Total() != len(recs) || e.ByType.Total() != e.Valid {
		t.Fatalf("expectation %+v for %d records", e, len(recs))
	}
	counted := TypeCounts{}
	for _, r := range recs {
		if r.Kind == Valid {
			counted.add(r.Type)
		}
	}
	if counted != e.ByType {
		t.Fatalf("records by type %+v, expectation %+v", counted, e.ByType)
	}
	c := e.ByType
	t.Logf("%d records: %+v", len(recs), e)
	if c.Created+c.ContactsAdded < e.Valid*6/10 || c.Deleted == 0 || c.Deleted >= c.Renamed || c.Renamed >= c.ContactsAdded ||
		c.ContactsRemoved == 0 || e.OverQuota != 2*3 || e.Swapped == 0 || e.Duplicates == 0 {
		t.Fatalf("not a realistic lifecycle mix: %+v", e)
	}
	if len(got) < 100 {
		t.Fatalf("only %d accounts end with groups: retired accounts' state was not kept", len(got))
	}
}

// TestApplyInSeqOrderCatchesBrokenStreams: the consistency check above is trusted because it
// rejects streams a broken generator would make.
func TestApplyInSeqOrderCatchesBrokenStreams(t *testing.T) {
	g, err := New(Config{Accounts: 3, Mix: MixLifecycle, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	var recs []Record
	for i := 0; i < 400; i++ {
		recs = append(recs, g.Next())
	}
	if _, err := applyInSeqOrder(recs); err != nil {
		t.Fatalf("the unbroken stream fails: %v", err)
	}
	find := func(typ event.Type) int {
		for i, r := range recs {
			if r.Type == typ {
				return i
			}
		}
		t.Fatalf("no %s in the stream", typ)
		return -1
	}
	edit := func(i int, f func(e *event.Event)) []Record {
		out := slices.Clone(recs)
		ev, err := event.Parse(out[i].Value)
		if err != nil {
			t.Fatal(err)
		}
		f(ev)
		if out[i].Value, err = ev.Marshal(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	for name, broken := range map[string][]Record{
		"rename of an unknown group": edit(find(event.TypeContactGroupRenamed), func(e *event.Event) { e.GroupName = "nope" }),
		"delete of an unknown group": edit(find(event.TypeContactGroupDeleted), func(e *event.Event) { e.GroupName = "nope" }),
		"remove of an absent contact": edit(find(event.TypeContactGroupContactsRemoved), func(e *event.Event) {
			e.Contacts = []event.Contact{event.ToAccount("stranger")}
		}),
		"seq gap":           edit(find(event.TypeContactGroupContactsAdded), func(e *event.Event) { e.Seq += 1000 }),
		"create lost":       slices.Delete(slices.Clone(recs), find(event.TypeContactGroupCreated), find(event.TypeContactGroupCreated)+1),
		"over-quota create": append(slices.Clone(recs), Record{Kind: OverQuota, Type: event.TypeContactGroupCreated, Value: recs[find(event.TypeContactGroupCreated)].Value}),
	} {
		if _, err := applyInSeqOrder(broken); err == nil {
			t.Errorf("%s: not caught", name)
		}
	}
}

// TestLifecycleInvalidRecords: with v2 types in the mix, invalid records also break the v2
// rules, and each is invalid for the reason its kind names.
func TestLifecycleInvalidRecords(t *testing.T) {
	g, err := New(Config{Accounts: 2, Mix: MixLifecycle, InvalidRate: 0.5, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]bool{}
	for i := 0; i < 200; i++ {
		r := g.Next()
		if r.Kind != Invalid {
			continue
		}
		_, err := event.Parse(r.Value)
		var ve *event.ValidationError
		if !errors.As(err, &ve) {
			t.Fatalf("invalid record parsed: %s", r.Value)
		}
		fields[ve.Field+": "+ve.Reason] = true
	}
	for _, want := range []string{"event_type: unknown type", "new_group_name: equals group_name", "new_group_name: required field missing",
		"contacts: must be absent or empty for contact_group.deleted", "contacts: required field missing"} {
		found := false
		for f := range fields {
			found = found || strings.HasPrefix(f, want)
		}
		if !found {
			t.Errorf("no invalid record fails with %q; got %v", want, slices.Sorted(maps.Keys(fields)))
		}
	}
}

// TestV1MixCreatesOnly: the default mix is contract v1, whatever else is configured.
func TestV1MixCreatesOnly(t *testing.T) {
	g, err := New(Config{Accounts: 4, InvalidRate: 0.2, DuplicateRate: 0.1, SwapRate: 0.2, OverQuotaAccounts: 1, KeepState: true, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	var recs []Record
	for i := 0; i < 2000; i++ {
		r := g.Next()
		recs = append(recs, r)
		if ev, err := event.Parse(r.Value); err == nil && ev.EventType != event.TypeContactGroupCreated {
			t.Fatalf("v1 stream has a %s", ev.EventType)
		}
	}
	recs = append(recs, g.Flush()...)
	got, err := applyInSeqOrder(recs)
	if err != nil {
		t.Fatal(err)
	}
	if d := got.Diff(g.State()); d != nil {
		t.Fatalf("State() differs from the stream applied in seq order:\n%s", strings.Join(d, "\n"))
	}
	if e := g.Expect(); e.ByType.Created != e.Valid {
		t.Fatalf("v1 expectation %+v", e)
	}
}

func TestParseMix(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Mix
		str  string
		err  string
	}{
		{"v1", MixV1, "v1", ""},
		{"", MixV1, "v1", ""},
		{"LIFECYCLE", MixLifecycle, "lifecycle", ""},
		{"created=6, contacts_added=3,contact_group.deleted=1", Mix{Created: 6, ContactsAdded: 3, Deleted: 1}, "created=6,contacts_added=3,deleted=1", ""},
		{"created=1", MixV1, "v1", ""},
		{"created=40,renamed=10,contacts_added=35,contacts_removed=10,deleted=5", MixLifecycle, "lifecycle", ""},
		{"renamed=1", Mix{}, "", "created weight must be > 0"},
		{"created=1,moved=2", Mix{}, "", `"moved=2" is not type=weight with a type of created, renamed, contacts_added, contacts_removed, deleted`},
		{"created", Mix{}, "", "is not type=weight"},
		{"created=x", Mix{}, "", `created weight "x" is not a number`},
		{"created=1,deleted=-1", Mix{}, "", "contact_group.deleted weight must be a finite number >= 0, got -1"},
		{"created=1,deleted=NaN", Mix{}, "", "must be a finite number"},
		{"created=1,created=2", Mix{}, "", "created given twice"},
		{"!!bad!!", Mix{}, "", "is not type=weight"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			m, err := ParseMix(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseMix(%q) = %+v, %v; want error containing %q", tc.in, m, err, tc.err)
				}
				return
			}
			if err != nil || m != tc.want || m.String() != tc.str {
				t.Fatalf("ParseMix(%q) = %+v (%s), %v; want %+v (%s)", tc.in, m, m, err, tc.want, tc.str)
			}
			if back, err := ParseMix(m.String()); err != nil || back.String() != m.String() {
				t.Fatalf("String %q does not parse back: %+v %v", m.String(), back, err)
			}
		})
	}
}

// TestStateDiff: Diff finds each kind of difference, ignores the order of conversations and
// accounts without groups, and finds nothing between equal states.
func TestStateDiff(t *testing.T) {
	bob, carol, tgs := event.ToAccount("bob"), event.ToAccount("carol"), event.ToGroup("@TGS#1")
	want := State{"alice": {"work": {bob, carol, tgs}, "home": {bob}}, "dave": {"x": {carol}}}
	for _, tc := range []struct {
		name string
		got  State
		diff []string
	}{
		{"equal, other order", State{"dave": {"x": {carol}}, "alice": {"home": {bob}, "work": {tgs, bob, carol}}, "erin": {}}, nil},
		{"group missing", State{"alice": {"work": {bob, carol, tgs}}, "dave": {"x": {carol}}}, []string{`alice: group "home" missing`}},
		{"account missing", State{"alice": {"work": {bob, carol, tgs}, "home": {bob}}}, []string{`dave: group "x" missing`}},
		{"group extra (a rename applied twice, a delete lost)", State{"alice": {"work": {bob, carol, tgs}, "home": {bob}, "old": {bob}}, "dave": {"x": {carol}}},
			[]string{`alice: group "old" should not exist`}},
		{"contacts differ", State{"alice": {"work": {bob, tgs, event.ToAccount("eve")}, "home": {bob}}, "dave": {"x": {carol}}},
			[]string{`alice: group "work" lacks [{1 carol }], has extra [{1 eve }]`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := want.Diff(tc.got); !slices.Equal(d, tc.diff) {
				t.Fatalf("Diff = %q, want %q", d, tc.diff)
			}
		})
	}
}
