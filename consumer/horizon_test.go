package consumer

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatgroupd/chatgroupd/internal/testwait"
	"github.com/chatgroupd/chatgroupd/metrics"
	"github.com/chatgroupd/chatgroupd/metrics/metricstest"
)

// TestHorizonLeadIsTwoSecondsOfDispatch: what a commit lets a partition dispatch beyond the
// highest record it picked — all of it uncertain for a successor after a crash (existence
// checks, accounts held for UncertainHold) — is ~2 s of its dispatch rate, at least
// minHorizonLead. The old floor of 2·MaxInFlight (512 with the defaults) fails every row but the
// fast one: a fleet's partition dispatching 33 records/s left 15 s of dispatch uncertain.
func TestHorizonLeadIsTwoSecondsOfDispatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		rate float64 // smoothed records picked per second
		want int64   // horizon − (highest picked + 1)
	}{
		{"rate unknown (start-up)", 0, minHorizonLead},
		{"slow partition", 1.5, minHorizonLead},
		{"fleet share of one partition", 33, 66},
		{"fast partition", 400, 800},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(Config{Brokers: []string{"127.0.0.1:1"}, Topic: "t", GroupID: "g",
				Dispatcher: newFakeDispatcher(t), DeadLetterer: &fakeDL{}})
			if err != nil {
				t.Fatal(err)
			}
			e := newEngine(c, context.Background())
			const w, maxPicked = 900, 1100
			p := e.newPart(0)
			p.tr = newTracker(w)
			p.hz.committed, p.hz.maxPicked, p.hz.rate = 1000, maxPicked, tc.rate
			e.parts[0] = p
			// A snapshot within 200 ms of the last rate sample keeps the smoothed rate as is.
			snaps, _ := e.snapshot(e.lastRate)
			lead := snaps[0].h - (maxPicked + 1)
			if lead != tc.want || snaps[0].ext != tc.want {
				t.Errorf("horizon %d (ext %d): %d beyond the highest picked record, want %d (2 s at %.1f/s, at least %d)",
					snaps[0].h, snaps[0].ext, lead, tc.want, tc.rate, minHorizonLead)
			}
		})
	}
}

// TestStartUpDrainsOnEarlyCommits: with the rate still unknown the horizon leads by only
// minHorizonLead records, so a backlog keeps running into it; the early commit (no periodic one:
// CommitInterval is an hour) must carry dispatch through the whole backlog, every record once and
// certain, with about one commit per minHorizonLead/2 records picked (a commit is asked for only
// once dispatch came within ext/2 of the horizon the previous one set). The count is of horizon
// commits alone, so the admission wait (admit.go: a commit round trip per record of a sequential
// account, which the other early commits also serve) is off here (HandoverSkew < 0).
func TestStartUpDrainsOnEarlyCommits(t *testing.T) {
	for _, tc := range []struct {
		name     string
		n, accts int
	}{
		{"one account (every record needs the next offset)", 120, 1},
		{"many accounts (picks jump ahead)", 600, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 1)
			m := metrics.New(prometheus.NewRegistry(), "test", false)
			e.cfgEdit = func(c *Config) { c.CommitInterval, c.Metrics, c.HandoverSkew = time.Hour, m, -1 }
			msgs, all := makeEvents(tc.n, tc.accts, "s")
			e.k.Produce(t, e.topic, msgs...)
			e.start()
			testwait.For(t, 30*time.Second, "the backlog dispatched", func() bool { return len(e.disp.snapshot()) >= tc.n })
			calls := e.disp.snapshot()
			checkOnce(t, calls, all)
			for _, c := range calls {
				if c.Uncertain {
					t.Fatalf("%s dispatched uncertain on a fresh partition", c.ID)
				}
			}
			commits := metricstest.CollectorSum(m.Commits)
			// One per half lead, plus a quarter: a commit asked for while one is in flight, whose
			// snapshot predates the dispatch that asked, is followed by another at once (-race
			// runs read up to 156 for 600 records; a commit per record would be 600).
			if limit := float64(tc.n/(minHorizonLead/2)*5/4 + 2); commits > limit {
				t.Errorf("%.0f commits to dispatch %d records, want at most %.0f", commits, tc.n, limit)
			}
			t.Logf("%d records dispatched on %.0f early commits", tc.n, commits)
		})
	}
}

// TestCrashLeavesOnlyTheLeadUncertain: a member dies during live traffic (records arriving at
// ~20/s, each dispatched at once). Its successor takes as uncertain [W, horizon) — existence
// checks, and accounts held for UncertainHold — so that span must be ~2 s of the dead member's
// dispatch, not the 512 records (25 s of this traffic, every record produced after the restart
// here) the old 2·MaxInFlight floor left.
func TestCrashLeavesOnlyTheLeadUncertain(t *testing.T) {
	e := newEnv(t, 1)
	e.cfgEdit = func(c *Config) { c.UncertainHold = 500 * time.Millisecond } // the span is the subject, not the wait
	const live, after = 60, 300
	msgs, all := makeEvents(live+after, 30, "l")
	r := e.start()
	r.c.crash = true
	for _, m := range msgs[:live] {
		e.k.Produce(t, e.topic, m)
		time.Sleep(50 * time.Millisecond)
	}
	testwait.For(t, 10*time.Second, "the live records dispatched and committed", func() bool {
		c, ok := e.committed()[0]
		return len(e.disp.snapshot()) >= live && ok && c.CommittedOffset >= live-2
	})
	r.stop(t)
	c := e.committed()[0]
	m, err := decodeMeta(c.CommittedOffset, c.Metadata)
	if err != nil {
		t.Fatalf("committed metadata %q: %v", c.Metadata, err)
	}
	span := m.horizon - c.CommittedOffset
	// 2 s at the 20/s produced, the floor, and a commit interval of records not yet stated done.
	if limit := int64(2*20 + minHorizonLead + 10); span > limit {
		t.Errorf("committed watermark %d horizon %d: %d records uncertain for a successor, want at most %d",
			c.CommittedOffset, m.horizon, span, limit)
	}
	before := len(e.disp.snapshot())
	e.k.Produce(t, e.topic, msgs[live:]...)
	_, uncertain := e.restartToEnd(t, all, before)
	if int64(uncertain) > span {
		t.Errorf("%d uncertain dispatches after the crash, more than the committed span %d", uncertain, span)
	}
	t.Logf("span [%d, %d): %d uncertain of %d records dispatched after the crash", c.CommittedOffset, m.horizon, uncertain, len(all)-before)
}
