package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/dispatcher"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// stallDispatcher is the fake dispatcher with one faulty account: while the fault is on, that
// account's events fail "transiently" — Dispatch returns Stalled once the task's StallLimit
// (counted from its RetryStart) has passed, or, without a limit (the lane), keeps failing until
// the fault clears or the claim ends. Every other event goes to the fake. It records each
// event's latency from its record time to its answer.
type stallDispatcher struct {
	*fakeDispatcher
	faulty  string
	fault   atomic.Bool
	cleared chan struct{}
	stalls  atomic.Int64
	// budgetStarts holds the RetryStart of every lane dispatch of the faulty account.
	mu           sync.Mutex
	budgetStarts []time.Time
	lat          []time.Duration // others' record-time-to-answer latencies
}

func newStallDispatcher(t testing.TB, faulty string) *stallDispatcher {
	d := &stallDispatcher{fakeDispatcher: newFakeDispatcher(t), faulty: faulty, cleared: make(chan struct{})}
	d.fault.Store(true)
	return d
}

func (d *stallDispatcher) clear() {
	d.fault.Store(false)
	close(d.cleared)
}

func (d *stallDispatcher) Dispatch(ctx context.Context, task dispatcher.Task) (dispatcher.Outcome, error) {
	if task.Event.FromAccount == d.faulty && d.fault.Load() {
		start := time.Now()
		if !task.RetryStart.IsZero() && task.RetryStart.Before(start) {
			start = task.RetryStart
		}
		drain := task.Drain
		if drain == nil {
			drain = ctx
		}
		if task.StallLimit > 0 {
			var parkNow <-chan struct{}
			if task.ParkNow != nil {
				parkNow = task.ParkNow.Done()
			}
			select {
			case <-parkNow:
				d.stalls.Add(1)
				return dispatcher.Outcome{Result: dispatcher.Stalled, Code: 50004, Attempts: 2, RetryStart: start}, nil
			case <-time.After(time.Until(start.Add(task.StallLimit))):
				d.stalls.Add(1)
				return dispatcher.Outcome{Result: dispatcher.Stalled, Code: 50004, Attempts: 3, RetryStart: start}, nil
			case <-d.cleared:
			case <-drain.Done():
				return dispatcher.Outcome{}, fmt.Errorf("fake: %w", dispatcher.ErrDrained)
			}
		} else {
			d.mu.Lock()
			d.budgetStarts = append(d.budgetStarts, task.RetryStart)
			d.mu.Unlock()
			select {
			case <-d.cleared:
			case <-drain.Done():
				return dispatcher.Outcome{}, fmt.Errorf("fake: %w", dispatcher.ErrDrained)
			}
		}
	}
	out, err := d.fakeDispatcher.Dispatch(ctx, task)
	if err == nil && task.Event.FromAccount != d.faulty && !task.RecordTime.IsZero() {
		d.mu.Lock()
		d.lat = append(d.lat, time.Since(task.RecordTime))
		d.mu.Unlock()
	}
	return out, err
}

func (d *stallDispatcher) p99() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.lat) == 0 {
		return 0
	}
	l := slices.Clone(d.lat)
	slices.Sort(l)
	return l[len(l)*99/100]
}

// laneEnv is an env whose consumer runs with the retry lane on and a scaled-down stall limit.
func laneEnv(t *testing.T, faulty string) (*env, *stallDispatcher) {
	e := newEnv(t, 1)
	e.k.CreateTopic(t, e.topic+".retry", 1)
	d := newStallDispatcher(t, faulty)
	e.cfgEdit = func(c *Config) {
		c.Dispatcher = d
		c.RetryLane = true
		c.AccountStallLimit = 300 * time.Millisecond
	}
	return e, d
}

// produceRounds writes rounds × accounts events to partition 0, one per account per round
// (seq = round+1), pausing between rounds, with time stamps now so latency is measurable.
func produceRounds(t *testing.T, e *env, accounts, rounds int, pause time.Duration, extra func(round int) []kafka.Message) int {
	n := 0
	for r := 0; r < rounds; r++ {
		var msgs []kafka.Message
		for a := 0; a < accounts; a++ {
			msgs = append(msgs, evMsg(fmt.Sprintf("o%d-%d", a, r+1), fmt.Sprintf("other%d", a), int64(r+1)))
		}
		if extra != nil {
			msgs = append(msgs, extra(r)...)
		}
		now := time.Now()
		for i := range msgs {
			msgs[i].Time = now
		}
		e.k.Produce(t, e.topic, msgs...)
		n += len(msgs)
		time.Sleep(pause)
	}
	return n
}

// checkAccount: the account's events were each applied once (by id), in seq order 1..n.
func checkAccount(t *testing.T, calls []call, acct string, n int) {
	t.Helper()
	var seqs []int64
	for _, c := range calls {
		if c.Account == acct {
			seqs = append(seqs, c.Seq)
		}
	}
	if len(seqs) != n {
		t.Fatalf("%s: %d applies %v, want %d", acct, len(seqs), seqs, n)
	}
	for i, s := range seqs {
		if s != int64(i+1) {
			t.Fatalf("%s: applies in order %v, want 1..%d", acct, seqs, n)
		}
	}
}

func (e *env) laneCommitted(t *testing.T) int64 {
	cl := &kafka.Client{Addr: kafka.TCP(e.k.Brokers...)}
	resp, err := cl.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: e.group,
		Topics: map[string][]int{e.topic + ".retry": {0}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range resp.Topics[e.topic+".retry"] {
		return p.CommittedOffset
	}
	return -1
}

// TestLaneParksStuckAccount is the acceptance scenario on the embedded broker: one account
// keeps failing transiently while 999 others in the same partition keep producing. The others
// keep being applied, the main partition's committed lag reaches 0 while the account is parked,
// and once the fault clears its events are applied in seq order, each once.
func TestLaneParksStuckAccount(t *testing.T) {
	const accounts, rounds = 999, 5
	run := func(t *testing.T, fault bool) (time.Duration, *env, *stallDispatcher) {
		e, d := laneEnv(t, "stuck")
		if !fault {
			d.clear()
		}
		rc := e.start()
		// Latency from here on is the consumer's, not the group join's.
		testwait.For(t, 30*time.Second, "member ready", rc.c.Ready)
		n := produceRounds(t, e, accounts, rounds, 200*time.Millisecond, func(r int) []kafka.Message {
			return []kafka.Message{evMsg(fmt.Sprintf("s-%d", r+1), "stuck", int64(r+1))}
		})
		testwait.For(t, 30*time.Second, "others applied", func() bool { return len(d.snapshot()) >= accounts*rounds })
		if !fault {
			testwait.For(t, 10*time.Second, "all applied", func() bool { return len(d.snapshot()) == n })
			return d.p99(), e, d
		}
		testwait.For(t, 10*time.Second, "main partition committed to its end while parked", func() bool {
			return e.committed()[0].CommittedOffset == int64(n)
		})
		if !d.fault.Load() || slices.ContainsFunc(d.snapshot(), func(c call) bool { return c.Account == "stuck" }) {
			t.Fatal("the stuck account was applied while faulty")
		}
		return d.p99(), e, d
	}
	var base time.Duration
	t.Run("without fault", func(t *testing.T) { base, _, _ = run(t, false) })
	t.Run("with fault", func(t *testing.T) {
		p99, e, d := run(t, true)
		t.Logf("others' p99 record-to-applied latency: %v without the fault, %v with it (stalls %d)", base, p99, d.stalls.Load())
		if d.stalls.Load() != 1 {
			t.Errorf("%d stalls, want 1: the account's later events follow its head into the lane", d.stalls.Load())
		}
		lc := LaneListConfig{Brokers: e.k.Brokers, Topic: e.topic, GroupID: e.group}
		parked, err := ListParked(context.Background(), lc)
		if err != nil {
			t.Fatal(err)
		}
		if len(parked) != 1 || parked[0].Account != "stuck" || parked[0].Events != rounds || parked[0].Code != 50004 ||
			parked[0].Reason != parkStall || parked[0].HeadSourceOffset != accounts || parked[0].Since.IsZero() {
			t.Fatalf("lane list %+v, want stuck with %d events, code 50004, head at offset %d", parked, rounds, accounts)
		}
		d.clear()
		testwait.For(t, 10*time.Second, "stuck account applied", func() bool {
			return len(d.snapshot()) == accounts*rounds+rounds
		})
		calls := d.snapshot()
		checkAccount(t, calls, "stuck", rounds)
		for id, k := range ids(calls) {
			if k != 1 {
				t.Errorf("event %s applied %d times", id, k)
			}
		}
		// The unpark marker follows: the lane's committed position passes every record.
		testwait.For(t, 10*time.Second, "lane committed to its end", func() bool {
			return e.laneCommitted(t) == int64(rounds)+1
		})
		if parked, err := ListParked(context.Background(), lc); err != nil || len(parked) != 0 {
			t.Errorf("lane list after the drain: %+v, %v; want none", parked, err)
		}
		if got := e.committed()[0].CommittedOffset; got != int64(accounts*rounds+rounds) {
			t.Errorf("main committed %d, want %d", got, accounts*rounds+rounds)
		}
	})
}

// laneEnd is the lane partition's log end.
func (e *env) laneEnd(t *testing.T) int64 {
	cl := &kafka.Client{Addr: kafka.TCP(e.k.Brokers...)}
	lo, err := cl.ListOffsets(context.Background(), &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
		e.topic + ".retry": {kafka.LastOffsetOf(0)}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range lo.Topics[e.topic+".retry"] {
		return p.LastOffset
	}
	return -1
}

// checkOnceEach: every produced event was applied, none created twice (a second apply is only
// allowed as an uncertain one, which looks the group up before creating), and the stuck
// account's events were first applied in seq order.
func checkOnceEach(t *testing.T, calls []call, want int, stuck string, n int) {
	t.Helper()
	creates := map[string]int{}
	applied := map[string]bool{}
	var seqs []int64
	for _, c := range calls {
		if !c.Uncertain {
			creates[c.ID]++
		}
		if c.Account == stuck && !applied[c.ID] {
			seqs = append(seqs, c.Seq)
		}
		applied[c.ID] = true
	}
	if len(applied) != want {
		t.Errorf("%d events applied, want %d (lost %d)", len(applied), want, want-len(applied))
	}
	for id, k := range creates {
		if k > 1 {
			t.Errorf("event %s created %d times", id, k)
		}
	}
	if len(seqs) != n || !slices.IsSorted(seqs) || seqs[0] != 1 {
		t.Errorf("%s: first applies in order %v…, want 1..%d", stuck, seqs[:min(len(seqs), 10)], n)
	}
	t.Logf("%d applies for %d events (%d repeated as uncertain checks)", len(calls), want, len(calls)-len(applied))
}

// TestLaneHotStuckAccount: an account with 5000 queued events stalls; its partition does not:
// the others are applied and the main partition commits to its end while it is parked, then
// the 5000 are applied in order, once each.
func TestLaneHotStuckAccount(t *testing.T) {
	const hot, accounts, rounds = 5000, 999, 2
	e, d := laneEnv(t, "hot")
	// What the lane holds in memory is sampled throughout: at most laneKeep records of the
	// parked account, the rest read again from the lane as its head advances.
	var (
		engines  sync.Map
		maxHeld  atomic.Int64
		sampling sync.WaitGroup
	)
	base := e.cfgEdit
	e.cfgEdit = func(c *Config) { base(c); c.testEngine = func(en *engine) { engines.Store(en, true) } }
	stopSampling := make(chan struct{})
	sampling.Go(func() {
		for {
			select {
			case <-stopSampling:
				return
			case <-time.After(5 * time.Millisecond):
			}
			engines.Range(func(k, _ any) bool {
				en := k.(*engine)
				en.mu.Lock()
				for _, p := range en.parts {
					if n := int64(len(p.lane.unended)); n > maxHeld.Load() {
						maxHeld.Store(n)
					}
				}
				en.mu.Unlock()
				return true
			})
		}
	})
	defer func() {
		close(stopSampling)
		sampling.Wait()
		t.Logf("at most %d lane records held in memory", maxHeld.Load())
		if maxHeld.Load() > laneKeep {
			t.Errorf("%d lane records held in memory for one parked account, bound %d", maxHeld.Load(), laneKeep)
		}
	}()
	var msgs []kafka.Message
	for s := 1; s <= hot; s++ {
		msgs = append(msgs, evMsg(fmt.Sprintf("h-%d", s), "hot", int64(s)))
	}
	e.k.Produce(t, e.topic, msgs...)
	e.start()
	n := hot + produceRounds(t, e, accounts, rounds, 100*time.Millisecond, nil)
	testwait.For(t, 60*time.Second, "others applied and main committed to its end while parked", func() bool {
		return len(d.snapshot()) >= accounts*rounds && e.committed()[0].CommittedOffset == int64(n)
	})
	if c := slices.ContainsFunc(d.snapshot(), func(c call) bool { return c.Account == "hot" }); c || !d.fault.Load() {
		t.Fatal("hot account applied while faulty")
	}
	t.Logf("lane holds %d records", e.laneEnd(t))
	d.clear()
	testwait.For(t, 60*time.Second, "hot account applied", func() bool { return len(d.snapshot()) >= n })
	checkOnceEach(t, d.snapshot(), n, "hot", hot)
	checkAccount(t, d.snapshot(), "hot", hot)
}

// TestLaneCrash kills the consumer (no drain, no final commit) while an account is being parked
// and while its lane is being drained; the successor loses nothing, creates nothing twice and
// keeps the account's order. The stalled head's retry budget start survives the restarts.
func TestLaneCrash(t *testing.T) {
	const stuckN, accounts = 2000, 999
	// handover: a graceful stop (drain, final commit) while parked, as at a rebalance: the next
	// owner starts from the committed lane and main positions.
	for _, phase := range []string{"parking", "drain", "handover"} {
		t.Run(phase, func(t *testing.T) {
			e, d := laneEnv(t, "stuck")
			var msgs []kafka.Message
			for s := 1; s <= stuckN; s++ {
				msgs = append(msgs, evMsg(fmt.Sprintf("s-%d", s), "stuck", int64(s)))
			}
			e.k.Produce(t, e.topic, msgs...)
			r := e.start()
			r.c.crash = phase != "handover"
			n := stuckN + produceRounds(t, e, accounts, 1, 0, nil)
			if phase == "parking" || phase == "handover" {
				testwait.For(t, 30*time.Second, "parking under way", func() bool { return e.laneEnd(t) > 50 })
				r.stop(t)
				t.Logf("%s with %d of %d records in the lane", map[bool]string{true: "crashed", false: "stopped"}[phase == "parking"], e.laneEnd(t), stuckN)
				r = e.start()
				r.c.crash = true
				testwait.For(t, 30*time.Second, "others applied, main committed to its end", func() bool {
					return e.committed()[0].CommittedOffset == int64(n)
				})
				d.clear()
			} else {
				testwait.For(t, 30*time.Second, "parked, main committed to its end", func() bool {
					return e.committed()[0].CommittedOffset == int64(n) && e.laneEnd(t) >= stuckN
				})
				d.mu.Lock()
				d.delay["stuck"] = 2 * time.Millisecond
				d.mu.Unlock()
				d.clear()
				testwait.For(t, 30*time.Second, "lane drain under way", func() bool {
					k := 0
					for _, c := range d.snapshot() {
						if c.Account == "stuck" {
							k++
						}
					}
					return k > 200
				})
				r.stop(t)
				t.Logf("crashed during the drain; lane committed at %d of %d", e.laneCommitted(t), e.laneEnd(t))
				d.undelay()
				r = e.start()
			}
			testwait.For(t, 60*time.Second, "everything applied", func() bool {
				return len(ids(d.snapshot())) >= n && e.laneCommitted(t) == e.laneEnd(t)
			})
			r.stop(t)
			checkOnceEach(t, d.snapshot(), n, "stuck", stuckN)
			d.mu.Lock()
			defer d.mu.Unlock()
			var first time.Time
			for _, s := range d.budgetStarts {
				if s.IsZero() {
					continue
				}
				if first.IsZero() {
					first = s
				} else if !s.Equal(first) {
					t.Errorf("the head's retry start changed across the crash: %v then %v", first, s)
				}
			}
			if first.IsZero() && phase != "drain" {
				t.Error("no lane dispatch carried the head's retry start")
			}
		})
	}
}

// TestLaneTopicChecked: with the lane on, a missing or too small lane topic is a clear setup
// error naming the fix, and the event topic is not consumed meanwhile (nothing lost).
func TestLaneTopicChecked(t *testing.T) {
	for _, tc := range []struct {
		name  string
		parts int // lane partitions; 0: no lane topic
	}{{"missing", 0}, {"too few partitions", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 2)
			if tc.parts > 0 {
				e.k.CreateTopic(t, e.topic+".retry", tc.parts)
			}
			e.cfgEdit = func(c *Config) { c.RetryLane = true }
			cfg := e.config()
			cfg = cfg.withDefaults()
			c, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			md, err := c.client.Metadata(context.Background(), &kafka.MetadataRequest{Topics: []string{e.topic, e.topic + ".retry"}})
			if err != nil {
				t.Fatal(err)
			}
			_, err = checkTopics(&c.cfg, md)
			if !errors.Is(err, errLaneTopic) || !strings.Contains(err.Error(), "--partitions 2") {
				t.Fatalf("err = %v, want errLaneTopic naming 2 partitions", err)
			}
			e.k.Produce(t, e.topic, evMsg("a", "acct", 1))
			e.start()
			time.Sleep(2 * time.Second)
			if n := len(e.disp.snapshot()); n != 0 {
				t.Errorf("%d events dispatched without a usable lane", n)
			}
		})
	}
}

// TestLaneParksOnMetadataBudget: with a stall limit far away (a minute) but a commit metadata
// budget the held-back records would outgrow, the account holding the watermark is parked at
// once (reason budget) instead of holding its partition until the limit.
func TestLaneParksOnMetadataBudget(t *testing.T) {
	e, d := laneEnv(t, "stuck")
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, "test", false)
	edit := e.cfgEdit
	e.cfgEdit = func(c *Config) {
		edit(c)
		c.AccountStallLimit = time.Minute
		c.MetadataMaxBytes = 64
		c.Metrics = m
	}
	msgs := []kafka.Message{evMsg("s-1", "stuck", 1)}
	for i := 0; i < 3000; i++ {
		msgs = append(msgs, evMsg(fmt.Sprintf("o-%d", i), fmt.Sprintf("other%d", i), 1))
	}
	msgs = append(msgs, evMsg("s-2", "stuck", 2))
	e.k.Produce(t, e.topic, msgs...)
	start := time.Now()
	e.start()
	testwait.For(t, 20*time.Second, "others applied and committed while the stall limit is far off", func() bool {
		return len(d.snapshot()) == 3000 && e.committed()[0].CommittedOffset == int64(len(msgs))
	})
	took := time.Since(start)
	if got := testutil.ToFloat64(m.LaneParks.WithLabelValues(parkBudget)); got != 1 {
		t.Errorf("parks{budget} = %v, want 1", got)
	}
	t.Logf("3000 others applied in %v with the account parked for the metadata budget", took)
	d.clear()
	testwait.For(t, 10*time.Second, "stuck applied", func() bool { return len(d.snapshot()) == 3002 })
	checkAccount(t, d.snapshot(), "stuck", 2)
}
