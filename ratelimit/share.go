package ratelimit

import (
	"math"
	"slices"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// setShare sets this replica's share to budget × owned/total; total <= 0 means standalone (the
// whole budget).
func (l *Limiter) setShare(owned, total int) {
	l.clearTurns()
	l.setShareOnly(owned, total)
}

// setShareOnly is setShare keeping any turns: the share is then what the gauge and logs show.
func (l *Limiter) setShareOnly(owned, total int) {
	share := l.budget
	if total > 0 {
		owned = min(max(owned, 0), total)
		share = l.budget * float64(owned) / float64(total)
	}
	l.set(share)
}

// SetPartitions sets the share from the partitions this replica owns (ids in [0, total));
// total <= 0 means standalone: the whole budget. Each partition's part of the budget is a
// whole number of calls: budget/total rounded down, plus one for the budget%total lowest
// partition ids. The members' per-window ceilings then add up to the whole budget, where
// proportional shares would each be rounded down (3 × 66 of 200).
//
// With more partitions than whole calls per second, a partition's part is below one call per
// second, and no member can be given a per-window ceiling: any member with a partition would
// make at least one call in some window, and more members than calls would cross the budget.
// The partitions then take turns instead (see turns).
func (l *Limiter) SetPartitions(ids []int, total int) {
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
// else one window from now (see Limiter). A replica's first share counts as growth from zero,
// since the previous owner of its partitions may have called a moment ago. A later set
// restarts the wait, so the share in force is never above any share set within the window.
func (l *Limiter) set(share float64) {
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

// SetCeiling sets the share for the fleet budget (package budget), whose ceilings are one pool
// rather than partitions: lowering a pending growth keeps its time, since a smaller share at
// the same moment is covered by what made the larger one safe. (With partitions a smaller
// share may come with partitions gained since, so SetPartitions restarts the wait.)
//
// now is the part of share that may be used at once: the fleet protocol has shown that room is
// not in anyone's window.
func (l *Limiter) SetCeiling(share, now float64) {
	l.mu.Lock()
	t := l.cfg.Now()
	l.grow(t)
	if l.known && share > l.share && now > l.share {
		before := l.n
		l.share = min(now, share)
		if l.growing && l.growTo <= l.share {
			l.growing = false
		}
		l.apply(t)
		// The room is free now: let it out now rather than at the bucket's pace (see Limiter).
		l.spare, l.spareUntil = min(l.spare+max(l.n-before, 0), l.n), t.Add(l.window)
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
		l.SetCeiling(share, now)
		return
	}
	l.set(share)
}

func (l *Limiter) isKnown() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.known
}

// Preload counts n calls as written at at (now if at is zero or later) that this limiter did
// not grant: those a dead predecessor of this process may still have in the window (the fleet
// budget's succession, budget.Config.Succeeds; at is when it was proved dead, after its last
// call). They take room and count in Used until they age out a window after at, as the
// limiter's own calls would; its ceiling bounds them with its own.
func (l *Limiter) Preload(n int, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t := l.cfg.Now(); at.IsZero() || at.After(t) {
		at = t
	}
	// The log is in time order (prune drops a prefix): the counted calls go before any call
	// made after at.
	i := slices.IndexFunc(l.sent, func(g *grant) bool { return g.at.After(at) })
	if i < 0 {
		i = len(l.sent)
	}
	counted := make([]*grant, n)
	for k := range counted {
		counted[k] = &grant{at: at, wrote: at, final: true}
	}
	l.sent = slices.Insert(l.sent, i, counted...)
}

// Used is how many calls were granted within the last window (pending ones included).
func (l *Limiter) Used() int {
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

// UsedByAge reports when the calls of the window before at were made, for a process that may
// succeed this one (budget.Record.Ages): n[i] counts the calls whose time lies in
// (at − (i+1)·step, at − i·step], for as many steps as cover the window. Only calls whose time
// is final count: one in flight may still move later (a late round trip), and a successor
// must never stamp a call earlier than it was made. at is a reading of the clock the limiter
// runs on; calls timed after it are left out.
func (l *Limiter) UsedByAge(at time.Time, step time.Duration) []int {
	if step <= 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	steps := int((l.window + step - 1) / step)
	var n []int
	for _, g := range l.sent {
		age := at.Sub(g.at)
		if !g.final || age < 0 || age >= time.Duration(steps)*step {
			continue
		}
		i := int(age / step)
		if i >= len(n) {
			n = append(n, make([]int, i+1-len(n))...)
		}
		n[i]++
	}
	return n
}

// Waiting is how many callers wait for a grant.
func (l *Limiter) Waiting() int { return int(l.waiting.Load()) }

// Target is the rate once a pending larger share is in force (for logs).
func (l *Limiter) Target() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.growing {
		return l.growTo * l.factor
	}
	return l.effective()
}

// grow puts a pending larger share in force once its window has passed. Callers hold mu.
func (l *Limiter) grow(now time.Time) {
	if l.growing && !now.Before(l.growAt) {
		l.share, l.growing = l.growTo, false
		l.apply(now)
	}
}

// untilGrowth is how long until a pending larger share is in force; 0 when none is pending.
// Callers hold mu.
func (l *Limiter) untilGrowth(now time.Time) time.Duration {
	if !l.growing {
		return 0
	}
	return max(l.growAt.Sub(now), time.Microsecond)
}

// effective is the current rate in calls/s. Callers hold mu.
func (l *Limiter) effective() float64 { return l.share * l.factor }

// apply recomputes the window ceiling and pacing after a change and wakes waiters. Callers
// hold mu.
func (l *Limiter) apply(now time.Time) {
	before := l.n
	defer func() {
		if l.n < before {
			l.spare, l.echo = 0, 0 // the room shrank: what was spare may not be free any more
		}
	}()
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
	if l.gauge != nil {
		l.gauge.Set(eff)
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

// Rate reports the current effective rate in calls/s (for logs).
func (l *Limiter) Rate() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.cfg.Now()
	l.grow(now)
	l.recover(now)
	return l.effective()
}

// SlowDown shrinks the rate after frequency-limit answers. A few answers within one window
// (fewer than SlowDownAfter, or than 5% of the window's calls) are noise: a request delayed on
// its way to the server can land in the server's previous second, and cutting the rate by 30%
// for that would waste far more than the retried call; real overuse draws answers for a large
// part of the calls. Answers within one window of the last decrease are echoes of the same
// overrun and count once.
func (l *Limiter) SlowDown() {
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
func (l *Limiter) recover(now time.Time) {
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

// Demand is how many calls per window this limiter could use: the whole budget while callers
// queue at it, else the rate of the last quarter window with a quarter more and two, so that a
// replica whose work grows asks before it queues, and one whose backlog drained lets go soon.
//
// Callers queue from the moment one is refused a grant until none is left in acquire. That is
// a backlog, however the window looks: a paced limiter's window is rarely quite full, and a
// late timer or a stalled process leaves a gap in its grants, so its recent use says nothing of
// what its callers could use — a rule that asked for the whole budget only when the last
// window was full (or the ceiling new) reported 2 after a gap of a few hundred ms, with 256
// callers waiting, and the member shrank at once to regrow a round trip and a window later. A
// caller that passes straight through (granted at once) is not queued, so a replica whose few
// callers each make a call at a time below its ceiling does not claim the budget for them.
//
// Demand is only a request: the fleet budget turns it into a target, hence a Want, and grants
// are bounded by the ledger whatever a member asks for (budget/DESIGN.md, "Ledger invariant"),
// so no rule here can put a window over the budget; a demand set too high costs others the
// room this member asked for and cannot use, one set too low costs this member a shrink.
func (l *Limiter) Demand() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	whole := int(math.Floor(l.budget + 1e-9))
	if l.queued {
		return whole
	}
	recent := l.cfg.Now().Add(-l.window / 4)
	last := 0
	for _, g := range l.sent {
		if g.pending || g.at.After(recent) {
			last++
		}
	}
	// The last quarter window, scaled up, follows a drained backlog faster than the whole one.
	return min(whole, last*5+2)
}
