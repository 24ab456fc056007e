package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/dispatcher"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// latencyRecorder passes every task to the real dispatcher and notes, for events of accounts
// other than skip that were applied, the time from their record to the answer.
type latencyRecorder struct {
	*dispatcher.Dispatcher
	skip    string
	mu      sync.Mutex
	lat     []time.Duration
	applied map[string]int // applies per account
}

func (r *latencyRecorder) Dispatch(ctx context.Context, t dispatcher.Task) (dispatcher.Outcome, error) {
	out, err := r.Dispatcher.Dispatch(ctx, t)
	if err == nil && out.Result == dispatcher.Applied {
		r.mu.Lock()
		r.applied[t.Event.FromAccount]++
		if t.Event.FromAccount != r.skip && !t.RecordTime.IsZero() {
			r.lat = append(r.lat, time.Since(t.RecordTime))
		}
		r.mu.Unlock()
	}
	return out, err
}

func (r *latencyRecorder) count(skipped bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for a, k := range r.applied {
		if (a == r.skip) == skipped {
			n += k
		}
	}
	return n
}

func (r *latencyRecorder) p99() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.lat) == 0 {
		return 0
	}
	l := slices.Clone(r.lat)
	slices.Sort(l)
	return l[len(l)*99/100]
}

// simEvent is an event whose group name carries its seq, so the simulator's state shows the
// order in which an account's events were applied.
func simEvent(id, acct string, seq int64) kafka.Message {
	e := event.Event{EventID: id, EventType: event.TypeContactGroupCreated, FromAccount: acct, Seq: seq,
		GroupName: fmt.Sprintf("g%d", seq), Contacts: []event.Contact{{Type: 1, ToAccount: "peer"}}}
	v, err := json.Marshal(e)
	if err != nil {
		panic(err)
	}
	return kafka.Message{Key: []byte(acct), Value: v, Time: time.Now()}
}

// TestLaneParksAccountStuckAtSimulator is TestLaneParksStuckAccount with the fault where it
// happens in production: the IM API answers 50004 to every call of one account (the simulator's
// per-account fault, for a scaled "10 minutes"), with the real IM client and dispatcher between
// it and the consumer, and 999 other accounts in the same partition. Scaled: a 2 s stall limit
// for the default 2 minutes, a 20 s fault for 10 minutes. It asserts what the issue asks: the
// others' p99 record-to-applied latency within 2 s of the same run without the fault, the main
// partition committed to its end while the account is parked, and after the fault ends by
// itself, the account's events applied at the API in seq order, each once.
func TestLaneParksAccountStuckAtSimulator(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a simulator, the IM client and the dispatcher")
	}
	const (
		accounts, rounds = 999, 2
		streamFor        = 9 * time.Second
		stuckEvents      = 3
		stuck            = "stuck"
		stallLimit       = 2 * time.Second
		faultFor         = 20 * time.Second
		appID            = 1400000001
		key              = "lane-sim-key"
	)
	type result struct {
		p99  time.Duration
		e    *env
		sim  *imsim.Server
		rec  *latencyRecorder
		n    int
		tEnd time.Time // when the fault ends
	}
	run := func(t *testing.T, fault bool) result {
		e := newEnv(t, 1)
		e.k.CreateTopic(t, e.topic+".retry", 1)
		sim, err := imsim.New(imsim.Config{SDKAppID: appID, SecretKey: key, RateLimit: 1000000, CallLog: true, Seed: 7})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(sim)
		t.Cleanup(func() { sim.Close(); srv.Close() })
		m := metrics.NewNop()
		client, err := im.New(im.Config{SDKAppID: appID, SecretKey: key, BaseURL: srv.URL, Logger: e.log})
		if err != nil {
			t.Fatal(err)
		}
		disp, err := dispatcher.New(dispatcher.Config{API: client, RateLimit: 100000, GetRateLimit: 100000,
			RetryBudget: time.Hour, BackoffBase: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
			ProbeAccount: im.DefaultAdmin, Logger: e.log, Metrics: m})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = disp.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		rec := &latencyRecorder{Dispatcher: disp, skip: stuck, applied: map[string]int{}}
		e.cfgEdit = func(c *Config) {
			c.Dispatcher, c.Share = rec, disp
			c.RetryLane, c.AccountStallLimit = true, stallLimit
		}
		rc := e.start()
		testwait.For(t, 30*time.Second, "member ready", rc.c.Ready)
		r := result{e: e, sim: sim, rec: rec}
		if fault {
			sim.SetAccountFault(stuck, 50004, faultFor)
			r.tEnd = time.Now().Add(faultFor)
		}
		// The others' events arrive as a steady stream (every account, one event per round, in
		// 100 ms batches over streamFor) below what the pipeline can take even under the race
		// detector, so the latency measured is the fault's effect, not a queue; the stuck
		// account's events are spread over it.
		time.Sleep(1500 * time.Millisecond) // the first share's one-second wait, in both runs
		var all []kafka.Message
		for round := range rounds {
			for a := range accounts {
				all = append(all, simEvent(fmt.Sprintf("o%d-%d", a, round+1), fmt.Sprintf("other%d", a), int64(round+1)))
			}
		}
		batches := int(streamFor / (100 * time.Millisecond))
		per := (len(all) + batches - 1) / batches
		for b := 0; len(all) > 0; b++ {
			k := min(per, len(all))
			msgs := slices.Clone(all[:k])
			all = all[k:]
			if b%(batches/stuckEvents) == 0 && b/(batches/stuckEvents) < stuckEvents {
				seq := int64(b/(batches/stuckEvents) + 1)
				msgs = append(msgs, simEvent(fmt.Sprintf("s-%d", seq), stuck, seq))
			}
			now := time.Now()
			for i := range msgs {
				msgs[i].Time = now
			}
			e.k.Produce(t, e.topic, msgs...)
			r.n += len(msgs)
			time.Sleep(100 * time.Millisecond)
		}
		deadline := time.Now().Add(40 * time.Second)
		for rec.count(false) < accounts*rounds {
			if time.Now().After(deadline) {
				t.Fatalf("others applied: %d of %d after 40s; simulator saw %+v", rec.count(false), accounts*rounds, sim.Stats().APIs)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if !fault {
			testwait.For(t, 10*time.Second, "all applied", func() bool { return rec.count(true) == stuckEvents })
		}
		r.p99 = rec.p99()
		return r
	}

	var base time.Duration
	t.Run("without fault", func(t *testing.T) { base = run(t, false).p99 })
	t.Run("with fault", func(t *testing.T) {
		r := run(t, true)
		t.Logf("others' p99 record-to-applied latency: %v without the fault, %v with it", base, r.p99)
		if r.p99 > base+2*time.Second {
			t.Errorf("others' p99 %v, more than 2s over the run without the fault (%v)", r.p99, base)
		}
		testwait.For(t, 15*time.Second, "main partition committed to its end", func() bool {
			return r.e.committed()[0].CommittedOffset == int64(r.n)
		})
		if time.Now().After(r.tEnd) || len(r.sim.Groups(stuck)) != 0 {
			t.Fatalf("main partition committed only after the fault ended (or the stuck account got groups: %v)", r.sim.Groups(stuck))
		}
		parked, err := ListParked(context.Background(), LaneListConfig{Brokers: r.e.k.Brokers, Topic: r.e.topic, GroupID: r.e.group})
		if err != nil {
			t.Fatal(err)
		}
		if len(parked) != 1 || parked[0].Account != stuck || parked[0].Code != 50004 || parked[0].Events != stuckEvents {
			t.Fatalf("lane list %+v, want %s parked with %d events and code 50004", parked, stuck, stuckEvents)
		}
		// The fault ends by itself; the lane then applies the account's events.
		// The simulator logs a call once its answer is written, after the group exists: wait
		// for the log too, or a create applied a moment ago is missing from it.
		appliedCreates := func() []string {
			var order []string
			for _, c := range r.sim.Calls() {
				if c.Account == stuck && c.API == im.APICreate && c.Applied {
					order = append(order, c.Group)
				}
			}
			return order
		}
		testwait.For(t, time.Until(r.tEnd)+30*time.Second, "stuck account applied after the fault", func() bool {
			return len(r.sim.Groups(stuck)) == stuckEvents && len(appliedCreates()) >= stuckEvents
		})
		order := appliedCreates()
		want := []string{"g1", "g2", "g3"}
		if !slices.Equal(order, want) {
			t.Fatalf("the stuck account's creates applied at the API: %v, want %v once each", order, want)
		}
		if d := r.sim.Stats().DuplicateCreates; d != 0 {
			t.Errorf("%d duplicate creates at the API", d)
		}
		for _, c := range r.sim.Calls() {
			if c.Account == stuck && c.API == im.APICreate && c.Code == 50004 && c.Start.After(r.tEnd.Add(time.Second)) {
				t.Errorf("a call of the stuck account answered 50004 after the fault's end: %+v", c)
				break
			}
		}
	})
}
