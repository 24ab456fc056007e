package ratelimit

import (
	"math"
	"time"
)

// Turns: a budget of B whole calls per second shared by P > B partitions.
//
// A partition's part of the budget, B/P, is below one call per second, so per-window ceilings
// can't work: a member can make no fewer than one call in the window it makes one, and with
// more members than calls (6 replicas of 6 partitions under a budget of 5, or 256 single
// partitions under 200) their windows together hold more than the budget.
//
// Instead time is cut into turns of length w = (window + turnZone + turnSkew) / B, numbered from
// the Unix epoch, and turn m belongs to partition m mod P. Only the owner of a turn's partition
// may make a call in it, one call, and only within turnZone of the turn's start. The calls of
// all members then start at distinct points of one lattice of spacing w, each within
// turnZone (plus the members' clock differences, turnSkew at most, and the usual write jitter
// that window already absorbs) after its point. Any interval of one second plus that spread is
// shorter than B·w, so it holds at most B lattice points, hence at most B calls: whatever the
// number of members, their phases, or which of them are idle.
//
// This needs what the per-window ceilings don't: the members' clocks agree within turnSkew
// (NTP keeps pods within a few milliseconds). It costs (turnZone + turnSkew) / w of the rate:
// the group makes B calls per window + turnZone + turnSkew, 93% of the budget.
//
// Hand-over: a partition gained counts from one window after it was set (like a share that
// grows), so a turn can't be used by both the partition's previous owner and the new one even
// if the new owner hears of its assignment a little before the old one stops.
//
// AIMD: with a rate factor f < 1, a partition uses its k-th turn only when ⌊(k+1)f⌋ > ⌊kf⌋,
// which is f of its turns, evenly spread.
const (
	// turnZone is how late after a turn's start its call may still begin: long enough for a
	// waiter to wake up and take the turn, short against w.
	turnZone = 50 * time.Millisecond
	// turnSkew is the clock difference between replicas the turns tolerate.
	turnSkew = 20 * time.Millisecond
)

// turns is the turn plan of one limiter. Callers hold the limiter's mu.
type turns struct {
	total int               // partitions of the topic (P)
	w     time.Duration     // length of one turn
	owned map[int]time.Time // partition → when its turns become ours
	used  int64             // the last turn we called in
	epoch time.Time         // turn 0 starts here
	zone  time.Duration     // how late in a turn its call may begin
}

// setTurns switches the limiter to turns among total partitions sharing whole calls per second,
// owning owned. A partition already owned keeps its turns; a new one (or any, on the first
// share) gets them one window from now.
func (l *Limiter) setTurns(owned map[int]bool, total, whole int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.cfg.Now()
	w := (l.window + turnZone + turnSkew) / time.Duration(max(whole, 1))
	t := l.turns
	if t == nil || t.total != total || t.w != w {
		t = &turns{total: total, w: w, owned: map[int]time.Time{}, used: math.MinInt64, epoch: time.Unix(0, 0), zone: turnZone}
	}
	next := map[int]time.Time{}
	for id := range owned {
		at, had := t.owned[id]
		if !had {
			at = now.Add(l.window)
		}
		next[id] = at
	}
	t.owned = next
	l.turns = t
	close(l.changed)
	l.changed = make(chan struct{})
}

// clearTurns returns the limiter to per-window ceilings.
func (l *Limiter) clearTurns() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.turns = nil
}

// start is when turn m begins.
func (t *turns) start(m int64) time.Time { return t.epoch.Add(time.Duration(m) * t.w) }

// at is the number of the turn running at now.
func (t *turns) at(now time.Time) int64 {
	d := now.Sub(t.epoch)
	m := int64(d / t.w)
	if d < 0 && d%t.w != 0 {
		m--
	}
	return m
}

// try grants the call of the turn running at now if it is ours and still open; otherwise it
// says how long until our next turn (0: we own no partition).
func (t *turns) try(now time.Time, factor float64) (*grant, time.Duration) {
	m := t.at(now)
	if m > t.used && now.Sub(t.start(m)) < t.zone && t.ours(m, factor) {
		t.used = m
		return &grant{at: now, pending: true}, 0
	}
	next := int64(math.MaxInt64)
	for id, from := range t.owned {
		if k, ok := t.nextTurn(id, max(m+1, t.at(from)), from, factor); ok {
			next = min(next, k)
		}
	}
	if next == math.MaxInt64 {
		return nil, 0
	}
	return nil, max(t.start(next).Sub(now), time.Microsecond)
}

// ours reports whether turn m is one we may call in.
func (t *turns) ours(m int64, factor float64) bool {
	id := int(mod(m, int64(t.total)))
	from, ok := t.owned[id]
	return ok && !t.start(m).Before(from) && useCycle(m/int64(t.total), factor)
}

// nextTurn is the first turn at or after m of partition id that starts at or after from and
// that the factor lets us use.
func (t *turns) nextTurn(id int, m int64, from time.Time, factor float64) (int64, bool) {
	p := int64(t.total)
	k := m + mod(int64(id)-m, p)
	for range 2*int(math.Ceil(1/max(factor, 0.01))) + 2 {
		if !t.start(k).Before(from) && useCycle(k/p, factor) {
			return k, true
		}
		k += p
	}
	return 0, false
}

// useCycle reports whether a partition uses its turn of cycle c at rate factor f: f of the
// cycles, evenly spread.
func useCycle(c int64, f float64) bool {
	if f >= 1 {
		return true
	}
	return math.Floor(float64(c+1)*f) > math.Floor(float64(c)*f)
}

func mod(a, b int64) int64 {
	r := a % b
	if r < 0 {
		r += b
	}
	return r
}
