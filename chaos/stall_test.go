package chaos

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestJoinStalled: only joins that time out after the schedule, with no assignment after it,
// make a stall; an assignment after the schedule, or failed joins before it only, do not.
func TestJoinStalled(t *testing.T) {
	since := time.Date(2026, 11, 30, 16, 49, 0, 0, time.UTC)
	const (
		before   = `{"level":"warn","ts":"2026-11-30T16:48:59Z","msg":"consumer group: join failed, retrying"}`
		failed   = `{"level":"warn","ts":"2026-11-30T16:49:30Z","msg":"consumer group: join failed, retrying"}`
		assigned = `{"level":"info","ts":"2026-11-30T16:49:31Z","msg":"rebalance: partitions assigned"}`
		early    = `{"level":"info","ts":"2026-11-30T16:48:00Z","msg":"rebalance: partitions assigned"}`
	)
	for _, tc := range []struct {
		name string
		logs []string // one file each
		want bool
	}{
		{"stalled", []string{early + "\n" + failed, failed}, true},
		{"re-formed", []string{failed + "\n" + assigned, failed}, false},
		{"failed joins before the schedule ended only", []string{before, early}, false},
		{"no logs", nil, false},
		{"garbage lines", []string{"not json\n" + failed}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for i, l := range tc.logs {
				if err := os.WriteFile(filepath.Join(dir, "replica-"+string(rune('0'+i))+".1.log"), []byte(l+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if got := joinStalled(dir, since); got != tc.want {
				t.Errorf("joinStalled = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestReplicaLogReaders: the member ids a replica was given (each once, also one it never
// joined with) and, over all replicas, each partition's owner in the newest generation that
// logged it.
func TestReplicaLogReaders(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, lines ...string) {
		var b []byte
		for _, l := range lines {
			b = append(b, l+"\n"...)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("replica-0.1.log",
		`{"msg":"consumer group: member id assigned","member":"m1"}`,
		`{"msg":"consumer group: joined","member":"m1","generation":1}`,
		`{"msg":"rebalance: partitions assigned","generation":1,"member":"m1","partitions":[0,1,2,3]}`,
		`not json`,
		`{"msg":"consumer group: member id assigned","member":"m2"}`,
		`{"msg":"rebalance: partitions assigned","generation":3,"member":"m2","partitions":[0,1]}`)
	write("replica-1.1.log",
		`{"msg":"consumer group: member id assigned","member":"g1"}`)
	write("replica-2.1.log",
		`{"msg":"rebalance: partitions assigned","generation":2,"member":"k1","partitions":[2,3]}`,
		`{"msg":"rebalance: partitions assigned","generation":4,"member":"k1","partitions":[3]}`)

	if got := memberIDs(filepath.Join(dir, "replica-0.1.log")); !slices.Equal(got, []string{"m1", "m2"}) {
		t.Errorf("memberIDs(replica-0.1) = %v, want [m1 m2]", got)
	}
	if got := memberIDs(filepath.Join(dir, "replica-1.1.log")); !slices.Equal(got, []string{"g1"}) {
		t.Errorf("memberIDs(replica-1.1) = %v, want [g1] (a member that died in its join)", got)
	}
	if got := memberIDs(filepath.Join(dir, "missing.log")); got != nil {
		t.Errorf("memberIDs(missing) = %v, want none", got)
	}
	owners, last := lastOwners(dir)
	want := map[int]owner{
		0: {"replica-0.1", "m2", 3}, 1: {"replica-0.1", "m2", 3},
		2: {"replica-2.1", "k1", 2}, 3: {"replica-2.1", "k1", 4},
	}
	if last != 4 || len(owners) != len(want) {
		t.Fatalf("lastOwners = %v, %d; want %v, 4", owners, last, want)
	}
	for p, o := range want {
		if owners[p] != o {
			t.Errorf("partition %d: owner %+v, want %+v", p, owners[p], o)
		}
	}
}
