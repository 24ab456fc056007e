package chaos

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/dlq"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
)

// goodRun is synthetic evidence of a correct run: alice's seqs 1–3 applied in order one call
// at a time, a duplicate dropped, an invalid record and a rejected one dead-lettered.
func goodRun() Evidence {
	g := &generator{o: Options{Seed: 7}.withDefaults(), seq: map[string]int64{}, rng: rand.New(rand.NewPCG(7, 7))}
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	a1, a2, a3 := g.valid("alice"), g.valid("alice"), g.valid("alice")
	dup := a1
	dup.Kind = Duplicate
	inv := g.invalid("bob")
	ghost := g.valid(ghostPrefix + "0")
	recs := []Record{a1, a2, a3, dup, inv, ghost}
	for i := range recs {
		recs[i].Partition, recs[i].Offset, recs[i].ProducedAt = 0, int64(i), t0
	}
	call := func(r Record, start time.Duration) imsim.Call {
		return imsim.Call{API: im.APICreate, Account: r.Account, Group: r.Group, Contacts: r.Contacts,
			Start: t0.Add(start), End: t0.Add(start + 40*time.Millisecond), Applied: true}
	}
	calls := []imsim.Call{
		call(a1, time.Second),
		{API: im.APIGet, Account: "alice", Start: t0.Add(1100 * time.Millisecond), End: t0.Add(1150 * time.Millisecond)},
		call(a2, 1200*time.Millisecond),
		call(a3, 1300*time.Millisecond),
		{API: im.APICreate, Account: ghost.Account, Group: ghost.Group, Start: t0.Add(time.Second), End: t0.Add(1010 * time.Millisecond), Code: im.CodeNotImported},
	}
	letter := func(r Record, reason string) *dlq.Entry {
		return &dlq.Entry{OriginalTopic: "t", OriginalPartition: r.Partition, OriginalOffset: r.Offset, Reason: reason, Key: r.Key, Value: r.Value}
	}
	return Evidence{Topic: "t", Records: recs, Calls: calls, Budget: 200, ReorderWindow: time.Second,
		Letters: []*dlq.Entry{letter(recs[4], dlq.ReasonInvalid), letter(recs[5], dlq.ReasonRejected)}}
}

// TestCheck proves the checker can fail: each case breaks one invariant of a correct run and
// must be reported as exactly that.
func TestCheck(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(ev *Evidence)
		want   string // substring of Err; "" for none
		check  func(r Report) bool
	}{
		{name: "correct run", mutate: func(*Evidence) {},
			check: func(r Report) bool {
				return r.Applied == 3 && r.DeadLettered == 2 && r.DuplicatesDropped == 1 && r.Lost == 0 && r.MaxWindow == 4
			}},
		{name: "two overlapping calls of one account", want: "1 concurrent calls", mutate: func(ev *Evidence) {
			ev.Calls[2].Start = ev.Calls[0].Start.Add(10 * time.Millisecond) // a2's create while a1's runs
			ev.Calls[2].End = ev.Calls[2].Start.Add(40 * time.Millisecond)
		}},
		{name: "a call nested inside a long one", want: "concurrent calls", mutate: func(ev *Evidence) {
			ev.Calls[0].End = ev.Calls[0].Start.Add(5 * time.Second) // a slow call the others overlap
		}},
		{name: "duplicate create applied", want: "1 duplicate creates", mutate: func(ev *Evidence) {
			c := ev.Calls[0]
			c.Start, c.End = c.Start.Add(time.Second), c.End.Add(time.Second)
			ev.Calls = append(ev.Calls, c)
		}},
		{name: "create answered already exists", want: "1 duplicate creates", mutate: func(ev *Evidence) {
			c := ev.Calls[0]
			c.Start, c.End = c.Start.Add(time.Second), c.End.Add(time.Second)
			c.Applied, c.Code, c.Info = false, im.CodeBadParams, "GroupName already exists"
			ev.Calls = append(ev.Calls, c)
		}},
		{name: "conversation added twice", want: "conversations added twice", mutate: func(ev *Evidence) {
			c := ev.Calls[0]
			c.Start, c.End = c.Start.Add(time.Second), c.End.Add(time.Second)
			ev.Calls = append(ev.Calls, c)
		}},
		{name: "out-of-order seq", want: "1 seq order violations", mutate: func(ev *Evidence) {
			ev.Calls[2].Start, ev.Calls[3].Start = ev.Calls[3].Start, ev.Calls[2].Start // seq 3 before seq 2
			ev.Calls[2].End, ev.Calls[3].End = ev.Calls[3].End, ev.Calls[2].End
		}},
		{name: "late seq is counted, not a violation", mutate: func(ev *Evidence) {
			ev.Calls[2].Start, ev.Calls[3].Start = ev.Calls[3].Start, ev.Calls[2].Start
			ev.Calls[2].End, ev.Calls[3].End = ev.Calls[3].End, ev.Calls[2].End
			ev.Records[1].ProducedAt = ev.Records[2].ProducedAt.Add(3 * time.Second) // seq 2 came 3s after seq 3
		}, check: func(r Report) bool { return r.Late == 1 && r.OrderViolations == 0 }},
		{name: "201 calls in a window", want: "1 calls over the one-second budget", mutate: func(ev *Evidence) {
			t0 := ev.Calls[0].Start.Add(10 * time.Second)
			for i := range 201 {
				s := t0.Add(time.Duration(i) * 4 * time.Millisecond) // 201 calls within 0.8s
				ev.Calls = append(ev.Calls, imsim.Call{API: im.APICreate, Account: "x" + string(rune('a'+i%26)) + time.Duration(i).String(),
					Group: "other", Start: s, End: s.Add(time.Millisecond), Code: im.CodeBadParams})
			}
		}, check: func(r Report) bool { return r.MaxWindow == 201 }},
		{name: "201 calls arrived in a window, handlers spread out", want: "1 calls over the one-second budget", mutate: func(ev *Evidence) {
			// The handlers began over 2 s (a starved simulator), but the requests arrived in 0.8 s:
			// the fleet sent too many, and the late reads must not hide it.
			t0 := ev.Calls[0].Start.Add(10 * time.Second)
			for i := range 201 {
				a := t0.Add(time.Duration(i) * 4 * time.Millisecond)
				s := t0.Add(time.Duration(i) * 10 * time.Millisecond)
				ev.Calls = append(ev.Calls, imsim.Call{API: im.APIGet, Account: "z" + time.Duration(i).String(), Arrived: a, Start: s, End: s.Add(time.Millisecond)})
			}
		}, check: func(r Report) bool { return r.MaxWindow == 201 && r.MaxWindowAtHandler < 201 }},
		{name: "201 handlers in a window of 200 arrivals a second", mutate: func(ev *Evidence) {
			// 200/s evenly as they arrived; the first read 11 ms late, so 201 handlers began
			// within a second (the traced case): within budget, reported at the handler.
			t0 := ev.Calls[0].Start.Add(10 * time.Second)
			for i := range 400 {
				a := t0.Add(time.Duration(i) * 5 * time.Millisecond)
				s := a
				if i == 0 {
					s = a.Add(11 * time.Millisecond)
				}
				ev.Calls = append(ev.Calls, imsim.Call{API: im.APIGet, Account: "w" + time.Duration(i).String(), Arrived: a, Start: s, End: s.Add(time.Millisecond)})
			}
		}, check: func(r Report) bool { return r.MaxWindow == 200 && r.MaxWindowAtHandler == 201 }},
		{name: "200 calls in a window are within budget", mutate: func(ev *Evidence) {
			t0 := ev.Calls[0].Start.Add(10 * time.Second)
			for i := range 400 { // 200/s for two seconds, evenly spaced
				s := t0.Add(time.Duration(i) * 5 * time.Millisecond)
				ev.Calls = append(ev.Calls, imsim.Call{API: im.APIGet, Account: "y" + time.Duration(i).String(), Start: s, End: s.Add(time.Millisecond)})
			}
		}, check: func(r Report) bool { return r.MaxWindow == 200 }},
		{name: "lost event", want: "1 records lost", mutate: func(ev *Evidence) {
			ev.Calls = append(ev.Calls[:3], ev.Calls[4:]...) // a3 never created
		}},
		{name: "lost dead letter", want: "1 records lost", mutate: func(ev *Evidence) { ev.Letters = ev.Letters[1:] }},
		{name: "valid event dead-lettered", want: "wrong outcomes", mutate: func(ev *Evidence) {
			ev.Letters = append(ev.Letters, &dlq.Entry{OriginalTopic: "t", OriginalPartition: 0, OriginalOffset: 1, Reason: dlq.ReasonExhausted})
		}},
		{name: "wrong reason", want: "wrong outcomes", mutate: func(ev *Evidence) { ev.Letters[0].Reason = dlq.ReasonRejected }},
		{name: "wrong contacts", want: "wrong outcomes", mutate: func(ev *Evidence) {
			ev.Calls[0].Contacts = []im.ContactItem{{Type: im.ContactC2C, ToAccount: "someone-else"}}
		}},
		{name: "stray letter", want: "stray dead letters", mutate: func(ev *Evidence) {
			ev.Letters = append(ev.Letters, &dlq.Entry{OriginalTopic: "t", OriginalPartition: 3, OriginalOffset: 9, Reason: dlq.ReasonInvalid})
		}},
		{name: "repeated letter is counted, not a violation", mutate: func(ev *Evidence) {
			ev.Letters = append(ev.Letters, ev.Letters[0])
		}, check: func(r Report) bool { return r.DLQRepeats == 1 }},
		{name: "lag", want: "4 records of lag", mutate: func(ev *Evidence) { ev.Lag = 4 }},
		{name: "prober exempt from the one-call check", mutate: func(ev *Evidence) {
			s := ev.Calls[0].Start
			ev.Calls = append(ev.Calls, imsim.Call{API: im.APIGet, Account: im.DefaultAdmin, Start: s, End: s.Add(time.Second)},
				imsim.Call{API: im.APIGet, Account: im.DefaultAdmin, Start: s.Add(time.Millisecond), End: s.Add(time.Second)})
			ev.Exempt = []string{im.DefaultAdmin}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev := goodRun()
			tc.mutate(&ev)
			r := Check(ev)
			err := r.Err()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected violation: %v\n%s", err, r.Summary())
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Err = %v, want one containing %q\n%s", err, tc.want, r.Summary())
			}
			if tc.check != nil && !tc.check(r) {
				t.Fatalf("report %s", r.Summary())
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	s := NewSchedule(Options{Seed: 1, DLQFaults: true})
	callsKill := &Schedule{Steps: []Step{{Kind: KindKill, On: OnCalls, Within: time.Second}}}
	good := Config{Schedule: s, Binary: "/bin/true", Brokers: []string{"127.0.0.1:9092"}, Dir: t.TempDir()}
	for _, tc := range []struct {
		name   string
		mutate func(c *Config)
		want   string
	}{
		{"no schedule", func(c *Config) { c.Schedule = nil }, "no schedule"},
		{"no binary", func(c *Config) { c.Binary = "" }, "no chatgroupd binary"},
		{"no brokers", func(c *Config) { c.Brokers = nil }, "no brokers"},
		{"no dir", func(c *Config) { c.Dir = "" }, "no log directory"},
		{"dlq faults on a real broker", func(c *Config) {}, "need the embedded broker"},
		{"calls trigger without debug logs", func(c *Config) { c.Schedule = callsKill }, "log level at debug"},
	} {
		c := good
		tc.mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate = %v, want %q", tc.name, err, tc.want)
		}
	}
	good.Schedule = NewSchedule(Options{Seed: 1})
	if err := good.Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
	good.Schedule, good.LogLevel = callsKill, "debug"
	if err := good.Validate(); err != nil {
		t.Errorf("calls trigger at debug: %v", err)
	}
	if _, err := Run(t.Context(), Config{}); err == nil {
		t.Error("Run with an empty config did not fail")
	}
}

// TestCheckProgress: every partition left with uncommitted records is counted and named with
// who held it last; caught-up partitions are not.
func TestCheckProgress(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    PartitionEnd
		want string // "" = no problem
	}{
		{"caught up", PartitionEnd{Partition: 1, Committed: 50, End: 50, Owner: "replica-0.1", Generation: 7, LastGeneration: 7, OwnerAlive: true}, ""},
		{"empty, nothing committed", PartitionEnd{Partition: 1, Committed: -1, End: 0}, ""},
		{"never assigned", PartitionEnd{Partition: 2, Committed: -1, End: 9}, "partition 2 without progress: committed -1 of 9; no replica was ever assigned it"},
		{"given to a vanished member", PartitionEnd{Partition: 3, Committed: 40, End: 90, Owner: "replica-2.4", Member: "m-24", Generation: 6, LastGeneration: 7},
			"no replica was assigned it in generation 7, the last (it went to a member that no longer existed, or to nobody); last held by replica-2.4 (member m-24) in generation 6"},
		{"owner exited", PartitionEnd{Partition: 4, Committed: 40, End: 90, Owner: "replica-1.2", Member: "m-12", Generation: 7, LastGeneration: 7},
			"its owner in generation 7, replica-1.2 (member m-12), had exited"},
		{"owner stalled", PartitionEnd{Partition: 5, Committed: 40, End: 90, Owner: "replica-0.3", Member: "m-03", Generation: 7, LastGeneration: 7, OwnerAlive: true},
			"its owner in generation 7, replica-0.3 (member m-03), still ran"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r Report
			checkProgress(&r, []PartitionEnd{tc.p})
			if tc.want == "" {
				if r.Unprogressed != 0 || r.Err() != nil {
					t.Fatalf("unprogressed %d, err %v; want none", r.Unprogressed, r.Err())
				}
				return
			}
			if r.Unprogressed != 1 || len(r.Problems) != 1 || !strings.Contains(r.Problems[0], tc.want) {
				t.Fatalf("unprogressed %d, problems %q; want one naming %q", r.Unprogressed, r.Problems, tc.want)
			}
			if err := r.Err(); err == nil || !strings.Contains(err.Error(), "partitions without progress") {
				t.Fatalf("Err() = %v, want the partitions without progress", err)
			}
		})
	}
}
