package dispatcher

import (
	"context"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/chatgroupd/chatgroupd/metrics"
)

// limiter keeps one API's calls from this replica within its share of the group's budget.
//
// The share is budget × owned/total partitions, so the shares of all members add up to the
// budget without coordination. Two mechanisms enforce it:
//   - a sliding-window log: at most n = floor(share) calls in any window of 1s + JitterMargin,
//     timed when each request was written, or later when its round trip shows it may have
//     reached the server late (see grant). Integer per-window ceilings that sum to
//     at most the budget are what keeps the group's total within the budget in every one-second
//     window, whatever the replicas' phases; the margin absorbs differences in the delay from
//     our write to the server's count.
//   - a token bucket (x/time/rate) at n per window, which spaces the grants evenly instead of
//     letting each window's calls out at its start; its burst (a fifth of n) lets grants catch
//     up after late timers and scheduler stalls, which would otherwise be lost for good.
//
// A share that shrinks applies at once; one that grows applies one window after it was set
// (setShare). The partitions gained were someone else's a moment ago, and that member's calls
// of the last second are not in this log: taking them over at once is how a rebalance would
// put the group over its budget for a second.
//
// Frequency-limit answers shrink the rate multiplicatively (slowDown); it grows back
// additively towards the share (AIMD).
//
// Waiters take turns: only the goroutine holding turn computes and sleeps for its slot, so a
// rate change applies to the very next grant instead of to a queue of pre-booked reservations.
type limiter struct {
	api    string
	budget float64
	window time.Duration
	cfg    *Config
	log    *zap.Logger
	m      *metrics.Metrics
	gauge  bool // export the share as metrics.RateLimitLimit
	turn   chan struct{}

	mu           sync.Mutex
	known        bool    // a share was set (or Standalone)
	share        float64 // budget × owned/total, in force
	growTo       float64 // a larger share, in force from growAt (when growing)
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
	grewAt       time.Time    // when the last growth took effect
}

// rttSamples is how many recent round trips the median is taken over; minRTTSamples are needed
// before a round trip counts as slow.
const (
	rttSamples    = 64
	minRTTSamples = 8
)

// grant is one permitted call. at starts as the grant time and moves to the time the request was
// written to the connection, which is closer to when the server counts it: a call that waited
// for a connection or a scheduler slot after its grant must not let a later one into its window.
// While pending (granted, neither written nor finished) it stays in the log whatever its age,
// since it may still reach the server at any moment.
type grant struct {
	at      time.Time
	wrote   time.Time // when the request was last written; zero if never
	pending bool
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

func newLimiter(api string, budget float64, cfg *Config, gauge bool) *limiter {
	l := &limiter{
		api:     api,
		budget:  budget,
		window:  time.Second + cfg.JitterMargin,
		cfg:     cfg,
		log:     cfg.Logger,
		m:       cfg.Metrics,
		gauge:   gauge,
		turn:    make(chan struct{}, 1),
		factor:  1,
		pace:    rate.NewLimiter(0, 1),
		changed: make(chan struct{}),
	}
	if cfg.Standalone {
		// Alone by configuration: nobody else's calls can share our windows.
		l.known, l.share = true, budget
		l.apply(cfg.Now())
	}
	return l
}

// setShare sets this replica's share to budget × owned/total; total <= 0 means standalone (the
// whole budget).
func (l *limiter) setShare(owned, total int) {
	l.clearTurns()
	l.setShareOnly(owned, total)
}

// setShareOnly is setShare keeping any turns: the share is then what the gauge and logs show.
func (l *limiter) setShareOnly(owned, total int) {
	share := l.budget
	if total > 0 {
		owned = min(max(owned, 0), total)
		share = l.budget * float64(owned) / float64(total)
	}
	l.set(share)
}

// setPartitions sets the share from the partitions this replica owns. Each partition's part
// of the budget is a whole number of calls: budget/total rounded down, plus one for the
// budget%total lowest partition ids. The members' per-window ceilings then add up to the whole
// budget, where proportional shares would each be rounded down (3 × 66 of 200). With more
// partitions than calls per second it falls back to the proportional share.
//
// With more partitions than whole calls per second, a partition's part is below one call per
// second, and no member can be given a per-window ceiling: any member with a partition would
// make at least one call in some window, and more members than calls would cross the budget.
// The partitions then take turns instead (see turns).
func (l *limiter) setPartitions(ids []int, total int) {
	owned := map[int]bool{}
	for _, id := range ids {
		if id >= 0 && id < total {
			owned[id] = true
		}
	}
	whole := int(math.Floor(l.budget + 1e-9))
	if total > 0 && whole < total {
		l.setTurns(owned, total, whole)
		l.setShareOnly(len(owned), total)
		return
	}
	l.clearTurns()
	if total <= 0 {
		l.setShareOnly(len(owned), total)
		return
	}
	base, extra := whole/total, whole%total
	share := 0
	for id := range owned {
		share += base
		if id < extra {
			share++
		}
	}
	l.set(float64(share))
}

// set makes share this replica's share: at once if it is no larger than the share in force,
// else one window from now (see limiter). A replica's first share counts as growth from zero,
// since the previous owner of its partitions may have called a moment ago. A later set
// restarts the wait, so the share in force is never above any share set within the window.
func (l *limiter) set(share float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.cfg.Now()
	if !l.known {
		l.known, l.share = true, 0
	}
	if share <= l.share {
		l.share, l.growing = share, false
		l.apply(now)
		return
	}
	l.growTo, l.growAt, l.growing = share, now.Add(l.window), true
	l.apply(now) // wakes waiters, which now wait for growAt
}

// setCeiling is set for the fleet budget, whose ceilings are one pool rather than partitions:
// lowering a pending growth keeps its time, since a smaller share at the same moment is covered
// by what made the larger one safe. (With partitions a smaller share may come with partitions
// gained since, so set restarts the wait.)
//
// now is the part of share that may be used at once: the fleet protocol has shown that room is
// not in anyone's window.
func (l *limiter) setCeiling(share, now float64) {
	l.mu.Lock()
	t := l.cfg.Now()
	l.grow(t)
	if l.known && share > l.share && now > l.share {
		l.share, l.grewAt = min(now, share), t
		if l.growing && l.growTo <= l.share {
			l.growing = false
		}
		l.apply(t)
	}
	if l.known && l.growing && share > l.share && share <= l.growTo {
		l.growTo = share
		l.apply(t)
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	if !l.isKnown() && now > 0 {
		l.set(0) // a first share counts as growth from nothing; now is in force at once
		l.setCeiling(share, now)
		return
	}
	l.set(share)
}

func (l *limiter) isKnown() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.known
}

// used is how many calls were granted within the last window (pending ones included).
func (l *limiter) used() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	cut := l.cfg.Now().Add(-l.window)
	n := 0
	for _, g := range l.sent {
		if g.pending || g.at.After(cut) {
			n++
		}
	}
	return n
}

// target is the rate once a pending larger share is in force (for logs).
func (l *limiter) target() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.growing {
		return l.growTo * l.factor
	}
	return l.effective()
}

// grow puts a pending larger share in force once its window has passed. Callers hold mu.
func (l *limiter) grow(now time.Time) {
	if l.growing && !now.Before(l.growAt) {
		l.share, l.growing, l.grewAt = l.growTo, false, now
		l.apply(now)
	}
}

// untilGrowth is how long until a pending larger share is in force; 0 when none is pending.
// Callers hold mu.
func (l *limiter) untilGrowth(now time.Time) time.Duration {
	if !l.growing {
		return 0
	}
	return max(l.growAt.Sub(now), time.Microsecond)
}

// effective is the current rate in calls/s. Callers hold mu.
func (l *limiter) effective() float64 { return l.share * l.factor }

// apply recomputes the window ceiling and pacing after a change and wakes waiters. Callers
// hold mu.
func (l *limiter) apply(now time.Time) {
	eff := l.effective()
	w := l.window.Seconds()
	switch {
	case eff <= 0:
		l.n = 0
		l.pace.SetLimitAt(now, 0)
	case eff < 1:
		// Below one call per second the bucket alone (burst 1) keeps every window to one call.
		l.n = 1
		l.pace.SetBurstAt(now, 1)
		l.pace.SetLimitAt(now, rate.Limit(eff/w))
	default:
		l.n = int(math.Floor(eff + 1e-9))
		// The burst lets grants catch up after a late timer or a scheduler stall (up to a fifth
		// of a second's worth); the window log, not the bucket, is what bounds every window.
		l.pace.SetBurstAt(now, max(min(3, l.n), l.n/5))
		l.pace.SetLimitAt(now, rate.Limit(float64(l.n)/w))
	}
	if l.gauge {
		l.m.RateLimitLimit.Set(eff)
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

// rateNow reports the current effective rate (for tests and logs).
func (l *limiter) rateNow() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.cfg.Now()
	l.grow(now)
	l.recover(now)
	return l.effective()
}

// slowDown shrinks the rate after frequency-limit answers. A few answers within one window
// (fewer than SlowDownAfter, or than 5% of the window's calls) are noise: a request delayed on
// its way to the server can land in the server's previous second, and cutting the rate by 30%
// for that would waste far more than the retried call; real overuse draws answers for a large
// part of the calls. Answers within one window of the last decrease are echoes of the same
// overrun and count once.
func (l *limiter) slowDown() {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.cfg.Now()
	l.grow(now)
	cut := now.Add(-l.window)
	i := 0
	for i < len(l.limited) && !l.limited[i].After(cut) {
		i++
	}
	l.limited = append(l.limited[i:], now)
	if len(l.limited) < max(l.cfg.SlowDownAfter, l.n/20) {
		return
	}
	if !l.lastDecrease.IsZero() && now.Sub(l.lastDecrease) < l.window {
		return
	}
	old := l.factor
	l.factor = max(l.cfg.MinRateFactor, l.factor*l.cfg.SlowDownFactor)
	l.lastDecrease, l.lastChange = now, now
	if l.factor == old {
		return
	}
	l.apply(now)
	l.m.LimiterChanges.WithLabelValues("down").Inc()
	l.log.Warn("rate limiter slowed down after a frequency-limit answer",
		zap.String("api", l.api), zap.Float64("from", l.share*old), zap.Float64("to", l.effective()))
}

// recover grows the factor back by RecoverStep per RecoverInterval since the last change.
// Callers hold mu.
func (l *limiter) recover(now time.Time) {
	if l.factor >= 1 || l.cfg.RecoverInterval <= 0 {
		return
	}
	steps := int(now.Sub(l.lastChange) / l.cfg.RecoverInterval)
	if steps <= 0 {
		return
	}
	old := l.factor
	l.factor = min(1, l.factor+float64(steps)*l.cfg.RecoverStep)
	l.lastChange = l.lastChange.Add(time.Duration(steps) * l.cfg.RecoverInterval)
	l.apply(now)
	l.m.LimiterChanges.WithLabelValues("up").Inc()
	l.log.Info("rate limiter recovering", zap.String("api", l.api),
		zap.Float64("from", l.share*old), zap.Float64("to", l.effective()))
}

// acquire blocks until this replica may make one call, and reports how long it waited.
func (l *limiter) acquire(ctx context.Context) (*grant, time.Duration, error) {
	start := l.cfg.Now()
	l.waiting.Add(1)
	defer l.waiting.Add(-1)
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
			// No share: nothing may be sent until SetShare gives us one.
			select {
			case <-changed:
				continue
			case <-ctx.Done():
				return nil, l.cfg.Now().Sub(start), ctx.Err()
			}
		}
		before := l.cfg.Now()
		if err := l.cfg.Sleep(ctx, wait); err != nil {
			return nil, l.cfg.Now().Sub(start), err
		}
		l.overslept(l.cfg.Now().Sub(before) - wait)
	}
}

// overslept records that a sleep of ours returned late (see stallNoise).
func (l *limiter) overslept(late time.Duration) {
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
func (l *limiter) stalledAt(now time.Time) bool {
	return now.Sub(l.stallAt) < stallHold
}

// windowAt is the window the log enforces at now: 1s + JitterMargin, widened by a recent stall.
// Callers hold mu.
func (l *limiter) windowAt(now time.Time) time.Duration {
	if l.stalledAt(now) {
		return l.window + l.stall
	}
	return l.window
}

// tryGrant records a grant now if both the window and the bucket allow it; otherwise it says
// how long to wait (0 with changed to wait on when there is no share at all).
func (l *limiter) tryGrant() (g *grant, wait time.Duration, changed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.cfg.Now()
	l.grow(now)
	l.recover(now)
	window := l.windowAt(now)
	cut := now.Add(-window)
	l.prune(cut)
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
	if l.pace.AllowN(now, 1) {
		g := &grant{at: now, pending: true}
		l.sent = append(l.sent, g)
		return g, 0, nil
	}
	missing := 1 - l.pace.TokensAt(now)
	return nil, soonest(max(time.Duration(missing/float64(l.pace.Limit())*float64(time.Second)), time.Microsecond), l.untilGrowth(now)), nil
}

// prune drops the grants logged at or before cut, except pending ones. Entries are ordered by
// at, so the expired ones are a prefix; of those only pending ones (rare) stay, which keeps
// this amortised O(1) per grant. Callers hold mu.
func (l *limiter) prune(cut time.Time) {
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

// finished marks g's call as over: a grant never written now ages out from its grant time.
// A written call whose round trip (write to now) exceeded the median of recent ones moves later
// by the excess, up to LateArrivalMax (see Config.LateArrivalMax).
func (l *limiter) finished(g *grant) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g.pending = false
	if g.wrote.IsZero() || l.cfg.LateArrivalMax <= 0 {
		return
	}
	rtt := l.cfg.Now().Sub(g.wrote)
	if len(l.rtts) >= minRTTSamples {
		if late := min(rtt-l.medianRTT(), l.cfg.LateArrivalMax); late > 0 {
			if held := l.moveLocked(g, g.wrote.Add(late)); held > 0 {
				l.m.RateLimitHeld.WithLabelValues(l.api, heldLateArrival).Add(held.Seconds())
			}
		}
	}
	if len(l.rtts) < rttSamples {
		l.rtts = append(l.rtts, rtt)
	} else {
		l.rtts[l.rttNext] = rtt
		l.rttNext = (l.rttNext + 1) % rttSamples
	}
}

// medianRTT is the median of the recent round trips. Callers hold mu.
func (l *limiter) medianRTT() time.Duration {
	var buf [rttSamples]time.Duration
	r := buf[:len(l.rtts)]
	copy(r, l.rtts)
	slices.Sort(r)
	return r[len(r)/2]
}

// wrote records that g's request was written at now, and moves g to t (now, or later for a
// fresh connection).
func (l *limiter) wrote(g *grant, now, t time.Time, account string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g.pending = false
	g.wrote = now
	l.moveLocked(g, t)
	if t.After(now) {
		l.m.RateLimitHeld.WithLabelValues(l.api, heldFreshConn).Add(t.Sub(now).Seconds())
	}
	// At debug level every write is logged, so that a budget window the API saw crossed can be
	// joined with what each replica wrote and when (the chaos suite's evidence); off by default.
	if ce := l.log.Check(zap.DebugLevel, "request written"); ce != nil {
		ce.Write(zap.String("api", l.api), zap.String("account", account), zap.Time("wrote", now),
			zap.Int("n", l.n), zap.Float64("share", l.share), zap.Bool("growing", l.growing),
			zap.Int("in_window", l.inWindowLocked(now)), zap.Bool("turns", l.turns != nil))
	}
}

// flushed records that bytes of g's request reached the kernel at now: g.wrote and g move later
// to now (and margin after it, for a fresh connection), never earlier.
func (l *limiter) flushed(g *grant, now time.Time, margin time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.After(g.wrote) {
		g.wrote = now
	}
	l.moveLocked(g, now.Add(margin))
}

// inWindowLocked is how many logged calls lie within the window ending at now, pending ones
// included. Callers hold mu.
func (l *limiter) inWindowLocked(now time.Time) int {
	cut := now.Add(-l.windowAt(now))
	n := 0
	for _, g := range l.sent {
		if g.pending || g.at.After(cut) {
			n++
		}
	}
	return n
}

// Reasons of metrics.RateLimitHeld.
const (
	heldFreshConn   = "fresh_conn"
	heldLateArrival = "late_arrival"
)

// moveLocked moves g to t if that is later, keeping sent ordered, and returns how much later.
// A grant already pruned is put back. Callers hold mu.
func (l *limiter) moveLocked(g *grant, t time.Time) time.Duration {
	if !t.After(g.at) {
		return 0
	}
	moved := t.Sub(g.at)
	g.at = t
	i := len(l.sent) - 1
	for i >= 0 && l.sent[i] != g {
		i--
	}
	if i >= 0 {
		l.sent = append(l.sent[:i], l.sent[i+1:]...)
	}
	j := len(l.sent)
	for j > 0 && l.sent[j-1].at.After(t) {
		j--
	}
	l.sent = append(l.sent, nil)
	copy(l.sent[j+1:], l.sent[j:])
	l.sent[j] = g
	return moved
}

// demand is how many calls per window this limiter could use: the whole budget when callers
// wait and the ceiling is what holds them (the last window used it, or it is newer than a
// window), else the rate of the last quarter window with a quarter more and two, so that a
// replica whose work grows asks before it queues, and one whose backlog drained lets go soon.
func (l *limiter) demand() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.cfg.Now()
	cut, recent := now.Add(-l.window), now.Add(-l.window/4)
	used, last := 0, 0
	for _, g := range l.sent {
		if g.pending || g.at.After(cut) {
			used++
		}
		if g.pending || g.at.After(recent) {
			last++
		}
	}
	whole := int(math.Floor(l.budget + 1e-9))
	// Callers wait and the ceiling is the limit: full last window, or a ceiling too new to
	// have filled one yet.
	if l.waiting.Load() > 0 && (used+1 >= l.n || l.growing || now.Sub(l.grewAt) < l.window) {
		return whole
	}
	// The last quarter window, scaled up, follows a drained backlog faster than the whole one.
	return min(whole, last*5+2)
}
