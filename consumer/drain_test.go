package consumer

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/metrics"
	"github.com/chatgroupd/chatgroupd/metrics/metricstest"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"

	"github.com/chatgroupd/chatgroupd/internal/testwait"
)

// TestRevokeDrainBoundedBySession reproduces a member evicted while its call still runs: session
// 6s, rebalance timeout 20s, one account's call held past both. When a second member joins, the
// first member's generation ends and it stops heartbeating; the coordinator evicts it a session
// after its last heartbeat. Bounded by the rebalance timeout only (the legacy drain, 10s here)
// the first member still holds the call when the second dispatches the same account: two calls
// of one account at once. Bounded by the session it gives the call up in time, commits, and
// nothing overlaps. The legacy variant must be caught, or the check proves nothing.
func TestRevokeDrainBoundedBySession(t *testing.T) {
	for _, tc := range []struct {
		name   string
		legacy bool
	}{{"session bound", false}, {"legacy drain", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 1)
			e.disp.countOverlaps = true
			m := newMetricsEnv(e)
			prev := e.cfgEdit
			e.cfgEdit = func(c *Config) {
				prev(c)
				c.SessionTimeout, c.RebalanceTimeout, c.ShutdownTimeout = 6*time.Second, 20*time.Second, 20*time.Second
				c.TestLegacyDrain = tc.legacy
			}
			var msgs []kafka.Message
			var all []string
			for i := 1; i <= 3; i++ {
				id := fmt.Sprintf("slow%d", i)
				msgs = append(msgs, evMsg(id, "slow", int64(i)))
				all = append(all, id)
			}
			e.k.Produce(t, e.topic, msgs...)
			hold := make(chan struct{})
			e.disp.mu.Lock()
			e.disp.hold["slow"] = hold
			e.disp.mu.Unlock()
			a := e.start()
			testwait.For(t, 15*time.Second, "the slow call in flight", func() bool {
				e.disp.mu.Lock()
				defer e.disp.mu.Unlock()
				return e.disp.active["slow"] == 1
			})
			b := e.start()
			// Long enough for an eviction (session 6s after the last heartbeat) and for the
			// successor to dispatch, shorter than the legacy drain's end.
			testwait.For(t, 20*time.Second, "the second member ready", b.c.Ready)
			time.Sleep(3 * time.Second)
			close(hold)
			testwait.For(t, 40*time.Second, "all committed", func() bool { return e.committedTotal() == int64(len(all)) })
			a.stop(t)
			n := e.disp.overlaps.Load()
			failed := counter(m.Commits.WithLabelValues("error"))
			t.Logf("%d overlapping dispatches, %v failed commits, %d dispatches", n, failed, e.disp.n.Load())
			if tc.legacy {
				if n == 0 {
					t.Error("legacy drain: no overlapping dispatch seen; the check would not catch an eviction")
				}
				return
			}
			checkOnce(t, e.disp.snapshot(), all)
			if n != 0 {
				t.Errorf("%d dispatches of one account in flight at once", n)
			}
			if failed != 0 {
				t.Errorf("%v commits failed: the revoked member's final commit came after its eviction", failed)
			}
			if d := e.disp.n.Load(); d <= int64(len(all)) {
				t.Errorf("%d dispatches for %d events: the held call was never given up and redone", d, len(all))
			}
		})
	}
}

// TestShareDroppedWhenGenerationEnds: the moment a generation ends the member's rate share goes
// to zero for new grants, while its last calls still drain: a successor takes the same share a
// second later, and the two together must not cross the budget. The share learns first that the
// member stops (ShareStopper), which a rebalance does not say (TestRebalanceKeepsWindowOfKeptPartitions).
func TestShareDroppedWhenGenerationEnds(t *testing.T) {
	e := newEnv(t, 2)
	share := &shareRec{}
	e.cfgEdit = func(c *Config) { c.Share = share; c.ShutdownTimeout = 5 * time.Second }
	e.k.Produce(t, e.topic, evMsg("s1", "slow", 1))
	hold := make(chan struct{})
	e.disp.mu.Lock()
	e.disp.hold["slow"] = hold
	e.disp.mu.Unlock()
	r := e.start()
	active := func() bool {
		e.disp.mu.Lock()
		defer e.disp.mu.Unlock()
		return e.disp.active["slow"] == 1
	}
	testwait.For(t, 15*time.Second, "the slow call in flight", active)
	share.mu.Lock()
	if share.owned != 2 {
		t.Errorf("share of %d partitions while running, want 2", share.owned)
	}
	share.mu.Unlock()
	r.cancel()
	testwait.For(t, 3*time.Second, "share dropped to zero", func() bool {
		share.mu.Lock()
		defer share.mu.Unlock()
		return share.calls == 2 && share.owned == 0 && share.tot == 2
	})
	share.mu.Lock()
	if share.stopping != 1 || share.stopCall != 1 {
		t.Errorf("Stopping called %d times, after %d SetPartitions calls; want once, between the assignment and the end", share.stopping, share.stopCall)
	}
	share.mu.Unlock()
	if !active() {
		t.Error("the call ended before the share was checked: the test proves nothing")
	}
	close(hold)
	r.stop(t)
}

// TestEndedOnArrivalCountTowardFetchBound: duplicates (and inherited completed records) end the
// moment they arrive, but stay tracked above a stuck watermark: they must pause the fetch at the
// bound like any record (4×MaxBuffered tracked), not let it read the whole backlog into memory.
func TestEndedOnArrivalCountTowardFetchBound(t *testing.T) {
	e := newEnv(t, 1)
	m := newMetricsEnv(e)
	prev := e.cfgEdit
	e.cfgEdit = func(c *Config) { prev(c); c.MaxBuffered = 10 }
	msgs := []kafka.Message{evMsg("d1", "fast", 1), evMsg("stuck1", "stuck", 1)}
	for range 500 {
		msgs = append(msgs, evMsg("d1", "fast", 1))
	}
	hold := make(chan struct{})
	e.disp.mu.Lock()
	e.disp.hold["stuck"] = hold
	e.disp.mu.Unlock()
	e.k.Produce(t, e.topic, msgs...)
	e.start()
	testwait.For(t, 15*time.Second, "the fetch reaching the bound", func() bool { return counter(m.EventsConsumed) >= 40 })
	time.Sleep(time.Second) // were the bound ignored, the other 460 arrive within it
	if n := counter(m.EventsConsumed); n > 45 {
		t.Errorf("%v records fetched above a stuck watermark, bound is 4×10 tracked", n)
	}
	close(hold)
	testwait.For(t, 20*time.Second, "all committed", func() bool { return e.committedTotal() == int64(len(msgs)) })
	if n := metricstest.CollectorSum(m.EventsProcessed, metrics.LabelOutcome, "duplicate"); n != 500 {
		t.Errorf("%v duplicates counted, want 500", n)
	}
}

// TestShutdownDrainCutWhenGenerationEnds: a shutdown drain runs while the member still
// heartbeats, so it may take ShutdownTimeout; but when another member joins meanwhile the
// generation ends, the member goes silent, and it is evicted a session later. The drain must then
// be cut to the session bound, or the joiner dispatches the account whose call still runs.
func TestShutdownDrainCutWhenGenerationEnds(t *testing.T) {
	e := newEnv(t, 1)
	e.disp.countOverlaps = true
	e.cfgEdit = func(c *Config) {
		c.SessionTimeout, c.RebalanceTimeout, c.ShutdownTimeout = 6*time.Second, 20*time.Second, 20*time.Second
	}
	e.k.Produce(t, e.topic, evMsg("s1", "slow", 1), evMsg("s2", "slow", 2))
	hold := make(chan struct{})
	e.disp.mu.Lock()
	e.disp.hold["slow"] = hold
	e.disp.mu.Unlock()
	a := e.start()
	testwait.For(t, 15*time.Second, "the slow call in flight", func() bool {
		e.disp.mu.Lock()
		defer e.disp.mu.Unlock()
		return e.disp.active["slow"] == 1
	})
	a.cancel() // shutdown: drains up to 20s while heartbeating
	b := e.start()
	testwait.For(t, 30*time.Second, "the joiner ready", b.c.Ready)
	time.Sleep(3 * time.Second) // past an eviction of the first member, had it drained on
	close(hold)
	testwait.For(t, 30*time.Second, "all committed", func() bool { return e.committedTotal() == 2 })
	a.stop(t)
	if n := e.disp.overlaps.Load(); n != 0 {
		t.Errorf("%d dispatches of one account in flight at once", n)
	}
	checkOnce(t, e.disp.snapshot(), []string{"s1", "s2"})
}

// unconfirmed is a Transport that, while failing is set, refuses the consumer's commits and its
// lease heartbeats (kafka-go's own heartbeats use other connections and go on).
// unconfirmed refuses commits and heartbeats while failing: with an error code in the answer
// (COORDINATOR_NOT_AVAILABLE), or, when unreachable, with no answer at all, as a broker that
// went away gives.
type unconfirmed struct {
	failingCommits
	unreachable bool
}

func (u *unconfirmed) RoundTrip(ctx context.Context, addr net.Addr, req protocol.Message) (protocol.Message, error) {
	if r, ok := req.(*groupRawReq); ok && r.key == protocol.Heartbeat && u.failing.Load() {
		if u.unreachable {
			return nil, io.ErrUnexpectedEOF
		}
		return &groupRawResp{key: r.key, body: []byte{0, 0, 0, 0, 0, 15}}, nil // COORDINATOR_NOT_AVAILABLE
	}
	return u.failingCommits.RoundTrip(ctx, addr, req)
}

// TestLeaseLapsesWithoutConfirmedMembership: a member whose commits and heartbeats stop being
// accepted can't know it is still a member (a process paused past its session wakes exactly like this, its
// partitions already with another member): after session − heartbeat − 1s without an accepted
// commit or heartbeat its dispatches send nothing until membership is confirmed again.
//
// "unreachable" is the broker going away: the heartbeat gets no answer at all (it once
// dereferenced the missing answer and crashed the process).
func TestLeaseLapsesWithoutConfirmedMembership(t *testing.T) {
	for _, unreachable := range []bool{false, true} {
		t.Run(map[bool]string{false: "refused", true: "unreachable"}[unreachable], func(t *testing.T) {
			testLeaseLapses(t, unreachable)
		})
	}
}

func testLeaseLapses(t *testing.T, unreachable bool) {
	e := newEnv(t, 1)
	m := newMetricsEnv(e)
	tr := &unconfirmed{failingCommits: failingCommits{RoundTripper: kafka.DefaultTransport}, unreachable: unreachable}
	prev := e.cfgEdit
	e.cfgEdit = func(c *Config) { prev(c); c.Transport = tr }
	first, firstIDs := makeEvents(10, 2, "l")
	e.k.Produce(t, e.topic, first...)
	e.start()
	testwait.For(t, 15*time.Second, "the first events committed", func() bool { return e.committedTotal() == 10 })
	if n := e.disp.leaseHeld.Load(); n != 0 {
		t.Fatalf("%d dispatches held while commits were accepted", n)
	}
	tr.failing.Store(true)
	failed := counter(m.Commits.WithLabelValues("error"))
	testwait.For(t, 5*time.Second, "a refused commit", func() bool { return counter(m.Commits.WithLabelValues("error")) > failed })
	time.Sleep(4500 * time.Millisecond) // the lease: session 6s − heartbeat 0.5s − 1s
	more, moreIDs := makeEvents(5, 5, "m")
	e.k.Produce(t, e.topic, more...)
	testwait.For(t, 10*time.Second, "a dispatch held by the lapsed lease", func() bool { return e.disp.leaseHeld.Load() > 0 })
	if n := len(e.disp.snapshot()); n != 10 {
		t.Fatalf("%d dispatches done, want the first 10 only while membership is unconfirmed", n)
	}
	tr.failing.Store(false)
	testwait.For(t, 15*time.Second, "all committed", func() bool { return e.committedTotal() == 15 })
	checkOnce(t, e.disp.snapshot(), append(firstIDs, moreIDs...))
}
