package consumer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/dispatcher"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
	"github.com/chatgroupd/chatgroupd/metrics"
	"github.com/chatgroupd/chatgroupd/ratelimit"
)

func TestMetaV3HandoverStatement(t *testing.T) {
	done := []span{{101, 150}, {200, 201}}
	for _, ho := range []*handover{{}, {until: 1}, {until: 1_790_000_000_123}, {until: maxMetaOffset}} {
		enc := encodeMeta(100, commitMeta{horizon: 900, done: done, handover: ho}, 4096)
		if !strings.HasPrefix(enc.s, metaPrefixV3) || enc.handover == nil || *enc.handover != *ho {
			t.Fatalf("%+v: encoded %q reporting %+v", *ho, enc.s, enc.handover)
		}
		m, err := decodeMeta(100, enc.s)
		if err != nil || m.handover == nil || *m.handover != *ho || m.horizon != 900 || len(m.done) != 2 {
			t.Fatalf("%+v: decoded %+v, %v", *ho, m, err)
		}
		// Bound to its watermark and checksummed like v2.
		if _, err := decodeMeta(101, enc.s); !errors.Is(err, errMetaWatermarkMismatch) {
			t.Errorf("%+v: beside another offset: %v", *ho, err)
		}
		raw := []byte(enc.s)
		i := len(metaPrefixV3) + 3 // inside the hand-over field or right after it
		raw[i] ^= 0x01
		if raw[i] == '-' || raw[i] == '_' || raw[i] < '0' {
			raw[i] = 'A'
		}
		if _, err := decodeMeta(100, string(raw)); !errors.Is(err, errBadMeta) {
			t.Errorf("%+v: a flipped bit decodes: %v", *ho, err)
		}
	}
	// What v2 (and v1) strings say about hand-over: nothing, so the successor holds in full.
	for _, s := range []string{encodeMeta(100, commitMeta{horizon: 900, done: done}, 4096).s, "v1:MgAy"} {
		w := int64(100)
		if strings.HasPrefix(s, metaPrefixV1) {
			w = 150
		}
		m, err := decodeMeta(w, s)
		if err != nil || m.handover != nil {
			t.Errorf("%q: statement %+v, %v; want none", s, m.handover, err)
		}
		if got := handoverHold(time.Unix(1000, 0), 6*time.Second, DefaultHandoverSkew, m.handover); got != time.Unix(1006, 0) {
			t.Errorf("%q: hold until %v, want the full hold", s, got)
		}
	}
	// A statement out of range is not written (a full hold), never mangled.
	if enc := encodeMeta(100, commitMeta{horizon: 900, handover: &handover{until: -5}}, 4096); enc.handover != nil || !strings.HasPrefix(enc.s, metaPrefixV2) {
		t.Errorf("negative time written: %q", enc.s)
	}
	// A statement that would cost a completed range is left out: within 64 bytes the ranges win.
	many := holes(100, 200, constant(1), constant(1))
	plain := encodeMeta(100, commitMeta{horizon: 900, done: many}, 64)
	enc := encodeMeta(100, commitMeta{horizon: 900, done: many, handover: &handover{until: 1_790_000_000_123}}, 64)
	if plain.dropped == 0 || enc.dropped != plain.dropped || enc.handover != nil || !strings.HasPrefix(enc.s, metaPrefixV2) {
		t.Errorf("tight limit: dropped %d (without statement %d), statement %+v, %q", enc.dropped, plain.dropped, enc.handover, enc.s)
	}
}

// TestVerifiedMetaRefusesForgedHandover: the round trip before a commit catches an encoder that
// makes a statement up or changes it; the commit then goes out without one (a full hold).
func TestVerifiedMetaRefusesForgedHandover(t *testing.T) {
	asked := &handover{until: 5000}
	for _, tc := range []struct {
		name string
		m    commitMeta
		enc  func(int64, commitMeta, int) metaEnc
	}{
		{"made up", commitMeta{horizon: 900}, func(w int64, m commitMeta, n int) metaEnc {
			m.handover = &handover{}
			return encodeMeta(w, m, n)
		}},
		{"shortened", commitMeta{horizon: 900, handover: asked}, func(w int64, m commitMeta, n int) metaEnc {
			if m.handover != nil {
				m.handover = &handover{until: m.handover.until - 1000}
			}
			return encodeMeta(w, m, n)
		}},
		{"written, reported left out", commitMeta{horizon: 900, handover: asked}, func(w int64, m commitMeta, n int) metaEnc {
			e := encodeMeta(w, m, n)
			e.handover = nil
			return e
		}},
	} {
		enc, ok, err := verifiedMeta(tc.enc, 100, tc.m, 4096)
		if err == nil {
			t.Errorf("%s: not caught", tc.name)
			continue
		}
		if !ok {
			continue // even the plain fallback failed (the encoder forges it too): the partition is left out
		}
		m, derr := decodeMeta(enc.w, enc.s)
		if derr != nil || m.handover != nil {
			t.Errorf("%s: fallback %q decodes to statement %+v, %v; want none", tc.name, enc.s, m.handover, derr)
		}
	}
	enc, ok, err := verifiedMeta(encodeMeta, 100, commitMeta{horizon: 900, handover: asked}, 4096)
	if err != nil || !ok || enc.handover == nil || *enc.handover != *asked {
		t.Errorf("honest encoder: %+v, %v, %v", enc.handover, ok, err)
	}
}

// TestCallWatch drives the httptrace hooks as net/http calls them and checks what a final commit
// may state.
func TestCallWatch(t *testing.T) {
	t0 := time.Unix(1_790_000_000, 0)
	const hold = 6 * time.Second
	type step struct {
		at   time.Duration
		hook string // conn, wrote, answer, return
	}
	for _, tc := range []struct {
		name      string
		steps     []step
		inherited time.Time
		sentAt    time.Duration
		want      *handover // nil: nothing may be stated
	}{
		{"nothing sent", nil, time.Time{}, time.Second, &handover{}},
		{"answered", []step{{0, "conn"}, {10, "wrote"}, {500, "answer"}, {600, "return"}}, time.Time{}, time.Second, &handover{}},
		{"answer before the write was reported", []step{{0, "conn"}, {10, "answer"}, {20, "wrote"}, {30, "return"}}, time.Time{}, time.Second, &handover{}},
		{"abandoned after the write", []step{{0, "conn"}, {10, "wrote"}, {2000, "return"}}, time.Time{}, 3 * time.Second,
			&handover{until: t0.Add(10*time.Millisecond + hold).UnixMilli()}},
		{"timed out, retried, answered", []step{{0, "conn"}, {10, "wrote"}, {5000, "conn"}, {5010, "wrote"}, {5100, "answer"}, {5200, "return"}},
			time.Time{}, 6 * time.Second, &handover{until: t0.Add(10*time.Millisecond + hold).UnixMilli()}},
		{"abandoned long before the commit", []step{{0, "conn"}, {10, "wrote"}, {100, "return"}}, time.Time{}, 7 * time.Second, &handover{}},
		{"connection taken, no write reported by the return", []step{{0, "conn"}, {100, "return"}}, time.Time{}, time.Second, nil},
		{"write reported after the return", []step{{0, "conn"}, {100, "return"}, {200, "wrote"}}, time.Time{}, time.Second, nil},
		{"an earlier owner's window still open", []step{{0, "conn"}, {10, "wrote"}, {20, "answer"}, {30, "return"}}, t0.Add(4 * time.Second),
			time.Second, &handover{until: t0.Add(4 * time.Second).UnixMilli()}},
		{"rounded up to the millisecond", []step{{0, "conn"}, {1, "wrote"}, {2, "return"}}, t0.Add(2*time.Second + 300*time.Microsecond),
			time.Second, &handover{until: t0.Add(6*time.Second + time.Millisecond).UnixMilli()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w callWatch
			var now time.Time
			ctx, returned := w.trace(context.Background(), hold, func() time.Time { return now }, -1)
			tr := httptrace.ContextClientTrace(ctx)
			for _, s := range tc.steps {
				now = t0.Add(s.at * time.Millisecond)
				if tc.name == "rounded up to the millisecond" && s.hook == "wrote" {
					now = now.Add(-999 * time.Microsecond) // 1 µs past t0
				}
				switch s.hook {
				case "conn":
					tr.GotConn(httptrace.GotConnInfo{})
				case "wrote":
					tr.WroteRequest(httptrace.WroteRequestInfo{})
				case "answer":
					tr.GotFirstResponseByte()
				case "return":
					returned()
				}
			}
			got := w.statement(tc.inherited, t0.Add(tc.sentAt))
			if (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want {
				t.Errorf("statement %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestHandoverHold: what is left of the stated window, the other replica's clock taken as up to
// the skew margin behind ours, never more than the full hold.
func TestHandoverHold(t *testing.T) {
	now := time.Unix(1_790_000_000, 0)
	const hold, skew = 6 * time.Second, 500 * time.Millisecond
	ms := func(d time.Duration) *handover { return &handover{until: now.Add(d).UnixMilli()} }
	for _, tc := range []struct {
		name string
		ho   *handover
		skew time.Duration
		want time.Duration
	}{
		{"no statement (killed owner, refused final commit, v1/v2)", nil, skew, hold},
		{"nothing ran any more", &handover{}, skew, 0},
		{"window ended long ago", ms(-time.Minute), skew, 0},
		{"window ended within the margin", ms(-200 * time.Millisecond), skew, 300 * time.Millisecond},
		{"window open: what is left plus the margin", ms(2 * time.Second), skew, 2*time.Second + skew},
		{"writer's clock far ahead: never past the full hold", ms(time.Hour), skew, hold},
		{"larger margin", ms(2 * time.Second), 2 * time.Second, 4 * time.Second},
		{"statements ignored (negative margin)", &handover{}, -1, hold},
	} {
		if got := handoverHold(now, hold, tc.skew, tc.ho).Sub(now); got != tc.want {
			t.Errorf("%s: hold %v, want %v", tc.name, got, tc.want)
		}
	}
}

// grantWait holds the dispatches of some accounts before anything is sent, as the real dispatcher
// does while it waits for a rate-limit grant: when Task.Drain ends first they return ErrDrained.
type grantWait struct {
	Dispatcher
	accts   map[string]bool
	waiting atomic.Int64
}

func (g *grantWait) Dispatch(ctx context.Context, t dispatcher.Task) (dispatcher.Outcome, error) {
	if g.accts[t.Event.FromAccount] {
		g.waiting.Add(1)
		defer g.waiting.Add(-1)
		select {
		case <-t.Drain.Done():
			return dispatcher.Outcome{}, fmt.Errorf("fake grant: %w", dispatcher.ErrDrained)
		case <-ctx.Done():
			return dispatcher.Outcome{}, ctx.Err()
		}
	}
	return g.Dispatcher.Dispatch(ctx, t)
}

// TestHandoverWithoutBlindWait: the previous owner's records were picked but never sent (waiting
// for grants) when it left. After a graceful leave its final commit says nothing of its runs at
// the API, and the successor dispatches those accounts at once instead of waiting out a (here
// one-minute) hold (with metadata v4 they are not even uncertain any more:
// TestHandoverNeverSentNotChecked). After a kill its last periodic commit listed none of them as
// written (v5: TestCrashLeavesOnlyWrittenUncertain), so again no hold. With the statements off
// the successor waits the full hold.
func TestHandoverWithoutBlindWait(t *testing.T) {
	for _, tc := range []struct {
		name   string
		skew   time.Duration
		hold   time.Duration
		crash  bool
		stated bool // the final commit states that nothing runs
		free   bool // the successor holds nothing
	}{
		{"graceful", 0, time.Minute, false, true, true},
		{"graceful, statements off", -1, 3 * time.Second, false, false, false},
		{"killed", 0, time.Minute, true, false, true},
		{"killed, statements off", -1, 3 * time.Second, true, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 1)
			reg := prometheus.NewRegistry()
			m := metrics.New(reg, "test", false)
			var all []string
			var msgs []kafka.Message
			accts := map[string]bool{}
			for i := range 5 {
				a := fmt.Sprintf("waiting%d", i)
				accts[a] = true
				all = append(all, a+"-1")
				msgs = append(msgs, evMsg(a+"-1", a, 1))
			}
			e.k.Produce(t, e.topic, msgs...)
			gw := &grantWait{Dispatcher: e.disp, accts: accts}
			e.cfgEdit = func(c *Config) { c.Dispatcher, c.UncertainHold, c.HandoverSkew, c.Metrics = gw, tc.hold, tc.skew, m }
			a := e.start()
			a.c.crash = tc.crash
			testwait.For(t, 15*time.Second, "every account waiting for a grant", func() bool { return gw.waiting.Load() == 5 })
			a.stop(t)
			c := e.committed()[0]
			meta, err := decodeMeta(c.CommittedOffset, c.Metadata)
			if err != nil {
				t.Fatal(err)
			}
			if tc.stated != (meta.handover != nil && meta.handover.until == 0) {
				t.Fatalf("final commit %q states %+v", c.Metadata, meta.handover)
			}
			if meta.horizon <= c.CommittedOffset {
				t.Fatalf("nothing uncertain for the successor: committed %d, horizon %d", c.CommittedOffset, meta.horizon)
			}

			sl := &startLog{Dispatcher: e.disp, starts: map[string][]time.Time{}}
			m2 := metrics.New(prometheus.NewRegistry(), "test", false)
			e.cfgEdit = func(c *Config) { c.Dispatcher, c.UncertainHold, c.HandoverSkew, c.Metrics = sl, tc.hold, tc.skew, m2 }
			t0 := time.Now()
			b := e.start()
			testwait.For(t, 20*time.Second, "the successor assigned", b.c.Ready)
			assigned := time.Now()
			testwait.For(t, 30*time.Second, "all committed", func() bool { return e.committedTotal() == int64(len(all)) })
			checkOnce(t, e.disp.snapshot(), all)
			first := time.Time{}
			for a := range accts {
				s := sl.since(a, t0)
				if len(s) == 0 {
					t.Fatalf("%s never dispatched by the successor", a)
				}
				if first.IsZero() || s[0].Before(first) {
					first = s[0]
				}
			}
			waited := first.Sub(assigned)
			t.Logf("successor's first dispatch of an uncertain account %v after it was assigned (full hold %v)", waited.Round(time.Millisecond), tc.hold)
			if got := testutil.CollectAndCount(m2.HandoverHold); got != 1 {
				t.Errorf("hand-over hold series: %d, want 1", got)
			}
			if tc.free {
				if waited > tc.hold/4 {
					t.Errorf("graceful hand-over: the successor waited %v of a %v hold", waited, tc.hold)
				}
				return
			}
			if waited < tc.hold-200*time.Millisecond {
				t.Errorf("no statement: the successor dispatched %v after the assignment, before the hold of %v", waited, tc.hold)
			}
		})
	}
}

// TestHandoverAbandonedCall: the previous owner leaves gracefully but its drain bound cuts a call
// that was written and never answered (a slow account): at the API it may go on for the hold
// after its write. The final commit states that window; the successor dispatches the account
// no earlier than write + hold, even with the writer's clock behind ours by less than the margin.
// With the margin at zero and that clock lag the check fails, so it can tell.
func TestHandoverAbandonedCall(t *testing.T) {
	const hold, lag = 5 * time.Second, 2 * time.Second
	for _, tc := range []struct {
		name   string
		skew   time.Duration
		unsafe bool
	}{
		{"clock 2s behind, margin 2.5s", 2500 * time.Millisecond, false},
		{"clock 2s behind, margin 0 (must be caught)", time.Nanosecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 1)
			sl := &startLog{Dispatcher: e.disp, starts: map[string][]time.Time{}}
			behind := func() time.Time { return time.Now().Add(-lag) }
			e.cfgEdit = func(c *Config) {
				c.Dispatcher, c.UncertainHold, c.HandoverSkew, c.Now = sl, hold, tc.skew, behind
				c.ShutdownTimeout = time.Second
			}
			e.k.Produce(t, e.topic, evMsg("slow-1", "slow", 1), evMsg("slow-2", "slow", 2))
			h := make(chan struct{})
			e.disp.mu.Lock()
			e.disp.hold["slow"] = h
			e.disp.mu.Unlock()
			a := e.start()
			testwait.For(t, 15*time.Second, "the slow call written", func() bool { return len(sl.since("slow", time.Time{})) == 1 })
			wrote := sl.since("slow", time.Time{})[0]
			a.stop(t) // the drain gives up on the call after ShutdownTimeout
			close(h)
			c := e.committed()[0]
			meta, err := decodeMeta(c.CommittedOffset, c.Metadata)
			if err != nil || meta.handover == nil || meta.handover.until == 0 {
				t.Fatalf("final commit %q: statement %+v, %v; want a window", c.Metadata, meta.handover, err)
			}
			// The window is the write (the writer's clock) plus the hold.
			stated := time.UnixMilli(meta.handover.until)
			if d := stated.Sub(wrote.Add(-lag).Add(hold)); d < 0 || d > time.Second {
				t.Errorf("stated window ends %v, %v after the write + hold on the writer's clock", stated, d)
			}

			e.cfgEdit = func(c *Config) { c.Dispatcher, c.UncertainHold, c.HandoverSkew = sl, hold, tc.skew }
			b := e.start()
			testwait.For(t, 20*time.Second, "the successor assigned", b.c.Ready)
			assigned := time.Now()
			testwait.For(t, 30*time.Second, "all committed", func() bool { return e.committedTotal() == 2 })
			checkOnce(t, e.disp.snapshot(), []string{"slow-1", "slow-2"})
			next := sl.since("slow", wrote.Add(time.Nanosecond))
			if len(next) == 0 {
				t.Fatal("the successor never dispatched the slow account")
			}
			after := next[0].Sub(wrote)
			t.Logf("successor dispatched the account %v after the abandoned call's write, %v after its assignment (hold %v)",
				after.Round(time.Millisecond), next[0].Sub(assigned).Round(time.Millisecond), hold)
			if tc.unsafe {
				if after >= hold {
					t.Errorf("margin below the clock lag: the successor waited %v, the check could not tell", after)
				}
				return
			}
			if after < hold {
				t.Errorf("the successor dispatched the account %v after a call that may run %v at the API", after, hold)
			}
		})
	}
}

// laneCallSim plays the API for the lane dispatches (no stall limit) of one account: each is
// written at once and then never answered (it runs until the generation's context ends), or
// answered after answerAfter with a transient failure, after which it waits, like the real
// dispatcher in its backoff, until the drain.
type laneCallSim struct {
	Dispatcher
	acct        string
	answerAfter time.Duration
	mu          sync.Mutex
	written     []time.Time
	answered    atomic.Int64
}

func (s *laneCallSim) Dispatch(ctx context.Context, t dispatcher.Task) (dispatcher.Outcome, error) {
	if t.Event.FromAccount != s.acct || t.StallLimit > 0 {
		return s.Dispatcher.Dispatch(ctx, t)
	}
	tr := httptrace.ContextClientTrace(ctx)
	tr.GotConn(httptrace.GotConnInfo{})
	tr.WroteRequest(httptrace.WroteRequestInfo{})
	s.mu.Lock()
	s.written = append(s.written, time.Now())
	s.mu.Unlock()
	if s.answerAfter <= 0 {
		<-ctx.Done()
		return dispatcher.Outcome{}, ctx.Err()
	}
	select {
	case <-time.After(s.answerAfter):
	case <-ctx.Done():
		return dispatcher.Outcome{}, ctx.Err()
	}
	tr.GotFirstResponseByte()
	s.answered.Add(1)
	select {
	case <-t.Drain.Done():
		return dispatcher.Outcome{}, fmt.Errorf("lane sim: %w", dispatcher.ErrDrained)
	case <-ctx.Done():
		return dispatcher.Outcome{}, ctx.Err()
	}
}

// TestLaneSuccessorHold: a lane worker's call of a parked account's head is running at the API
// when its owner dies; the new owner retries that head only after the hold (it used to retry it
// as soon as it had read the lane). After a graceful leave in which the call was answered, the
// final commit says so and the new owner retries at once rather than after a one-minute hold.
func TestLaneSuccessorHold(t *testing.T) {
	for _, tc := range []struct {
		name  string
		crash bool
		hold  time.Duration
	}{
		{"killed while the head's call runs", true, 3 * time.Second},
		{"graceful, the call answered", false, time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, d := laneEnv(t, "stuck")
			var msgs []kafka.Message
			var want []string
			for s := 1; s <= 3; s++ {
				id := fmt.Sprintf("stuck-%d", s)
				want = append(want, id)
				msgs = append(msgs, evMsg(id, "stuck", int64(s)))
			}
			e.k.Produce(t, e.topic, msgs...)
			sim := &laneCallSim{Dispatcher: d, acct: "stuck"}
			if !tc.crash {
				sim.answerAfter = 100 * time.Millisecond
			}
			base := e.cfgEdit
			e.cfgEdit = func(c *Config) { base(c); c.Dispatcher, c.UncertainHold = sim, tc.hold }
			a := e.start()
			a.c.crash = tc.crash
			testwait.For(t, 30*time.Second, "the lane head's call written", func() bool {
				sim.mu.Lock()
				defer sim.mu.Unlock()
				return len(sim.written) > 0 && (tc.crash || sim.answered.Load() > 0)
			})
			a.stop(t)
			d.clear()
			sl := &startLog{Dispatcher: d, starts: map[string][]time.Time{}}
			e.cfgEdit = func(c *Config) { base(c); c.Dispatcher, c.UncertainHold = sl, tc.hold }
			t0 := time.Now()
			b := e.start()
			testwait.For(t, 20*time.Second, "the successor assigned", b.c.Ready)
			assigned := time.Now()
			testwait.For(t, 30*time.Second, "the parked account applied", func() bool {
				n := 0
				for _, c := range d.snapshot() {
					if c.Account == "stuck" {
						n++
					}
				}
				return n >= 3
			})
			checkOnce(t, d.snapshot(), want)
			starts := sl.since("stuck", t0)
			if len(starts) == 0 {
				t.Fatal("the successor never dispatched the parked account")
			}
			waited := starts[0].Sub(assigned)
			t.Logf("successor retried the lane head %v after it was assigned (hold %v)", waited.Round(time.Millisecond), tc.hold)
			if !tc.crash {
				if waited > tc.hold/4 {
					t.Errorf("graceful: the lane head waited %v of a %v hold", waited, tc.hold)
				}
				return
			}
			if waited < tc.hold-200*time.Millisecond {
				t.Errorf("the successor retried the lane head %v after the assignment, beside a call that may run %v", waited, tc.hold)
			}
		})
	}
}

// TestCallWatchRealDispatcher: the hooks fire through the real dispatcher and IM client (they
// make every request under the context handed to Dispatch). An answered create leaves nothing
// running; a request the server has not answered when the dispatch is cancelled leaves its
// window (write + hold). If the dispatcher stopped passing the context down, the second
// statement would wrongly say "nothing runs" and this test fails.
func TestCallWatchRealDispatcher(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if strings.Contains(string(body), "hangs") {
			arrived <- struct{}{}
			<-release
			return
		}
		fmt.Fprint(w, `{"ActionStatus":"OK","ErrorCode":0,"GroupResultItem":[{"GroupItem":{"GroupName":"g","GroupId":1},"ResultItem":[]}]}`)
	}))
	defer srv.Close()
	defer close(release)
	client, err := im.New(im.Config{SDKAppID: 1400000000, SecretKey: "k", BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	d, err := dispatcher.New(dispatcher.Config{API: client, Limiter: ratelimit.Config{Standalone: true}, RateLimit: 100, GetRateLimit: 100,
		RetryBudget: time.Minute, Metrics: metrics.New(prometheus.NewRegistry(), "test", false)})
	if err != nil {
		t.Fatal(err)
	}
	ev := func(acct string) *event.Event {
		e, err := event.Parse(evMsg(acct+"-1", acct, 1).Value)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	const hold = 6 * time.Second

	var answered callWatch
	ctx, returned := answered.trace(context.Background(), hold, time.Now, -1)
	out, err := d.Dispatch(ctx, dispatcher.Task{Event: ev("quick")})
	returned()
	if err != nil || out.Result != dispatcher.Applied {
		t.Fatalf("quick: %+v, %v", out, err)
	}
	if got := answered.statement(time.Time{}, time.Now()); got == nil || *got != (handover{}) {
		t.Errorf("answered create: statement %+v, want nothing running", got)
	}

	var hung callWatch
	ctx, cancel := context.WithCancel(context.Background())
	ctx, returned = hung.trace(ctx, hold, time.Now, -1)
	done := make(chan error, 1)
	before := time.Now()
	go func() {
		_, err := d.Dispatch(ctx, dispatcher.Task{Event: ev("hangs")})
		done <- err
	}()
	<-arrived
	after := time.Now()
	cancel()
	if err := <-done; err == nil {
		t.Fatal("cancelled dispatch returned no error")
	}
	returned()
	got := hung.statement(time.Time{}, time.Now())
	if got == nil || got.until < before.Add(hold).UnixMilli() || got.until > after.Add(hold).UnixMilli()+1 {
		t.Errorf("unanswered request: statement %+v, want its write (between %v and %v) + %v", got, before, after, hold)
	}
}

// TestLaneMemoryCap measures what a lane partition holds after reading 5000 queued records of
// one parked account (as the lane load does for a hot stuck account): with the cap, laneKeep
// records and the duplicate filter's entries; without it (keep = everything, as before), every
// record. The heap figures are logged for DESIGN.md.
func TestLaneMemoryCap(t *testing.T) {
	const queued = 5000
	e := newEnv(t, 1)
	c, err := New(e.config())
	if err != nil {
		t.Fatal(err)
	}
	measure := func(keep int) (held int, heap uint64) {
		en := newEngine(c, context.Background())
		p := &part{id: 0, lane: &lanePart{id: 0, accts: map[string]*laneAcct{}, unended: map[int64]*laneRec{}, keep: keep}}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		en.mu.Lock()
		for i := range queued {
			// Built here and dropped unless held, as a fetched record is.
			m := evMsg(fmt.Sprintf("h-%d", i+1), "hot", int64(i+1))
			m.Offset = int64(i)
			m.Headers = []kafka.Header{{Key: laneHdrSrcOffset, Value: []byte(strconv.Itoa(1000 + i))},
				{Key: laneHdrSrcKey, Value: []byte("hot")}, {Key: laneHdrReason, Value: []byte(parkFollow)}}
			m.Key = []byte("hot")
			en.laneIngest(p, m)
		}
		en.mu.Unlock()
		runtime.GC()
		runtime.ReadMemStats(&after)
		held = len(p.lane.unended)
		la := p.lane.accts["hot"]
		if keep < queued && (!la.left || la.skipFrom != int64(held) || la.skipped != queued-held) {
			t.Errorf("keep %d: left in the lane from %d (%d records), want from %d (%d)", keep, la.skipFrom, la.skipped, held, queued-held)
		}
		runtime.KeepAlive(p)
		return held, after.HeapAlloc - min(after.HeapAlloc, before.HeapAlloc)
	}
	heldAll, heapAll := measure(queued)
	heldCap, heapCap := measure(0)
	t.Logf("%d queued lane records: %d held, %d KiB before the cap; %d held, %d KiB with it",
		queued, heldAll, heapAll>>10, heldCap, heapCap>>10)
	if heldAll != queued || heldCap != laneKeep {
		t.Fatalf("held %d without the cap, %d with it; want %d and %d", heldAll, heldCap, queued, laneKeep)
	}
	if heapCap*3 > heapAll {
		t.Errorf("the cap saves too little: %d bytes held with it, %d without", heapCap, heapAll)
	}
}
