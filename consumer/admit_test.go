package consumer

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/dispatcher"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
	"github.com/chatgroupd/chatgroupd/metrics/metricstest"
)

// listCheck checks, as each request is about to be written (once admitted), what a successor
// would read if the member died right then: the committed metadata must list the record as
// possibly sent, or, with no list, have it below its horizon. Records are produced to one
// partition in the order of offs.
type listCheck struct {
	Dispatcher
	e        *env
	offs     map[string]int64 // event id → offset
	checked  atomic.Int64
	mu       sync.Mutex
	unlisted []string
}

func (l *listCheck) Dispatch(ctx context.Context, t dispatcher.Task) (dispatcher.Outcome, error) {
	if err := admitFake(ctx, t); err != nil {
		return dispatcher.Outcome{}, err
	}
	off := l.offs[t.Event.EventID]
	cl := &kafka.Client{Addr: kafka.TCP(l.e.k.Brokers...)}
	resp, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: l.e.group, Topics: map[string][]int{l.e.topic: {0}}})
	if err != nil {
		return dispatcher.Outcome{}, fmt.Errorf("list check: %w", err)
	}
	c := resp.Topics[l.e.topic][0]
	m, err := decodeMeta(c.CommittedOffset, c.Metadata)
	listed := err == nil && off >= c.CommittedOffset && off < m.horizon &&
		(!m.sentKnown || slices.ContainsFunc(m.sent, func(s span) bool { return s.start <= off && off < s.end }))
	l.checked.Add(1)
	if !listed {
		l.mu.Lock()
		l.unlisted = append(l.unlisted, fmt.Sprintf("%s@%d (committed %d %q)", t.Event.EventID, off, c.CommittedOffset, c.Metadata))
		l.mu.Unlock()
	}
	return l.Dispatcher.Dispatch(ctx, t)
}

// TestWriteWaitsForAcceptedList: a record is written only once the coordinator accepted a commit
// that lists it as possibly sent (metadata v5), so a successor after a crash at any moment reads
// it as uncertain. Checked at every write of a 600-record backlog over 40 accounts; with
// Config.TestUngatedWrites (the chaos suite's ungated-writes break) records are written before
// any commit lists them, and the check must catch it.
func TestWriteWaitsForAcceptedList(t *testing.T) {
	for _, tc := range gateCases() {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 1)
			msgs, all := makeEvents(600, 40, "w")
			offs := map[string]int64{}
			for i, id := range all {
				offs[id] = int64(i)
			}
			lc := &listCheck{Dispatcher: e.disp, e: e, offs: offs}
			e.cfgEdit = func(c *Config) { c.Dispatcher, c.TestUngatedWrites = lc, tc.ungated }
			m := newMetricsEnv(e)
			e.k.Produce(t, e.topic, msgs...)
			e.start()
			testwait.For(t, 60*time.Second, "all committed", func() bool { return e.committedTotal() == int64(len(all)) })
			checkOnce(t, e.disp.snapshot(), all)
			lc.mu.Lock()
			defer lc.mu.Unlock()
			t.Logf("%d writes checked, %d not listed by the committed metadata", lc.checked.Load(), len(lc.unlisted))
			waits := metricstest.CollectorSum(m.AdmitWait)
			if want := map[bool]float64{false: float64(len(all)), true: 0}[tc.ungated]; waits != want {
				t.Errorf("admission waits observed: %.0f, want %.0f (one per event, none ungated)", waits, want)
			}
			if tc.ungated {
				if len(lc.unlisted) == 0 {
					t.Error("ungated writes: every write was listed anyway, the check could not tell")
				}
				return
			}
			for _, u := range lc.unlisted[:min(len(lc.unlisted), 5)] {
				t.Errorf("written while the committed metadata did not list it: %s", u)
			}
		})
	}
}

// TestCrashLeavesOnlyWrittenUncertain: a member dies in a backlog with three accounts' calls
// written (never answered) and seventeen accounts' records picked but waiting for grants. Its
// last periodic commit lists only the three (metadata v5); the successor checks and holds only
// those, and dispatches the seventeen at once as certain. Before, every picked record was
// uncertain after a crash: all twenty accounts waited the full hold (fleet-kill: the restarted
// replica made no create for 6 s).
func TestCrashLeavesOnlyWrittenUncertain(t *testing.T) {
	const hold = 3 * time.Second
	e := newEnv(t, 1)
	written, waiting := map[string]bool{}, map[string]bool{}
	var msgs []kafka.Message
	var all []string
	for i := range 20 {
		a := fmt.Sprintf("waiting%d", i)
		if i%7 == 3 {
			a = fmt.Sprintf("written%d", i)
			written[a] = true
		} else {
			waiting[a] = true
		}
		all = append(all, a+"-1")
		msgs = append(msgs, evMsg(a+"-1", a, 1))
	}
	e.k.Produce(t, e.topic, msgs...)
	never := e.disp.holdAll(written)
	gw := &grantWait{Dispatcher: e.disp, accts: waiting}
	e.cfgEdit = func(c *Config) { c.Dispatcher, c.UncertainHold = gw, hold }
	a := e.start()
	a.c.crash = true
	testwait.For(t, 15*time.Second, "three calls listed by a commit, seventeen waiting for grants", func() bool {
		return gw.waiting.Load() == int64(len(waiting)) && listedBy(e.committed()[0]) == int64(len(written))
	})
	a.stop(t)
	c := e.committed()[0]
	meta, err := decodeMeta(c.CommittedOffset, c.Metadata)
	if err != nil || !meta.sentKnown || meta.handover != nil {
		t.Fatalf("last commit %q: %+v, %v; want a v5 list", c.Metadata, meta, err)
	}
	if want := []span{{3, 4}, {10, 11}, {17, 18}}; !slices.Equal(meta.sent, want) {
		t.Fatalf("last commit lists %v as possibly sent, want %v", meta.sent, want)
	}

	close(never)
	sl := &startLog{Dispatcher: e.disp, starts: map[string][]time.Time{}}
	e.cfgEdit = func(c *Config) { c.Dispatcher, c.UncertainHold = sl, hold }
	t0 := time.Now()
	b := e.start()
	testwait.For(t, 20*time.Second, "the successor assigned", b.c.Ready)
	assigned := time.Now()
	testwait.For(t, 30*time.Second, "all committed", func() bool { return e.committedTotal() == int64(len(all)) })
	unc := uncertainOf(e.disp.snapshot())
	for _, id := range all {
		acct := id[:len(id)-2]
		s := sl.since(acct, t0)
		if len(s) == 0 {
			t.Fatalf("%s never dispatched by the successor", acct)
		}
		waited := s[0].Sub(assigned)
		switch {
		case written[acct] && (!unc[id] || waited < hold-200*time.Millisecond):
			t.Errorf("%s (written by the dead member): uncertain %v, dispatched %v after the assignment; want uncertain after the %v hold",
				id, unc[id], waited, hold)
		case waiting[acct] && (unc[id] || waited > hold/4):
			t.Errorf("%s (never written): uncertain %v, dispatched %v after the assignment; want certain, at once", id, unc[id], waited)
		}
	}
}

// listedBy counts the offsets the commit c lists as possibly sent (v4, v5), 0 without a list.
func listedBy(c kafka.OffsetFetchPartition) int64 {
	m, err := decodeMeta(c.CommittedOffset, c.Metadata)
	if err != nil || !m.sentKnown {
		return 0
	}
	var n int64
	for _, s := range m.sent {
		n += s.end - s.start
	}
	return n
}

// TestLaneCopyWaitsForMainStatement: a parked account's record forwarded to the retry lane ends at
// main without an admission of its own. Its lane copy is written only once an accepted commit
// states the main record ended: before that, a successor after a crash would take the main
// record as never sent (not listed) and apply it again as certain, even after the lane applied
// the copy and unparked the account (found in review: the lane's writes were not gated). Here
// commits fail from before the forward: the copies of records already stated go out, the new
// one waits until commits are accepted again. With Config.TestUngatedWrites, or
// Config.TestUngatedLane (the lane's gate alone: the chaos break ungated-lane), it goes out at
// once, and the test must say so.
func TestLaneCopyWaitsForMainStatement(t *testing.T) {
	for _, tc := range []struct {
		name         string
		writes, lane bool
	}{{"gated", false, false}, {"ungated (must be caught)", true, false}, {"ungated lane (must be caught)", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			ungated := tc.writes || tc.lane
			e, d := laneEnv(t, "stuck")
			m := newMetricsEnv(e)
			tr := &failingCommits{RoundTripper: kafka.DefaultTransport}
			prev := e.cfgEdit
			e.cfgEdit = func(c *Config) {
				prev(c)
				c.Transport, c.TestUngatedWrites, c.TestUngatedLane = tr, tc.writes, tc.lane
			}
			var msgs []kafka.Message
			for s := 1; s <= 3; s++ {
				msgs = append(msgs, evMsg(fmt.Sprintf("s-%d", s), "stuck", int64(s)))
			}
			for i := range 5 {
				msgs = append(msgs, evMsg(fmt.Sprintf("o-%d", i), fmt.Sprintf("o%d", i), 1))
			}
			e.k.Produce(t, e.topic, msgs...)
			e.start()
			testwait.For(t, 30*time.Second, "stuck parked with three records, main committed to its end", func() bool {
				return e.committed()[0].CommittedOffset == int64(len(msgs)) && e.laneEnd(t) >= 3
			})
			tr.failing.Store(true)
			failed := metricstest.CollectorSum(m.Commits, "result", "error")
			testwait.For(t, 10*time.Second, "a commit failed", func() bool { return metricstest.CollectorSum(m.Commits, "result", "error") > failed })
			lane0 := e.laneEnd(t)
			e.k.Produce(t, e.topic, evMsg("s-4", "stuck", 4)) // main offset 8
			testwait.For(t, 10*time.Second, "s-4 forwarded to the lane", func() bool { return e.laneEnd(t) > lane0 })
			d.clear()
			applied := func(id string) bool {
				return slices.ContainsFunc(d.snapshot(), func(c call) bool { return c.ID == id })
			}
			testwait.For(t, 10*time.Second, "the lane applied s-3 (stated before the failures)", func() bool { return applied("s-3") })
			failed = metricstest.CollectorSum(m.Commits, "result", "error")
			testwait.For(t, 10*time.Second, "three more commits failed", func() bool {
				return applied("s-4") || metricstest.CollectorSum(m.Commits, "result", "error") >= failed+3
			})
			if ungated {
				if !applied("s-4") {
					t.Error("ungated: s-4's copy was not written while commits failed either; the test could not tell")
				}
				return
			}
			if applied("s-4") {
				t.Fatal("s-4's lane copy was written while no accepted commit stated its main record ended")
			}
			tr.failing.Store(false)
			testwait.For(t, 10*time.Second, "s-4 applied once commits are accepted again", func() bool { return applied("s-4") })
			checkAccount(t, d.snapshot(), "stuck", 4)
		})
	}
}

// gateCases run a test of the admission rule as built and with Config.TestUngatedWrites, which the
// test must catch.
func gateCases() []gateCase {
	return []gateCase{{"gated", false}, {"ungated (must be caught)", true}}
}

type gateCase struct {
	name    string
	ungated bool
}

// holdAll makes every dispatch of the accounts in accts write its request and then wait, never
// answered, until the returned channel is closed (or its context ends).
func (f *fakeDispatcher) holdAll(accts map[string]bool) chan struct{} {
	never := make(chan struct{})
	f.mu.Lock()
	for a := range accts {
		f.hold[a] = never
	}
	f.mu.Unlock()
	return never
}
