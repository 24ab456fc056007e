package loadgen

import (
	"errors"
	"slices"
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
	g, _ := New(Config{DuplicateRate: 0.01, InvalidRate: 0.01, SwapRate: 0.05})
	b.ReportAllocs()
	for b.Loop() {
		g.Next()
	}
}
