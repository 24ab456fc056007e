package ratelimit

import (
	"cmp"
	"sync"
	"time"
)

// Defaults of DemandHold.
const (
	// DefaultHoldSettle is how long after a new generation is set up a held demand lasts: the
	// time its dispatches take to queue at the limiter again (offsets fetched, records fetched
	// again from the watermark and picked), about 0.3 s on the bench, with room for a slower
	// broker.
	DefaultHoldSettle = time.Second
	// DefaultHoldMax bounds a hold from the generation's end, whatever follows.
	DefaultHoldMax = 2 * time.Second
)

// DemandHold keeps a replica's demand for budget (Limiter.Demand, as the fleet budget reads it)
// from collapsing across a rebalance. When a generation ends, the consumer drops the dispatches
// waiting for a grant and picks them again only once the next generation is set up: for a few
// hundred milliseconds nothing waits, the demand falls to the recent use, and a fleet budget
// member shrinks its grant at once — shrinking is immediate, while growing back waits a round
// trip and a whole window, so a rebalance that kept the replica's partitions cost it a second
// at half its share. With the hold, the demand the replica reports from the end of a generation
// until Settle after the next one is set up is at least what it was when the generation ended,
// bounded by Max from that end; a next generation without partitions releases it at once: a
// replica that lost its partitions gives its share back.
//
// A demand is only a request for budget: the grants, and the window bound, do not depend on it
// (see the budget package's DESIGN.md). Holding it costs at most the time others wait for room
// this replica asked for and could not use.
//
// The zero value is ready to use with the defaults. It is safe for concurrent use.
type DemandHold struct {
	// Settle is how long after the next generation's set-up the hold lasts (DefaultHoldSettle).
	Settle time.Duration
	// Max is how long after the generation's end it lasts at most (DefaultHoldMax).
	Max time.Duration

	mu      sync.Mutex
	owned   bool      // the last partitions set were some
	holding bool      // a hold is in force until until
	held    int       // the demand when the generation ended
	until   time.Time // end of the hold
}

// Partitions tells the hold how many partitions the replica owns now, on each of the consumer's
// calls: at a generation's end (none, after owning some) it starts holding demand, the
// replica's demand at that moment; partitions of the next generation shorten the hold to Settle
// from now; none again while holding (the next generation has no partitions for this replica)
// ends it at once.
func (h *DemandHold) Partitions(now time.Time, owned, demand int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case owned > 0:
		h.owned = true
		if h.holding {
			h.until = minTime(h.until, now.Add(cmp.Or(h.Settle, DefaultHoldSettle)))
		}
	case h.owned:
		// A generation that had partitions ended. A hold of the one before may still be in
		// force (two rebalances within Settle): its demand carries over.
		if h.holding && now.Before(h.until) {
			demand = max(demand, h.held)
		}
		h.owned, h.holding = false, true
		h.held, h.until = demand, now.Add(cmp.Or(h.Max, DefaultHoldMax))
	default:
		h.owned, h.holding = false, false
	}
}

// Release ends any hold at once, and keeps the next end of a generation from starting one (until
// partitions are set again): the replica stops, and a member that leaves must let its demand
// fall so the others grow into its share while it drains.
func (h *DemandHold) Release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.owned, h.holding = false, false
}

// Demand is the demand to report at now given the replica's live one: the larger of the two
// while a hold is in force, else the live one.
func (h *DemandHold) Demand(now time.Time, live int) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.holding && now.Before(h.until) {
		return max(live, h.held)
	}
	h.holding = false
	return live
}

// minTime is the earlier of a and b.
func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
