package ratelimit

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatgroupd/chatgroupd/internal/fakeclock"
	"github.com/chatgroupd/chatgroupd/metrics"
)

func testLimiter(clock *fakeclock.Clock, budget float64, sleep func(context.Context, time.Duration) error) (*Limiter, *Config) {
	cfg := &Config{Now: clock.Now, Sleep: sleep}
	cfg.setDefaults()
	l := newLimiter("create_contact_group", budget, cfg)
	l.ExportShare(cfg.Metrics.RateLimitLimit)
	return l, cfg
}

// newFakeClock returns a clock that advances only when something sleeps.
func newFakeClock() *fakeclock.Clock { return fakeclock.New(time.Unix(1800000000, 0)) }

// take acquires a grant for a call that finishes at once without being written.
func take(l *Limiter) error {
	g, _, err := l.acquire(context.Background())
	if err == nil {
		l.finished(g)
	}
	return err
}

// maxWindow is the highest number of grants in any sliding window (t-w, t].
func maxWindow(grants []time.Time, w time.Duration) int {
	best, lo := 0, 0
	for hi, t := range grants {
		for !grants[lo].After(t.Add(-w)) {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

func TestLimiterWindowCeilingAndUtilisation(t *testing.T) {
	for _, tc := range []struct {
		name         string
		budget       float64
		owned, total int
		lateness     time.Duration // timer lateness: uniform [0, lateness) added to every sleep
		wantCeiling  int
		wantMinRate  float64
	}{
		{"whole budget", 200, 0, 0, 0, 200, 0.99 * 200},
		{"whole budget, timer noise", 200, 0, 0, time.Millisecond, 200, 0.99 * 200},
		{"whole budget, late timers", 200, 0, 0, 3 * time.Millisecond, 200, 0.99 * 200},
		{"half", 200, 3, 6, time.Millisecond, 100, 0.99 * 100},
		{"a third: floor(66.7) per window", 200, 2, 6, time.Millisecond, 66, 0.98 * 200 / 3},
		{"one of seven", 200, 1, 7, 0, 28, 0.97 * 200 / 7},
		{"below one call per second", 2, 1, 6, 0, 1, 0.99 * 2 / 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			rng := rand.New(rand.NewPCG(1, 2))
			l, _ := testLimiter(clock, tc.budget, func(ctx context.Context, d time.Duration) error {
				if tc.lateness > 0 {
					d += time.Duration(rng.Int64N(int64(tc.lateness)))
				}
				clock.Advance(d)
				return nil
			})
			l.setShare(tc.owned, tc.total)
			span := 20 * time.Second
			if tc.budget < 10 {
				span = 10 * time.Minute
			}
			start := clock.Now()
			var grants []time.Time
			for clock.Now().Sub(start) < span {
				if err := take(l); err != nil {
					t.Fatal(err)
				}
				grants = append(grants, clock.Now())
			}
			if got := maxWindow(grants, time.Second); got > tc.wantCeiling {
				t.Errorf("max calls in a one-second window = %d, want <= %d", got, tc.wantCeiling)
			}
			// The window log must also hold over the widened window.
			if got := maxWindow(grants, l.window); got > tc.wantCeiling {
				t.Errorf("max calls in a %v window = %d, want <= %d", l.window, got, tc.wantCeiling)
			}
			rate := float64(len(grants)-1) / grants[len(grants)-1].Sub(grants[0]).Seconds()
			if rate < tc.wantMinRate {
				t.Errorf("sustained rate = %.2f/s, want >= %.2f/s", rate, tc.wantMinRate)
			}
			t.Logf("rate %.2f/s, max window %d", rate, maxWindow(grants, time.Second))
		})
	}
}

func TestLimiterWaitsForShare(t *testing.T) {
	clock := newFakeClock()
	l, _ := testLimiter(clock, 200, clock.Sleep)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, _, err := l.acquire(ctx); err == nil {
		t.Fatal("acquire succeeded before any share was set")
	}
	l.setShare(0, 6)
	done := make(chan error, 1)
	go func() {
		_, _, err := l.acquire(context.Background())
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("acquire with zero owned partitions returned %v", err)
	case <-time.After(30 * time.Millisecond):
	}
	l.setShare(1, 6)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("acquire did not proceed after SetShare gave a share")
	}
}

func TestLimiterAIMD(t *testing.T) {
	clock := newFakeClock()
	// Budget 20: n = 20 per window, so SlowDownAfter (3) is the threshold, not 5% of n.
	l, cfg := testLimiter(clock, 20, clock.Sleep)
	reg := metrics.NewNop()
	l.m, cfg.Metrics = reg, reg
	l.ExportShare(reg.RateLimitLimit)
	l.setShare(1, 1)
	near := func(got, want float64) bool { return math.Abs(got-want) < 1e-9 }
	l.SlowDown()
	clock.Advance(2 * time.Second)
	l.SlowDown()
	l.SlowDown()
	if got := l.Rate(); got != 20 {
		t.Fatalf("after isolated frequency-limit answers rate = %v, want 20", got)
	}
	l.SlowDown() // the third within a window
	if got := l.Rate(); !near(got, 14) {
		t.Fatalf("after three answers within a window rate = %v, want 14", got)
	}
	l.SlowDown() // same window: an echo of the same overrun
	if got := l.Rate(); !near(got, 14) {
		t.Fatalf("another answer within the window changed the rate to %v", got)
	}
	if got := testutil.ToFloat64(reg.RateLimitLimit); !near(got, 14) {
		t.Errorf("gauge = %v, want 14", got)
	}
	for range 20 {
		clock.Advance(2 * time.Second)
		l.SlowDown()
		l.SlowDown()
		l.SlowDown()
	}
	if got := l.Rate(); !near(got, 20*DefaultMinRateFactor) {
		t.Fatalf("after a long storm rate = %v, want the floor %v", got, 20*DefaultMinRateFactor)
	}
	clock.Advance(DefaultRecoverInterval)
	if got := l.Rate(); !near(got, 20*(DefaultMinRateFactor+DefaultRecoverStep)) {
		t.Errorf("one interval later rate = %v, want one additive step up", got)
	}
	clock.Advance(time.Minute)
	if got := l.Rate(); got != 20 {
		t.Errorf("a minute later rate = %v, want 20", got)
	}
	if down, up := testutil.ToFloat64(reg.LimiterChanges.WithLabelValues("down")), testutil.ToFloat64(reg.LimiterChanges.WithLabelValues("up")); down < 5 || up != 2 {
		t.Errorf("changes down=%v up=%v", down, up)
	}
}

func TestLimiterSlowDownThresholdScalesWithRate(t *testing.T) {
	clock := newFakeClock()
	l, _ := testLimiter(clock, 200, clock.Sleep)
	l.setShare(1, 1)
	// The first share is in force one window after it was set.
	clock.Advance(l.window)
	for range 9 { // under 5% of 200 calls per window: jitter at window edges, not overuse
		l.SlowDown()
	}
	if got := l.Rate(); got != 200 {
		t.Fatalf("after 9 answers rate = %v, want 200", got)
	}
	l.SlowDown()
	if got := l.Rate(); got >= 200 {
		t.Fatalf("after 10 answers rate = %v, want slowed", got)
	}
}

func TestLimiterShareChangeAppliesAtOnce(t *testing.T) {
	clock := newFakeClock()
	l, _ := testLimiter(clock, 200, func(ctx context.Context, d time.Duration) error {
		clock.Advance(d)
		return nil
	})
	l.setShare(1, 1)
	var grants []time.Time
	take := func(d time.Duration) {
		for end := clock.Now().Add(d); clock.Now().Before(end); {
			if err := take(l); err != nil {
				t.Fatal(err)
			}
			grants = append(grants, clock.Now())
		}
	}
	take(2 * time.Second)
	changed := len(grants)
	l.setShare(1, 2) // a second replica joined
	take(3 * time.Second)
	lo := 0
	for _, g := range grants[changed:] {
		for !grants[lo].After(g.Add(-time.Second)) {
			lo++
		}
		n := 0
		for _, x := range grants[lo:] {
			if !x.After(g) {
				n++
			}
		}
		if n > 100 {
			t.Fatalf("a grant after the share halved saw %d calls in its second, want <= 100", n)
		}
	}
	if got := len(grants) - changed; got < 200 {
		t.Errorf("%d grants in 3s after the change, want about 300", got)
	}
}

func TestLimiterCountsWriteTimes(t *testing.T) {
	clock := newFakeClock()
	l, _ := testLimiter(clock, 1, func(ctx context.Context, d time.Duration) error {
		clock.Advance(d)
		return nil
	})
	l.setShare(1, 1)
	g, _, err := l.acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	first := clock.Now()
	l.wrote(g, first.Add(500*time.Millisecond), first.Add(500*time.Millisecond), "") // the request sat half a second before it went out
	if err := take(l); err != nil {
		t.Fatal(err)
	}
	if waited := clock.Now().Sub(first); waited < 500*time.Millisecond+l.window {
		t.Errorf("second grant after %v, want at least a window after the first write (%v)", waited, 500*time.Millisecond+l.window)
	}
}

// TestLimiterHoldsSlotOfLateRoundTrip: with round trips of 100 ms, a call that took 106 ms
// may have reached the server 6 ms late, so the call a window later waits 6 ms more; one that
// took a second moves by LateArrivalMax only, and with the shift turned off nothing moves.
func TestLimiterHoldsSlotOfLateRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name      string
		max       time.Duration
		rtt       time.Duration
		wantShift time.Duration
	}{
		{"usual round trip", 0, 100 * time.Millisecond, 0},
		{"6ms slow", 0, 106 * time.Millisecond, 6 * time.Millisecond},
		{"far too slow: capped", 0, time.Second, DefaultLateArrivalMax},
		{"turned off", -1, 300 * time.Millisecond, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			cfg := &Config{Now: clock.Now, Sleep: clock.Sleep, LateArrivalMax: tc.max}
			cfg.setDefaults()
			l := newLimiter("create_contact_group", 1, cfg)
			l.setShare(1, 1)
			clock.Advance(l.window)
			call := func(rtt time.Duration) time.Time {
				t.Helper()
				g, _, err := l.acquire(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				at := clock.Now()
				l.wrote(g, at, at, "")
				clock.Advance(rtt)
				l.finished(g)
				return at
			}
			for range minRTTSamples {
				call(100 * time.Millisecond)
			}
			last := call(tc.rtt)
			next := call(100 * time.Millisecond)
			if got, want := next.Sub(last), l.window+tc.wantShift; got != want {
				t.Errorf("next call %v after the %v one, want %v (window %v + shift %v)", got, tc.rtt, want, l.window, tc.wantShift)
			}
			if got := testutil.ToFloat64(cfg.Metrics.RateLimitHeld.WithLabelValues("create_contact_group", heldLateArrival)); got != tc.wantShift.Seconds() {
				t.Errorf("held late_arrival %vs, want %vs", got, tc.wantShift.Seconds())
			}
		})
	}
}

func TestLimiterHoldsWindowForUnwrittenCalls(t *testing.T) {
	clock := newFakeClock()
	l, _ := testLimiter(clock, 1, clock.Sleep)
	l.setShare(1, 1)
	g, _, err := l.acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(5 * time.Second) // the request is still stuck, say dialling
	done := make(chan error, 1)
	go func() { done <- take(l) }()
	select {
	case err := <-done:
		t.Fatalf("second grant (%v) while the first call, granted 5s ago, may still be written any moment", err)
	case <-time.After(50 * time.Millisecond):
	}
	written := clock.Now()
	l.wrote(g, written, written, "")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second grant never came after the first call was written")
	}
	if got := clock.Now().Sub(written); got < l.window {
		t.Errorf("second grant %v after the first write, want at least %v", got, l.window)
	}
}

// TestLimiterShareGrowsAfterAWindow replays a rebalance: a share that shrinks is in force at
// once, one that grows (including a replica's first) only a window later, and a second set
// within that window restarts the wait.
func TestLimiterShareGrowsAfterAWindow(t *testing.T) {
	clock := newFakeClock()
	l, _ := testLimiter(clock, 200, nil)
	step := func(d time.Duration, want float64) {
		t.Helper()
		clock.Advance(d)
		if got := l.Rate(); got != want {
			t.Fatalf("at %v: rate %v, want %v", clock.Now().Sub(time.Unix(0, 0)), got, want)
		}
	}
	if g, wait, _ := l.tryGrant(); g != nil || wait != 0 {
		t.Fatalf("before any share: grant %v, wait %v; want none until a share is set", g, wait)
	}
	l.setShare(3, 6) // first assignment: growth from nothing
	if g, wait, _ := l.tryGrant(); g != nil || wait != l.window {
		t.Fatalf("first share: grant %v, wait %v; want a wait of one window (%v)", g, wait, l.window)
	}
	step(l.window-time.Millisecond, 0)
	step(time.Millisecond, 100)
	l.setShare(1, 6) // shrinks: at once
	step(0, 200.0/6)
	l.setShare(6, 6) // grows: later
	step(l.window/2, 200.0/6)
	l.setShare(3, 6) // grows again within the wait: the wait restarts
	step(l.window/2+time.Millisecond, 200.0/6)
	step(l.window/2, 100)
	l.setShare(6, 6)
	l.setShare(2, 6) // a shrink cancels the pending growth
	step(2*l.window, 200.0/3)
}

// TestLimitersStayWithinBudgetAcrossRebalance runs two replicas' create limiters on one clock:
// a alone at the whole budget, then b joins and each takes half. However the new shares are
// timed, no one-second window of the two together may hold more than the budget: a shrinks at
// once and b waits out the calls a made before the rebalance.
func TestLimitersStayWithinBudgetAcrossRebalance(t *testing.T) {
	for _, skew := range []time.Duration{0, 10 * time.Millisecond, 300 * time.Millisecond} {
		t.Run("b set "+skew.String()+" before a", func(t *testing.T) {
			clock := newFakeClock()
			a, _ := testLimiter(clock, 200, nil)
			b, _ := testLimiter(clock, 200, nil)
			start := clock.Now()
			a.setShare(6, 6)
			var grants []time.Time
			events := []struct {
				at time.Duration
				do func()
			}{
				{3*time.Second - skew, func() { b.setShare(3, 6) }},
				{3 * time.Second, func() { a.setShare(3, 6) }},
			}
			for clock.Now().Sub(start) < 6*time.Second {
				for len(events) > 0 && clock.Now().Sub(start) >= events[0].at {
					events[0].do()
					events = events[1:]
				}
				next := time.Duration(math.MaxInt64)
				for _, l := range []*Limiter{a, b} {
					for {
						g, wait, _ := l.tryGrant()
						if g == nil {
							if wait > 0 {
								next = min(next, wait)
							}
							break
						}
						now := clock.Now()
						l.wrote(g, now, now, "")
						l.finished(g)
						grants = append(grants, now)
					}
				}
				if len(events) > 0 {
					next = min(next, events[0].at-clock.Now().Sub(start))
				}
				clock.Advance(max(next, time.Microsecond))
			}
			slices.SortFunc(grants, func(x, y time.Time) int { return x.Compare(y) })
			if got := maxWindow(grants, time.Second); got > 200 {
				t.Errorf("%d calls in one second across the rebalance, budget 200", got)
			}
			// a calls from its start-up hold's end (1s) at 199/s; after the rebalance a first lets
			// its log drain below its new 100 and b waits out its hold: about 860-900 calls.
			if len(grants) < 800 {
				t.Errorf("%d calls in 6s, want over 800: a limiter stalled", len(grants))
			}
		})
	}
}

func TestLimiterSetPartitionsUsesWholeBudget(t *testing.T) {
	for _, tc := range []struct {
		name   string
		budget float64
		total  int
		owners [][]int
		want   []float64
	}{
		{"three of six", 200, 6, [][]int{{0, 1}, {2, 3}, {4, 5}}, []float64{68, 66, 66}},
		{"uneven", 200, 6, [][]int{{5}, {0, 2, 4}, {1, 3}}, []float64{33, 100, 67}},
		{"seven", 200, 7, [][]int{{0, 1, 2, 3}, {4, 5, 6}}, []float64{116, 84}},
		{"one owns all", 200, 6, [][]int{{0, 1, 2, 3, 4, 5}}, []float64{200}},
		{"ids out of range ignored", 200, 2, [][]int{{0, 0, 7, -1}, {1}}, []float64{100, 100}},
		{"more partitions than calls: proportional", 4, 8, [][]int{{0, 1, 2}, {3, 4, 5, 6, 7}}, []float64{1.5, 2.5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sum := 0.0
			for i, ids := range tc.owners {
				clock := newFakeClock()
				l, _ := testLimiter(clock, tc.budget, nil)
				l.SetPartitions(ids, tc.total)
				clock.Advance(l.window)
				got := l.Rate()
				sum += got
				if math.Abs(got-tc.want[i]) > 1e-9 {
					t.Errorf("member %d (%v): share %v, want %v", i, ids, got, tc.want[i])
				}
			}
			if math.Abs(sum-tc.budget) > 1e-9 {
				t.Errorf("shares add up to %v, want the budget %v", sum, tc.budget)
			}
		})
	}
}

func TestLimiterWidenOnStall(t *testing.T) {
	clock := newFakeClock()
	const stall = 30 * time.Millisecond
	var stallStart, stallEnd time.Time
	l, cfg := testLimiter(clock, 200, func(ctx context.Context, d time.Duration) error {
		if stallEnd.IsZero() && clock.Now().Sub(time.Unix(1800000000, 0)) > 3*time.Second {
			stallStart = clock.Now()
			clock.Advance(stall) // the process is descheduled right after a write
			stallEnd = clock.Now()
		}
		clock.Advance(d)
		return nil
	})
	cfg.WidenOnStall = true
	l.setShare(1, 1)
	var writes, arrivals []time.Time
	for start := clock.Now(); clock.Now().Sub(start) < 8*time.Second; {
		if err := take(l); err != nil {
			t.Fatal(err)
		}
		writes = append(writes, clock.Now())
	}
	// An in-process server reads what was written just before the stall at its end.
	for _, w := range writes {
		if !w.Before(stallStart.Add(-time.Millisecond)) && w.Before(stallEnd) {
			w = stallEnd
		}
		arrivals = append(arrivals, w)
	}
	slices.SortFunc(arrivals, func(a, b time.Time) int { return a.Compare(b) })
	if got := maxWindow(arrivals, time.Second); got > 200 {
		t.Errorf("server-side max window %d after a %v stall, want <= 200", got, stall)
	}
	// The window widens by 30ms for stallHold (3s): about 1% of 8s.
	rate := float64(len(writes)-1) / writes[len(writes)-1].Sub(writes[0]).Seconds()
	if rate < 0.98*200 {
		t.Errorf("rate %.2f/s: one stall should cost little", rate)
	}
}

// TestLimiterSetCeiling: the fleet budget's ceilings. A smaller one is in force at once; a
// larger one up to its "now" part at once and the rest one window later; lowering a pending
// growth keeps its time (one pool, no partitions gained).
func TestLimiterSetCeiling(t *testing.T) {
	clock := newFakeClock()
	l, _ := testLimiter(clock, 200, nil)
	step := func(d time.Duration, want float64) {
		t.Helper()
		clock.Advance(d)
		if got := l.Rate(); got != want {
			t.Fatalf("at %v: rate %v, want %v", clock.Now().Sub(time.Unix(1800000000, 0)), got, want)
		}
	}
	l.SetCeiling(100, 0) // first ceiling, nothing at once: growth from zero
	step(0, 0)
	step(l.window, 100)
	l.SetCeiling(180, 150) // 150 at once, 180 a window later
	step(0, 150)
	step(l.window/2, 150)
	l.SetCeiling(170, 0) // lowering the pending growth keeps its time
	step(l.window/2, 170)
	l.SetCeiling(20, 20) // shrink: at once
	step(0, 20)
	l.SetCeiling(50, 60) // now above the ceiling: the ceiling
	step(0, 50)

	fresh, _ := testLimiter(clock, 200, nil)
	fresh.SetCeiling(80, 30) // a first ceiling may take its "now" part at once too
	if got := fresh.Rate(); got != 30 {
		t.Fatalf("first ceiling with 30 at once: rate %v", got)
	}
	clock.Advance(fresh.window)
	if got := fresh.Rate(); got != 80 {
		t.Fatalf("a window later: rate %v, want 80", got)
	}
}
