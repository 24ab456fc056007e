// Package ratelimit keeps one replica's calls to an API within its share of the consumer
// group's per-second budget, timing each call where the server counts it and backing off when
// the server says the budget is crossed. Its Limiter combines a sliding-window log, a token
// bucket, turns for budgets smaller than the partition count, and AIMD on frequency limits.
package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/chatgroupd/chatgroupd/metrics"
)

// Limiter keeps one API's calls from this replica within its share of the group's budget.
//
// The share is budget × owned/total partitions, so the shares of all members add up to the
// budget without coordination. Two mechanisms enforce it:
//   - a sliding-window log: at most n = floor(share) calls in any window of 1s + JitterMargin,
//     timed when each request was written, or later when its round trip shows it may have
//     reached the server late (see finished). Integer per-window ceilings that sum to
//     at most the budget are what keeps the group's total within the budget in every one-second
//     window, whatever the replicas' phases; the margin absorbs differences in the delay from
//     our write to the server's count.
//   - a token bucket (x/time/rate) at n per window, which spaces the grants evenly instead of
//     letting each window's calls out at its start; its burst (a fifth of n) lets grants catch
//     up after late timers and scheduler stalls, which would otherwise be lost for good.
//     The bucket is no part of the window bound; the window log is.
//
// The bucket smooths what the API sees (a server that counts calls as its handlers start, late
// under load, counts a bunch of them less exactly than a stream), but it must not keep room
// from a backlog. Two kinds of room go past it:
//   - growth that the fleet budget lets in at once (SetCeiling's now), for a window: it is room
//     nobody can be using, and it comes in steps as another member's calls age out of the
//     window, which a bucket at n per window would follow a window late (about 40 calls lost
//     at every hand-over from a drained member on the bench).
//   - while callers queue, the room a call leaves as it ages out of the window, down to
//     echoSlack (one call) below the ceiling. A bunch of grants (an at-once ceiling) ages out
//     all at once a window later, and the bucket let out only its burst then and the rest at
//     n per window: the window held half its ceiling for a fifth of a second, less than all
//     of it for most of the second, and the gap echoed window after window (fleet-rolling on
//     the bench: the group under 195 calls/s for 3-4 s after a restart). A window kept full
//     repeats its grants' pattern, so a bunch now spreads only by the call of slack per
//     window and by the spread of its writes' delays. A larger slack would spread it sooner
//     but costs for good, not once: where calls age out steadily, a bucket at n per window
//     only keeps pace with them and never refills the slack (a twentieth of n left the
//     bench's group at 182-191 calls/s for 0.1-0.4 s of every second for 12 s).
//
// Room no call left (a first ceiling, growth a window after it was set) and a limiter nobody
// queues at are paced as before.
//
// A share that shrinks applies at once; one that grows applies one window after it was set
// (set). The partitions gained were someone else's a moment ago, and that member's calls
// of the last second are not in this log: taking them over at once is how a rebalance would
// put the group over its budget for a second.
//
// Frequency-limit answers shrink the rate multiplicatively (SlowDown); it grows back
// additively towards the share (AIMD).
//
// Waiters take turns: only the goroutine holding turn computes and sleeps for its slot, so a
// rate change applies to the very next grant instead of to a queue of pre-booked reservations.
type Limiter struct {
	api    string
	budget float64
	window time.Duration
	cfg    *Config
	log    *zap.Logger
	m      *metrics.Metrics
	turn   chan struct{}

	mu           sync.Mutex
	gauge        prometheus.Gauge // follows the rate when set (ExportShare)
	known        bool             // a share was set (or Standalone)
	share        float64          // budget × owned/total, in force
	growTo       float64          // a larger share, in force from growAt (when growing)
	growAt       time.Time
	growing      bool
	factor       float64 // AIMD multiplier in [MinRateFactor, 1]
	lastDecrease time.Time
	lastChange   time.Time
	n            int // grants allowed per window
	pace         *rate.Limiter
	sent         []*grant    // grants within the last window, oldest first
	limited      []time.Time // frequency-limit answers within the last window
	stall        time.Duration
	stallAt      time.Time
	changed      chan struct{}
	rtts         []time.Duration // recent round trips, a ring of rttSamples
	rttNext      int
	turns        *turns       // set when the budget has fewer whole calls per second than partitions
	waiting      atomic.Int32 // callers in acquire
	queued       bool         // a caller was refused a grant since waiting was last 0 (Demand)
	spare        int          // grants the bucket need not pace: room SetCeiling freed at once
	spareUntil   time.Time    // when spare lapses
	echo         int          // calls aged out of the window while queued, not yet replaced
	fence        time.Time    // no grant nor write from then on (SetFence); zero: none
}

// grant is one permitted call. at starts as the grant time and moves to the time the request was
// written to the connection, which is closer to when the server counts it: a call that waited
// for a connection or a scheduler slot after its grant must not let a later one into its window.
// While pending (granted, neither written nor finished) it stays in the log whatever its age,
// since it may still reach the server at any moment.
type grant struct {
	at      time.Time
	wrote   time.Time // when the request was last written; zero if never
	pending bool
	// final: at moves no more (a call written and over, or preloaded). Only final calls are
	// reported by age (UsedByAge): another process may stamp them at those times.
	final bool
}

// When the IM server runs in this process (tests, the demo), a stall of the process — a starved
// CPU, goroutines queued behind busy ones — delays the server's count of our requests as much
// as it delays our timers, and by more than JitterMargin. With Config.WidenOnStall an oversleep
// of at least stallNoise widens the window by the oversleep for stallHold. Against a remote
// server our own stalls delay nothing already written, so the widening would only cost rate.
// Shorter oversleeps are ordinary timer noise, covered by JitterMargin.
const (
	stallNoise     = time.Millisecond
	stallHold      = 3 * time.Second
	maxStallMargin = 250 * time.Millisecond
)

// pendingPoll is how often a waiter rechecks a window held full by calls granted more than a
// window ago and still not written (stuck dialling, say); nothing signals their completion.
const pendingPoll = 5 * time.Millisecond

// maxNap bounds each sleep of a waiter, so that a ceiling raised while it sleeps (SetCeiling,
// after a grant of the fleet budget is read back) is used within maxNap, not at the end of a
// wait computed before: waits for the window's oldest call last up to a window when the log's
// calls are bunched, and the fleet budget raises a ceiling in steps as another member's calls
// age out (a hand-over replayed from the bench lost a fifth of a second at one step). Waking
// on the change itself would take a goroutine per sleep.
const maxNap = 20 * time.Millisecond

// New returns the limiter of api (its name in logs and metrics) under a budget of the whole
// consumer group in calls/s. No call is granted before a share is set (SetPartitions or
// SetCeiling), unless cfg.Standalone.
func New(cfg Config, api string, budget float64) (*Limiter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if budget <= 0 {
		return nil, fmt.Errorf("ratelimit: %s budget %g must be positive", api, budget)
	}
	cfg.setDefaults()
	return newLimiter(api, budget, &cfg), nil
}

// newLimiter is New for a cfg with its defaults applied.
func newLimiter(api string, budget float64, cfg *Config) *Limiter {
	l := &Limiter{
		api:     api,
		budget:  budget,
		window:  time.Second + cfg.JitterMargin,
		cfg:     cfg,
		log:     cfg.Logger,
		m:       cfg.Metrics,
		turn:    make(chan struct{}, 1),
		factor:  1,
		pace:    rate.NewLimiter(0, 1),
		changed: make(chan struct{}),
	}
	// Export every label value from the start, so alerts and dashboards see zeros, not gaps.
	l.m.LimiterChanges.WithLabelValues("down").Add(0)
	l.m.LimiterChanges.WithLabelValues("up").Add(0)
	l.m.RateLimitHeld.WithLabelValues(api, heldFreshConn).Add(0)
	l.m.RateLimitHeld.WithLabelValues(api, heldLateArrival).Add(0)
	if cfg.Standalone {
		// Alone by configuration: nobody else's calls can share our windows.
		l.known, l.share = true, budget
		l.apply(cfg.Now())
	}
	return l
}

// ExportShare makes g follow this limiter's rate in calls/s from now on.
func (l *Limiter) ExportShare(g prometheus.Gauge) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gauge = g
	g.Set(l.effective())
}

// acquire blocks until this replica may make one call, and reports how long it waited.
func (l *Limiter) acquire(ctx context.Context) (*grant, time.Duration, error) {
	start := l.cfg.Now()
	l.waiting.Add(1)
	defer l.leave()
	select {
	case l.turn <- struct{}{}:
	case <-ctx.Done():
		return nil, l.cfg.Now().Sub(start), ctx.Err()
	}
	defer func() { <-l.turn }()
	for {
		g, wait, changed := l.tryGrant()
		if g != nil {
			return g, l.cfg.Now().Sub(start), nil
		}
		if wait <= 0 {
			// No share: nothing may be sent until a share is set.
			select {
			case <-changed:
				continue
			case <-ctx.Done():
				return nil, l.cfg.Now().Sub(start), ctx.Err()
			}
		}
		// Recheck at least every maxNap: a ceiling raised meanwhile lets a grant out sooner.
		wait = min(wait, maxNap)
		before := l.cfg.Now()
		if err := l.cfg.Sleep(ctx, wait); err != nil {
			return nil, l.cfg.Now().Sub(start), err
		}
		l.overslept(l.cfg.Now().Sub(before) - wait)
	}
}

// leave ends a caller's stay in acquire: the queue is gone once nobody is left in it. Under mu,
// so that a caller refused meanwhile (tryGrant) is never left unqueued.
func (l *Limiter) leave() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.waiting.Add(-1) == 0 {
		l.queued, l.echo = false, 0
	}
}

// overslept records that a sleep of ours returned late (see stallNoise).
func (l *Limiter) overslept(late time.Duration) {
	if !l.cfg.WidenOnStall || late < stallNoise {
		return
	}
	late = min(late, maxStallMargin)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.cfg.Now()
	if late >= l.stall || !l.stalledAt(now) {
		l.stall, l.stallAt = late, now
	}
}

// stalledAt reports whether the last stall still widens the window. The hold is longer than
// the window the stall's calls need, because a starved process stalls again and again, and
// not every stall of the server's goroutines shows in our timers. Callers hold mu.
func (l *Limiter) stalledAt(now time.Time) bool {
	return now.Sub(l.stallAt) < stallHold
}

// windowAt is the window the log enforces at now: 1s + JitterMargin, widened by a recent stall.
// Callers hold mu.
func (l *Limiter) windowAt(now time.Time) time.Duration {
	if l.stalledAt(now) {
		return l.window + l.stall
	}
	return l.window
}

// tryGrant records a grant now if both the window and the bucket allow it; otherwise it says
// how long to wait (0 with changed to wait on when there is no share at all).
func (l *Limiter) tryGrant() (g *grant, wait time.Duration, changed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	defer func() {
		// A refused caller waits for budget: it queues until nobody is left in acquire.
		l.queued = l.queued || g == nil
	}()
	now := l.cfg.Now()
	l.grow(now)
	l.recover(now)
	window := l.windowAt(now)
	cut := now.Add(-window)
	l.prune(cut)
	if l.fencedAt(now) {
		// Calls that age out while nothing may be granted leave no pattern to keep: after
		// the fence the bucket paces, rather than a window's room going out in one bunch.
		l.echo = 0
		return nil, 0, l.changed // nothing until the fleet budget confirms a grant again
	}
	if l.turns != nil {
		g, wait := l.turns.try(now, l.factor)
		if g != nil {
			l.sent = append(l.sent, g)
			return g, 0, nil
		}
		return nil, wait, l.changed
	}
	if !l.known || l.n == 0 {
		return nil, l.untilGrowth(now), l.changed
	}
	if len(l.sent) >= l.n {
		oldest := l.sent[len(l.sent)-l.n]
		if !oldest.at.After(cut) { // pending: expires when written, whenever that is
			return nil, soonest(pendingPoll, l.untilGrowth(now)), nil
		}
		return nil, soonest(max(oldest.at.Add(window).Sub(now), time.Microsecond), l.untilGrowth(now)), nil
	}
	if l.pace.AllowN(now, 1) || l.takeSpare(now) || l.takeEcho() {
		g := &grant{at: now, pending: true}
		l.sent = append(l.sent, g)
		l.echo = max(l.echo-1, 0) // whatever let it out, it fills room a call left
		return g, 0, nil
	}
	missing := 1 - l.pace.TokensAt(now)
	wait = max(time.Duration(missing/float64(l.pace.Limit())*float64(time.Second)), time.Microsecond)
	return nil, soonest(soonest(wait, l.untilEcho(now, cut, window)), l.untilGrowth(now)), nil
}

// echoSlack is how far below its ceiling the bucket may still hold a queued limiter's window
// (see Limiter). Callers hold mu.
func (l *Limiter) echoSlack() int { return 1 }

// takeEcho lets one grant past the bucket into room that calls aging out of the window left
// while callers queued, once the window holds fewer than its ceiling less echoSlack. Callers
// hold mu, with sent pruned.
func (l *Limiter) takeEcho() bool {
	return l.echo > 0 && len(l.sent) < l.n-l.echoSlack()
}

// untilEcho is how long until enough calls age out of the window for takeEcho to let the
// caller refused now through (each one aging out counts, that caller queuing from now); 0 when
// that takes a pending call, which ages out only once written (maxNap rechecks). Callers hold
// mu, with sent pruned at cut.
func (l *Limiter) untilEcho(now, cut time.Time, window time.Duration) time.Duration {
	k := len(l.sent) - (l.n - l.echoSlack() - 1) // calls that must age out
	if k <= 0 || k > len(l.sent) {
		return 0
	}
	g := l.sent[k-1]
	if !g.at.After(cut) {
		return 0
	}
	return max(g.at.Add(window).Sub(now), time.Microsecond)
}

// takeSpare lets one grant past the bucket out of the room SetCeiling made usable at once.
// Callers hold mu.
func (l *Limiter) takeSpare(now time.Time) bool {
	if l.spare <= 0 || !now.Before(l.spareUntil) {
		l.spare = 0
		return false
	}
	l.spare--
	return true
}

// prune drops the grants logged at or before cut, except pending ones. Entries are ordered by
// at, so the expired ones are a prefix; of those only pending ones (rare) stay, which keeps
// this amortised O(1) per grant. Callers hold mu.
func (l *Limiter) prune(cut time.Time) {
	p := 0
	for p < len(l.sent) && !l.sent[p].at.After(cut) {
		p++
	}
	kept := 0
	for _, g := range l.sent[:p] {
		if g.pending {
			l.sent[kept] = g
			kept++
		}
	}
	if l.queued {
		l.echo = min(l.echo+p-kept, l.n) // room for waiting callers (see Limiter)
	}
	switch {
	case kept == 0:
		l.sent = l.sent[p:]
	case kept < p:
		n := copy(l.sent[kept:], l.sent[p:])
		clear(l.sent[kept+n:])
		l.sent = l.sent[:kept+n]
	}
}

// soonest is the shorter of two waits, a zero b meaning none.
func soonest(a, b time.Duration) time.Duration {
	if b > 0 {
		return min(a, b)
	}
	return a
}
