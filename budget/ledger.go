// Package budget shares one API rate budget among the replicas of a consumer group, through a
// single-partition Kafka topic and nothing else, so that budget one replica can't use flows to
// replicas with backlog within about a second, and no one-second window of the whole group holds
// more than the budget. DESIGN.md states the protocol and why it is safe.
//
// The protocol is in Ledger (the deterministic fold every member computes over the topic) and
// Member (one replica's side: what to publish, and the ceiling its limiter may use). Both are
// pure and driven by the caller's clock; Runner moves records between a Member and a Log.
package budget

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// Record is what a member publishes, every Interval and after each change.
type Record struct {
	// Member identifies one process: a restarted replica is a new member.
	Member string `json:"m"`
	// Seq increases with each record of the member; a record not newer than the last one of
	// its member in the log is ignored.
	Seq uint64 `json:"s"`
	// TS is the publisher's wall clock at publication, Unix nanoseconds. Entries expire by it.
	TS int64 `json:"t"`
	// Held is the ceiling (calls per window) the member may be using now: its last grant, or
	// less after a shrink it has already applied.
	Held int `json:"h"`
	// Want is the ceiling it asks for; Want <= Held is a shrink it has already applied.
	Want int `json:"w"`
	// Demand is how many calls per window it could use (Budget when it has a backlog).
	Demand int `json:"d"`
	// Used is how many calls it made in the window before publishing. With its claim it bounds
	// the member's calls in any one-second window from now until its next record (see
	// entry.bound): room another member may use at once.
	Used int `json:"u"`
	// Peak is the highest ceiling it had in that window. The bound no longer needs it (it is
	// never lower than Used); it stays in the record for replicas that still read it.
	Peak int `json:"p"`
	// Succeeds names the member this one succeeds: the previous process of its instance, which
	// it knows to be dead. Folded with a Used that covers that member's bound, the record ends
	// the predecessor's entry at once, instead of TTL after its last record (DESIGN.md,
	// "Succession after a crash").
	Succeeds string `json:"x,omitempty"`
	// Ages says when the calls of Used were made: Ages[i] counts those timed in
	// (TS − (i+1)·AgeStep, TS − i·AgeStep], of the calls whose time could no longer move
	// (the others, in flight when the record was published, are in Used only). A successor
	// stamps each call no earlier than it was made, so they leave its window as they would
	// have left the member's (DESIGN.md, "Succession after a crash"). Empty: not known.
	Ages []int `json:"a,omitempty"`
}

// AgeStep is the width of one slot of Record.Ages.
const AgeStep = 50 * time.Millisecond

// maxAges bounds Record.Ages: ten seconds of slots, far more than any window it describes.
const maxAges = 200

// Validate reports a record no member could have written.
func (r Record) Validate() error {
	switch {
	case r.Member == "":
		return errors.New("budget record: no member")
	case r.Held < 0 || r.Want < 0 || r.Demand < 0 || r.Used < 0 || r.Peak < 0:
		return fmt.Errorf("budget record from %s: negative held %d, want %d, demand %d, used %d or peak %d",
			r.Member, r.Held, r.Want, r.Demand, r.Used, r.Peak)
	case len(r.Ages) > maxAges:
		return fmt.Errorf("budget record from %s: %d slots of ages, at most %d", r.Member, len(r.Ages), maxAges)
	case slices.ContainsFunc(r.Ages, func(n int) bool { return n < 0 }):
		return fmt.Errorf("budget record from %s: negative count in ages %v", r.Member, r.Ages)
	}
	return nil
}

// entry is the ledger's state of one member: its latest record and what it was granted.
type entry struct {
	seq    uint64
	ts     int64
	held   int // as counted: 0 when the record found no live entry
	want   int
	demand int
	grant  int
	used   int
	peak   int
	// succeeds is the predecessor its latest record named (Record.Succeeds): Target leaves
	// that one's demand out.
	succeeds string
	// peakBound: the bound before max(Used, claim), which counted the peak of the member's last
	// window (tests: what the tighter bound buys).
	peakBound bool
	// ages is the latest record's Ages (read only: records' slices may be shared).
	ages []int
}

// claim is what the entry counts against the budget when another member asks for more.
func (e *entry) claim() int { return max(e.held, e.want, e.grant) }

// bound is what the entry counts against room another member uses at once, without waiting a
// window: the most calls its member can have in any one-second window ending after its record
// and before its next one. A limiter admits a call only while fewer calls than its ceiling lie in
// the window before it, so a window's calls are at most the ceiling in force when the newest of
// them was admitted. If that was after the record, the ceiling was at most the claim (a shrink
// is applied before the record says so; growth needs a later record). If it was before, every
// call of the window was already made when the record was published, inside the window it
// measured: at most Used. Hence max(Used, claim): as a member that shrank publishes, its Used
// falls towards its new ceiling and others grow into the difference at once, where the peak of
// its last window would have held them off for a whole window.
func (e *entry) bound() int {
	if e.peakBound {
		return min(e.used+e.claim(), max(e.peak, e.claim()))
	}
	return max(e.used, e.claim())
}

// Ledger folds the budget topic's records, in log order, into each member's grant. Every
// member folds the same records to the same grants: a grant depends only on the data of the
// member's record and of the latest records of the others within TTL. Grants never add up to
// more than Budget (see DESIGN.md).
type Ledger struct {
	budget int
	ttl    int64
	ready  int64 // records stamped at or after this see every entry they count
	maxTS  int64
	oldest int64 // no entry's ts is below this (a lower bound, for skipping expire)
	es     map[string]*entry
	// unsafeNoRoom grants every want, unsafeNowAll lets every grant be used at once (tests:
	// broken variants the simulation must catch).
	unsafeNoRoom bool
	unsafeNowAll bool
	// unsafeFreedAll: Now ignores the others' bounds (tests: a broken variant of the room a
	// member takes at others' records).
	unsafeFreedAll bool
	// peakBound: entries use the former bound (tests, see entry.peakBound).
	peakBound bool
}

// NewLedger returns a ledger of budget calls per window whose entries expire ttl after their
// last record. from is the earliest timestamp of the records the caller feeds it (it started
// reading there); grants decided before from+ttl+margin may depend on records it never saw.
func NewLedger(budget int, ttl, margin time.Duration, from time.Time) *Ledger {
	return &Ledger{budget: budget, ttl: int64(ttl), ready: from.Add(ttl + margin).UnixNano(), es: map[string]*entry{}}
}

// Applied is the ledger's verdict on one record.
type Applied struct {
	// Stale: an older record of the member than one already folded; nothing changed.
	Stale bool
	// Live: the member had a live entry before this record (its Held counted).
	Live bool
	// Grant is the ceiling the member may use after this record, one window after it reads it.
	Grant int
	// Now is the part of Grant it may use at once: room the others' records show they can't
	// be using in any window from now on (see entry.bound).
	Now int
	// Ready: every entry the grant counted was visible to this ledger.
	Ready bool
}

// Apply folds r. Records must be applied in log order.
func (l *Ledger) Apply(r Record) Applied {
	l.maxTS = max(l.maxTS, r.TS)
	l.expire()
	e := l.es[r.Member]
	if e != nil && r.Seq <= e.seq {
		return Applied{Stale: true, Live: true, Grant: e.grant, Ready: l.Ready()}
	}
	l.succeed(r)
	live := e != nil
	held := 0
	if live {
		held = min(r.Held, e.grant) // a member never holds more than it was granted
	}
	others := 0
	for m, o := range l.es {
		if m != r.Member {
			others += o.claim()
		}
	}
	grant := r.Want
	if r.Want <= held {
		held = r.Want // a shrink: the member applied it before publishing
	} else {
		grant = max(held, min(r.Want, l.budget-others))
		if l.unsafeNoRoom {
			grant = r.Want
		}
	}
	// Not max(held, …): held may be a growth the member has not yet put in force.
	now := l.atOnce(r.Member, grant)
	if l.unsafeNowAll {
		now = grant
	}
	l.oldest = min(l.oldest, r.TS)
	l.es[r.Member] = &entry{seq: r.Seq, ts: r.TS, held: held, want: r.Want, demand: r.Demand, grant: grant,
		used: r.Used, peak: r.Peak, succeeds: r.Succeeds, peakBound: l.peakBound, ages: r.Ages}
	return Applied{Live: live, Grant: grant, Now: now, Ready: l.Ready()}
}

// Now is the part of member's grant it may use at once after the records folded so far (as
// Applied.Now at its own record, evaluated now), and whether it has a live entry.
func (l *Ledger) Now(member string) (int, bool) {
	e := l.es[member]
	if e == nil {
		return 0, false
	}
	if l.unsafeNowAll || l.unsafeFreedAll {
		return e.grant, true
	}
	return l.atOnce(member, e.grant), true
}

// atOnce is the part of grant that member may use at once: what the others' bounds leave of
// the budget (see entry.bound).
func (l *Ledger) atOnce(member string, grant int) int {
	bounds := 0
	for m, o := range l.es {
		if m != member {
			bounds += o.bound()
		}
	}
	return max(0, min(grant, l.budget-bounds))
}

// succeed ends the entry of the member r succeeds when r's Used covers its bound: the most
// calls the dead predecessor can have in any window from r's publication on. r's member counts
// that many calls of its own (its limiter holds them until they age out), so its Used carries
// them in every bound others grow against at once until they are gone; growth that waits a
// window comes after they are gone anyway. A record whose Used falls short (a record of the
// predecessor folded since raised its bound) ends nothing: the entry expires by TTL.
func (l *Ledger) succeed(r Record) {
	if r.Succeeds == "" || r.Succeeds == r.Member {
		return
	}
	if x := l.es[r.Succeeds]; x != nil && r.Used >= x.bound() {
		delete(l.es, r.Succeeds)
	}
}

// Bound is the most calls member can have in any window from its latest record on (its
// entry's bound), and whether it has a live entry.
func (l *Ledger) Bound(member string) (int, bool) {
	e := l.es[member]
	if e == nil {
		return 0, false
	}
	return e.bound(), true
}

// Ages is the time and the Ages of member's latest record (zero and nil if it has no entry).
func (l *Ledger) Ages(member string) (time.Time, []int) {
	e := l.es[member]
	if e == nil {
		return time.Time{}, nil
	}
	return time.Unix(0, e.ts), e.ages
}

// expire drops the entries whose last record is more than ttl older than the newest seen.
func (l *Ledger) expire() {
	cut := l.maxTS - l.ttl
	if l.oldest >= cut {
		return
	}
	l.oldest = math.MaxInt64
	for m, e := range l.es {
		if e.ts < cut {
			delete(l.es, m)
		} else {
			l.oldest = min(l.oldest, e.ts)
		}
	}
}

// Ready reports whether the records folded so far reach past the horizon of the first one:
// from then on this ledger's grants are everyone's.
func (l *Ledger) Ready() bool { return l.maxTS >= l.ready }

// Peers is the number of live entries other than member.
func (l *Ledger) Peers(member string) int {
	n := 0
	for m := range l.es {
		if m != member {
			n++
		}
	}
	return n
}

// Granted is the sum of all live grants (for tests and metrics).
func (l *Ledger) Granted() int {
	s := 0
	for _, e := range l.es {
		s += e.grant
	}
	return s
}

// Target is member's fair ceiling given its own demand and the latest demands of the others:
// the budget water-filled over the demands (each gets its demand if it fits, the rest is split
// evenly among those wanting more, remainders to the lowest member ids). Members compute it
// from their own views, which may differ; safety never depends on it, only on the grants.
//
// When the demands fit in the budget, what is left is split evenly over the members (a member
// that left, demand 0, takes none) on top of their demands, so that nobody shrinks while the
// budget is not contended. A demand falls whenever a member's callers stop waiting for a
// moment — a rebalance draining its partitions, a slow fetch, a stall of the process — and
// every member's at once in a rebalance; a member that shrank on that must grow again, and
// growth waits for a round trip through the log and, beyond what the others' records show
// free, a whole window. Holding the headroom costs a member whose demand rises one more round
// trip: the others shrink to their demands when they read its new one.
func (l *Ledger) Target(member string, demand int) int {
	ds := []memberDemand{{member, min(max(demand, 0), l.budget)}}
	sum := ds[0].d
	succeeded := map[string]bool{}
	for _, e := range l.es {
		if e.succeeds != "" {
			succeeded[e.succeeds] = true // its successor asks for it: one demand, not two
		}
	}
	for m, e := range l.es {
		if m != member && !succeeded[m] {
			ds = append(ds, memberDemand{m, min(e.demand, l.budget)})
			sum += ds[len(ds)-1].d
		}
	}
	if sum <= l.budget {
		return withHeadroom(member, ds, l.budget-sum)
	}
	return fairShare(member, ds, l.budget)
}

// memberDemand is one member's demand, capped at the budget.
type memberDemand struct {
	m string
	d int
}

// withHeadroom is member's target when the demands ds fit the budget: its demand plus an even
// split of what is left among the members that want anything (the remainder to the first by
// name), so that a momentary dip of every demand does not shrink the shares.
func withHeadroom(member string, ds []memberDemand, left int) int {
	if ds[0].d == 0 {
		return 0
	}
	var taking []memberDemand
	for _, x := range ds {
		if x.d > 0 {
			taking = append(taking, x)
		}
	}
	slices.SortFunc(taking, func(a, b memberDemand) int { return cmp.Compare(a.m, b.m) })
	n := len(taking)
	for j, x := range taking {
		if x.m == member {
			if j < left%n {
				return x.d + left/n + 1
			}
			return x.d + left/n
		}
	}
	return 0
}

// fairShare is member's max-min fair share of budget when the demands ds exceed it: demands
// below an even split of what is left are met, the rest split it evenly (the remainder to the
// first by name).
func fairShare(member string, ds []memberDemand, budget int) int {
	slices.SortFunc(ds, func(a, b memberDemand) int { return cmp.Or(cmp.Compare(a.d, b.d), cmp.Compare(a.m, b.m)) })
	left := budget
	for i, x := range ds {
		n := len(ds) - i
		fair := left / n
		if x.d <= fair {
			if x.m == member {
				return x.d
			}
			left -= x.d
			continue
		}
		// Everyone from here on wants more than an even split of what is left.
		rest := ds[i:]
		slices.SortFunc(rest, func(a, b memberDemand) int { return cmp.Compare(a.m, b.m) })
		extra := left % n
		for j, y := range rest {
			if y.m == member {
				if j < extra {
					return fair + 1
				}
				return fair
			}
		}
	}
	return 0
}
