package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chatgroupd/chatgroupd/dlq"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/imsim"
)

// TestJudge proves the invariant check can fail: each case breaks one invariant and must be
// reported as exactly that. It needs no broker.
func TestJudge(t *testing.T) {
	st := newStream("j")
	v1 := st.valid("alice")
	v1.Partition, v1.Offset = 0, 0
	v2 := st.valid("bob")
	v2.Partition, v2.Offset = 1, 0
	dup := duplicate(v1)
	dup.Partition, dup.Offset = 0, 1
	bad := st.invalid("alice", 0)
	bad.Partition, bad.Offset = 0, 2
	ghost := st.valid(ghostPrefix + "x")
	ghost.Partition, ghost.Offset = 1, 1
	plans := []plan{v1, v2, dup, bad, ghost}

	groupsOf := func(ps ...plan) map[string][]imsim.Group {
		m := map[string][]imsim.Group{}
		for _, p := range ps {
			m[p.Account] = append(m[p.Account], imsim.Group{Name: p.Group, Contacts: p.Contacts})
		}
		return m
	}
	entry := func(p plan, reason string) *dlq.Entry {
		return &dlq.Entry{OriginalTopic: "t", OriginalPartition: p.Partition, OriginalOffset: p.Offset, Reason: reason, Key: p.Key, Value: p.Value}
	}
	good := []*dlq.Entry{entry(bad, dlq.ReasonInvalid), entry(ghost, dlq.ReasonRejected)}

	tests := []struct {
		name    string
		groups  map[string][]imsim.Group
		entries []*dlq.Entry
		dups    int
		allow   bool
		want    string // substring of the check error; "" for none
		check   func(r report) bool
	}{
		{name: "all good", groups: groupsOf(v1, v2), entries: good,
			check: func(r report) bool { return r.Applied == 2 && r.DeadLettered == 2 && r.Dropped == 1 && r.Pending == 0 }},
		{name: "valid event lost", groups: groupsOf(v1), entries: good, want: "1 records lost"},
		{name: "invalid record lost", groups: groupsOf(v1, v2), entries: good[1:], want: "1 records lost"},
		{name: "applied twice", groups: groupsOf(v1, v1, v2), entries: good, want: "applied more than once"},
		{name: "applied and dead-lettered", groups: groupsOf(v1, v2), entries: append([]*dlq.Entry{entry(v2, dlq.ReasonExhausted)}, good...), want: "both applied and dead-lettered"},
		{name: "valid dead-lettered", groups: groupsOf(v1), entries: append([]*dlq.Entry{entry(v2, dlq.ReasonExhausted)}, good...), want: "wrong outcome"},
		{name: "wrong reason", groups: groupsOf(v1, v2), entries: []*dlq.Entry{entry(bad, dlq.ReasonRejected), good[1]}, want: "wrong outcome"},
		{name: "dlq duplicate", groups: groupsOf(v1, v2), entries: append(good, entry(bad, dlq.ReasonInvalid)), want: "duplicate DLQ records"},
		{name: "dlq duplicate allowed", groups: groupsOf(v1, v2), entries: append(good, entry(bad, dlq.ReasonInvalid)), allow: true,
			check: func(r report) bool { return r.DLQDuplicates == 1 }},
		{name: "stray dlq record", groups: groupsOf(v1, v2), entries: append(good, &dlq.Entry{OriginalTopic: "t", OriginalPartition: 5, OriginalOffset: 9, Reason: "invalid"}), want: "matches no produced record"},
		{name: "duplicate creates", groups: groupsOf(v1, v2), entries: good, dups: 3, want: "3 duplicate creates"},
		{name: "wrong contacts", groups: map[string][]imsim.Group{"alice": {{Name: v1.Group}}, "bob": {{Name: v2.Group, Contacts: v2.Contacts}}}, entries: good, want: "wrong outcome"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := judge("t", plans, tc.groups, tc.entries, tc.dups)
			err := r.check(tc.allow)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected violation: %v\n%s", err, r.Summary())
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("check = %v, want an error containing %q\n%s", err, tc.want, r.Summary())
			}
			if tc.check != nil && !tc.check(r) {
				t.Fatalf("report %s", r.Summary())
			}
		})
	}
	r := judge("t", plans, groupsOf(v1, v2), good, 0)
	r.Lag = 4
	if err := r.check(false); err == nil || !strings.Contains(err.Error(), "lag 4") {
		t.Errorf("lag not reported: %v", err)
	}
}

// TestInvalidVariantsAreInvalid keeps the stream's invalid records honest: event.Parse must
// refuse every variant, or the suite would expect a dead letter for a valid event.
func TestInvalidVariantsAreInvalid(t *testing.T) {
	st := newStream("v")
	for i := range 7 {
		p := st.invalid("alice", i)
		if _, err := parseEvent(p.Value); err == nil {
			t.Errorf("variant %d parses: %s", i, p.Value)
		}
	}
	if _, err := parseEvent(st.valid("alice").Value); err != nil {
		t.Errorf("valid event does not parse: %v", err)
	}
}

func parseEvent(v []byte) (*event.Event, error) { return event.Parse(v) }

func TestSecretsIn(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		log  string
		fail bool
	}{
		{`{"msg":"call failed","error":"Post \"http://127.0.0.1:1/v4/x?sdkappid=1&usersig=REDACTED&random=3\": EOF"}`, false},
		{`{"msg":"call failed","error":"Post \"http://127.0.0.1:1/v4/x?sdkappid=1&usersig=eJwtzE0LgjAcx&random=3\": EOF"}`, true},
		{`key ` + simKey, true},
		{`nothing to see`, false},
	} {
		p := filepath.Join(dir, "log")
		if err := os.WriteFile(p, []byte(tc.log), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := secretsIn(p); (err != nil) != tc.fail {
			t.Errorf("secretsIn(%.60q) = %v, want failure %v", tc.log, err, tc.fail)
		}
	}
}
