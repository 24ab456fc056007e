package imsim

import (
	"slices"
	"time"
)

// window tracks one API's calls in the last second.
type window struct {
	all      []time.Time // every call in (now-1s, now]
	accepted []time.Time // admitted calls in (now-1s, now]
	max      int
}

func dropOld(ts []time.Time, cut time.Time) []time.Time {
	i := 0
	for i < len(ts) && !ts[i].After(cut) {
		i++
	}
	return ts[i:]
}

// admit records a call at now and says whether it fits in the limit. Handlers read the clock
// before they take the lock that admit runs under, so now may be a little older than the last
// call recorded; it is inserted in order, because a call out of order at the front of the window
// would outstay its second and be counted against calls it never shared a second with.
//
// With calendar set, admitted calls are counted per calendar second instead (MaxWindow stays a
// sliding count: it measures the client, not the server's rule).
func (w *window) admit(now time.Time, limit int, calendar bool) bool {
	cut := now.Add(-time.Second)
	w.all = insertOrdered(dropOld(w.all, cut), now)
	w.max = max(w.max, len(w.all))
	if calendar {
		cut = now.Truncate(time.Second).Add(-time.Nanosecond)
	}
	w.accepted = dropOld(w.accepted, cut)
	if len(w.accepted) >= limit {
		return false
	}
	w.accepted = insertOrdered(w.accepted, now)
	return true
}

// insertOrdered inserts t into the ordered ts after any equal times.
func insertOrdered(ts []time.Time, t time.Time) []time.Time {
	i := len(ts)
	for i > 0 && ts[i-1].After(t) {
		i--
	}
	return slices.Insert(ts, i, t)
}
