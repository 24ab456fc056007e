package consumer

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/segmentio/kafka-go"
)

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func TestAssignSticky(t *testing.T) {
	for _, tc := range []struct {
		name  string
		prev  map[string][]int
		parts int
		want  map[string][]int
	}{
		{"first join spreads evenly", map[string][]int{"a": nil, "b": nil}, 5,
			map[string][]int{"a": {0, 2, 4}, "b": {1, 3}}},
		{"a member joins: only the surplus moves", map[string][]int{"a": {0, 1, 2}, "b": {3, 4, 5}, "c": nil}, 6,
			map[string][]int{"a": {0, 1}, "b": {3, 4}, "c": {2, 5}}},
		{"a member leaves: its partitions go to the least loaded", map[string][]int{"a": {0, 1}, "b": {2, 3, 4}}, 6,
			map[string][]int{"a": {0, 1, 5}, "b": {2, 3, 4}}},
		{"restart with nothing owned gets the orphans back", map[string][]int{"a": {0, 3}, "b": nil, "c": {2, 5}}, 6,
			map[string][]int{"a": {0, 3}, "b": {1, 4}, "c": {2, 5}}},
		{"unchanged group: nothing moves", map[string][]int{"a": {1, 4}, "b": {0, 3}, "c": {2, 5}}, 6,
			map[string][]int{"a": {1, 4}, "b": {0, 3}, "c": {2, 5}}},
		{"partitions removed and added", map[string][]int{"a": {0, 7, 9}, "b": {1}}, 4,
			map[string][]int{"a": {0, 2}, "b": {1, 3}}},
		{"claimed twice: the first member by id keeps it", map[string][]int{"a": {0}, "b": {0, 1}}, 2,
			map[string][]int{"a": {0}, "b": {1}}},
		{"the extra slot goes to the member that owns most", map[string][]int{"a": {0}, "b": {1, 2, 3}, "c": {4}}, 5,
			map[string][]int{"a": {0, 3}, "b": {1, 2}, "c": {4}}},
		{"more members than partitions", map[string][]int{"a": {0}, "b": nil, "c": {1}}, 2,
			map[string][]int{"a": {0}, "b": nil, "c": {1}}},
		{"no members", map[string][]int{}, 3, map[string][]int{}},
		{"duplicates in one member's list", map[string][]int{"a": {1, 1, 0}, "b": nil}, 2,
			map[string][]int{"a": {0}, "b": {1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := assignSticky(tc.prev, seq(tc.parts))
			norm := func(m map[string][]int) map[string][]int {
				out := map[string][]int{}
				for k, v := range m {
					out[k] = append([]int{}, v...)
				}
				return out
			}
			if !reflect.DeepEqual(norm(got), norm(tc.want)) {
				t.Fatalf("assignSticky(%v, %d) = %v, want %v", tc.prev, tc.parts, got, tc.want)
			}
		})
	}
}

// optimalKept is the most partitions a balanced assignment can leave with their owners, for
// ownership without duplicates: each member keeps up to base, and extra members up to base+1.
func optimalKept(prev map[string][]int, n int) int {
	m := len(prev)
	base, extra := n/m, n%m
	kept, over := 0, 0
	for _, ps := range prev {
		valid := 0
		for _, p := range ps {
			if p < n {
				valid++
			}
		}
		kept += min(valid, base)
		if valid > base {
			over++
		}
	}
	return kept + min(extra, over)
}

// TestAssignStickyProperties runs random memberships (joins, leaves, partition count changes,
// restarts that forgot what they owned) through assignSticky and checks every result: each
// partition assigned exactly once, counts within one of each other, and no more moves than
// balance forces (the kept count equals the optimum).
func TestAssignStickyProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for it := range 5000 {
		n := 1 + r.IntN(40)
		members := 1 + r.IntN(12)
		// A previous balanced assignment over an earlier partition count and member set.
		prevN := max(1, n+r.IntN(9)-4)
		var ids []string
		for i := range members + r.IntN(4) {
			ids = append(ids, fmt.Sprintf("m%02d", i))
		}
		prev := map[string][]int{}
		for _, id := range ids {
			prev[id] = nil
		}
		prev = assignSticky(prev, r.Perm(prevN))
		// The group changes: some leave, some join fresh, some restart and forget.
		cur := map[string][]int{}
		for _, id := range ids {
			switch x := r.IntN(10); {
			case x < 2 && len(cur) > 0: // left
			case x < 3:
				cur[id] = nil // restarted with nothing owned
			default:
				cur[id] = prev[id]
			}
		}
		for i := range r.IntN(3) {
			cur[fmt.Sprintf("new%d", i)] = nil
		}
		if len(cur) == 0 {
			cur["only"] = nil
		}
		parts := r.Perm(n)
		got := assignSticky(cur, parts)
		desc := fmt.Sprintf("iteration %d: %d partitions, previous %v", it, n, cur)
		checkAssignment(t, desc, cur, got, n)
		kept := 0
		for id, ps := range got {
			for _, p := range ps {
				if slices.Contains(cur[id], p) {
					kept++
				}
			}
		}
		if want := optimalKept(cur, n); kept != want {
			t.Fatalf("%s: kept %d partitions in place, the optimum is %d: %v", desc, kept, want, got)
		}
		// Determinism, and stability: assigning again from the result moves nothing.
		if again := assignSticky(got, parts); !maps.EqualFunc(again, got, slices.Equal) {
			t.Fatalf("%s: a second pass changed %v to %v", desc, got, again)
		}
	}
}

func checkAssignment(t testing.TB, desc string, members map[string][]int, got map[string][]int, n int) {
	t.Helper()
	seen := map[int]string{}
	lo, hi := n+1, -1
	for id := range members {
		ps := got[id]
		lo, hi = min(lo, len(ps)), max(hi, len(ps))
		for _, p := range ps {
			if other, dup := seen[p]; dup {
				t.Fatalf("%s: partition %d assigned to %s and %s", desc, p, other, id)
			}
			if p < 0 || p >= n {
				t.Fatalf("%s: partition %d does not exist", desc, p)
			}
			seen[p] = id
		}
	}
	if len(got) != len(members) {
		t.Fatalf("%s: %d members in the result, want %d", desc, len(got), len(members))
	}
	if len(seen) != n {
		t.Fatalf("%s: %d of %d partitions assigned: %v", desc, len(seen), n, got)
	}
	if hi-lo > 1 {
		t.Fatalf("%s: unbalanced, counts from %d to %d: %v", desc, lo, hi, got)
	}
}

// TestAssignStickyCatchesBrokenAssignors makes sure the property test's checks can fail: a
// round-robin assignor (balanced, but ignores ownership) and one that keeps everything owned
// (sticky, but unbalanced after a join) are both caught.
func TestAssignStickyCatchesBrokenAssignors(t *testing.T) {
	prev := map[string][]int{"a": {0, 1, 2}, "b": {3, 4, 5}, "c": nil}
	roundRobin := map[string][]int{"a": {0, 3}, "b": {1, 4}, "c": {2, 5}}
	kept := 0
	for id, ps := range roundRobin {
		for _, p := range ps {
			if slices.Contains(prev[id], p) {
				kept++
			}
		}
	}
	if kept == optimalKept(prev, 6) {
		t.Fatal("round-robin not caught by the minimal-moves check")
	}
	ft := &fatalRecorder{TB: t}
	func() {
		defer func() { _ = recover() }()
		checkAssignment(ft, "keep-all", prev, map[string][]int{"a": {0, 1, 2}, "b": {3, 4, 5}, "c": nil}, 6)
	}()
	if !ft.failed {
		t.Fatal("an unbalanced assignment was not caught")
	}
	ft = &fatalRecorder{TB: t}
	func() {
		defer func() { _ = recover() }()
		checkAssignment(ft, "twice", prev, map[string][]int{"a": {0, 1}, "b": {1, 2}, "c": {3, 4}}, 5)
	}()
	if !ft.failed {
		t.Fatal("a partition assigned twice was not caught")
	}
}

// fatalRecorder records Fatalf instead of failing the test (it panics to stop the checker, as
// Fatalf stops a test).
type fatalRecorder struct {
	testing.TB
	failed bool
}

func (f *fatalRecorder) Helper() {}
func (f *fatalRecorder) Fatalf(string, ...any) {
	f.failed = true
	panic("fatal")
}

func TestStickyBalancerUserData(t *testing.T) {
	b := stickyBalancer{owned: []int{3, 1}}
	ud, err := b.UserData()
	if err != nil {
		t.Fatal(err)
	}
	members := []kafka.GroupMember{
		{ID: "a", Topics: []string{"t"}, UserData: ud},
		{ID: "b", Topics: []string{"t"}, UserData: []byte{9, 9}}, // unreadable: owns nothing
	}
	var parts []kafka.Partition
	for i := range 4 {
		parts = append(parts, kafka.Partition{Topic: "t", ID: i})
	}
	got := b.AssignGroups(members, parts)
	want := kafka.GroupMemberAssignments{"a": {"t": {1, 3}}, "b": {"t": {0, 2}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("AssignGroups = %v, want %v", got, want)
	}
}

func TestDecodeOwned(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want []int
		err  bool
	}{
		{"empty", nil, nil, false},
		{"round trip", encodeOwned([]int{0, 5, 300}), []int{0, 5, 300}, false},
		{"none owned", encodeOwned(nil), []int{}, false},
		{"unknown version", []byte{2, 0}, nil, true},
		{"count beyond data", []byte{1, 5, 1}, nil, true},
		{"truncated partition", []byte{1, 1, 0x80}, nil, true},
		{"trailing bytes", []byte{1, 1, 2, 3}, nil, true},
		{"partition beyond int32", append([]byte{1, 1}, 0xff, 0xff, 0xff, 0xff, 0x0f), nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeOwned(tc.in)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if !tc.err && !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// FuzzDecodeOwned: other members' user data is outside input; it must never panic, and what it
// accepts must encode back to the same bytes.
func FuzzDecodeOwned(f *testing.F) {
	f.Add(encodeOwned([]int{1, 2, 3}))
	f.Add([]byte{1, 0})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeOwned(b)
		if err != nil || len(b) == 0 {
			return
		}
		if re := encodeOwned(got); !slices.Equal(re, b) {
			// Non-minimal varints decode too; they must at least decode to the same list.
			if again, err := decodeOwned(re); err != nil || !slices.Equal(again, got) {
				t.Fatalf("%x decoded to %v, which re-encodes to %x", b, got, re)
			}
		}
	})
}
