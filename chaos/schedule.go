// Package chaos runs a fleet of real `chatgroupd run` processes against a Kafka broker and the
// IM simulator under a random schedule drawn from a seed — produce bursts with duplicates,
// swapped seqs, hot accounts and invalid records; replicas started, stopped, killed and paused
// past their session; slow accounts; API fault storms; a dead-letter topic that refuses writes;
// with Options.RetryLane, accounts failing long enough to be parked in the retry lane and
// replicas stopped, killed or paused the moment they park or unpark one — and then checks the
// product's guarantees against the simulator's call log and the topics.
//
// The schedule is a pure function of the seed and the Options, so a failing seed is replayed
// exactly (up to the timing of the processes) by running the same seed again.
//
// The embedded broker runs in the test process. `make chaos` and `make test` build it from a
// patched copy of kfake (internal/kfakepatch, through go test -modfile): kfake counts the members
// a rebalance waits for in one counter that it also changes for members parked in SyncGroup, so a
// member leaving or re-joining at that moment leaves the count short, and the rebalance then waits
// for a deadline that every join restarts — the group never forms again (seed 22, session 5).
// Kafka counts only members awaiting a join answer; the patch does the same. TestChaos's totals
// say which build ran (kfake=patched|unpatched); a plain go test of this package is unpatched.
package chaos

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
)

// Kind is what one schedule step does.
type Kind string

// Step kinds. Faults that last are two steps, one to begin and one to end them.
const (
	KindBurst     Kind = "burst"     // produce Step.Records
	KindStart     Kind = "start"     // start replica Step.Slot
	KindStop      Kind = "stop"      // SIGTERM: a graceful leave
	KindKill      Kind = "kill"      // SIGKILL
	KindPause     Kind = "pause"     // SIGSTOP, longer than the session timeout: eviction
	KindResume    Kind = "resume"    // SIGCONT
	KindSlow      Kind = "slow"      // Step.Account's calls take Step.For longer than the session
	KindSlowEnd   Kind = "slow-end"  // Step.Account fast again
	KindStorm     Kind = "storm"     // API faults: 502s, errors, hangs, apply-then-fail answers
	KindStormEnd  Kind = "storm-end" // faults back to the base latency
	KindDLQDown   Kind = "dlq-down"  // produce requests to the DLQ topic fail
	KindDLQUp     Kind = "dlq-up"    // the DLQ topic writable again
	KindFail      Kind = "fail"      // Step.Account's calls answer 50004 (transient, not applied) for Step.For: parked past the stall limit
	KindFailEnd   Kind = "fail-end"  // Step.Account's calls answered as usual again
	accountPool        = 40          // user-00 … user-39
	ghostAccounts      = 3           // ghost-0 … ghost-2: not imported, answers 50001
	ghostPrefix        = "ghost-"
	userPrefix         = "user-"
	maxBurst           = 300
	minStepGap         = 700 * time.Millisecond
)

// RecordKind is what a produced record must end as.
type RecordKind int

// Record kinds.
const (
	Valid     RecordKind = iota // applied exactly once
	Duplicate                   // a byte-identical re-send of a valid event: dropped
	Invalid                     // breaks the event contract: dead-lettered as invalid, never sent
	Rejected                    // valid, but the account is not imported: dead-lettered as rejected
)

func (k RecordKind) String() string {
	return [...]string{"valid", "duplicate", "invalid", "rejected"}[k]
}

// Record is one produced record and what must become of it.
type Record struct {
	Key, Value []byte
	Kind       RecordKind
	Account    string
	Seq        int64
	EventID    string
	// Type is the event_type: "" or EventCreated for a create, else a lifecycle type
	// (EventRenamed, ...). The generator draws lifecycle events with Options.Events
	// EventsLifecycle.
	Type     string
	Group    string           // the group the event names, as it is before the event (valid and rejected events)
	NewGroup string           // a rename's new name
	Contacts []im.ContactItem // a valid create's conversations, or those an add/remove names
	// Filled by the run: when it was produced and where it landed.
	ProducedAt time.Time
	Partition  int
	Offset     int64
}

// Step is one timed action of a schedule.
type Step struct {
	At      time.Duration
	Kind    Kind
	Slot    int           // start, stop, kill, pause, resume
	Account string        // slow, slow-end, fail, fail-end
	Latency time.Duration // slow
	For     time.Duration // fail: how long the simulator answers the account with 50004 (fail-end ends it too)
	// On, for a stop, kill or pause, delays it until its replica logs that event (it then acts
	// at once), or until At+Within if it logs none: a crash at the lane's own moments. With
	// Slots it is the first of those replicas to log it (Slot at Within), and the start or
	// resume that follows carries the same Slots: it brings back whichever went.
	On      Trigger
	Within  time.Duration
	Slots   []int
	Records []Record // burst
	Note    string   // burst: its shape, for the printed schedule
}

// Options shape a schedule.
type Options struct {
	Seed     uint64
	Duration time.Duration // default 60s
	// Replicas is the fleet size; 0 draws 3–5 from the seed.
	Replicas       int
	SessionTimeout time.Duration // default 4s
	// DLQFaults allows dlq-down steps (they need the embedded broker).
	DLQFaults bool
	// FleetBudget is how the replicas share the budget (their --fleet-budget): BudgetStatic or
	// BudgetKafka. NewSchedule picks it by the seed when empty (odd: kafka), so both modes are under test;
	// a hand-made schedule without it runs static.
	FleetBudget string
	// Events is what the valid events of imported accounts are: EventsCreate (creates only) or
	// EventsLifecycle (contract v2: creates, renames, adds, removes and deletes of the groups
	// created earlier). NewSchedule picks it by the seed when empty (every third seed,
	// lifecycle); a hand-made schedule without it makes creates.
	Events string
	// Membership is the replicas' group membership: MembershipDynamic, or MembershipStatic
	// (--instance-id per slot, and --instance-lock-dir; a SIGKILLed replica is started again
	// within 0.1-0.6 s, as a container restarted in its pod, and succeeds its dead
	// predecessor's fleet budget entry at once: package budget, "Succession after a crash"). NewSchedule picks it by the seed when empty (seeds 1, 5,
	// 9, …: every other kafka seed, static); a hand-made schedule without it is dynamic.
	Membership string
	// RetryLane runs the replicas with the retry lane on (--retry-lane on) and a short
	// --account-stall-limit (StallLimit), and lets the schedule fail accounts transiently for
	// longer than that (KindFail), so they are parked and their later events go through the
	// lane, while replicas are stopped, killed and paused around them, some at the moment one
	// parks or unparks an account (Step.On).
	RetryLane bool
	// StallLimit is the replicas' --account-stall-limit with RetryLane; default 2s.
	StallLimit time.Duration
}

// Values of Options.Membership.
const (
	MembershipDynamic = "dynamic"
	MembershipStatic  = "static"
)

// Trigger is a replica's log event a stop, kill or pause waits for (Step.On).
type Trigger string

// Triggers.
const (
	OnPark   Trigger = "park"   // "account parked in the retry lane": its head's forward to the lane is under way
	OnUnpark Trigger = "unpark" // "account unparked": the lane drained it and the unpark marker is written
	// OnCalls: the replica has written callsBurst create requests within callsSpan since the step
	// was armed: it called at about its full share in the last second, and its last calls are as
	// recent as they get. It reads the replicas' "request written" lines, logged at debug level
	// only (Config.LogLevel).
	OnCalls Trigger = "calls"
)

// Values of Options.Events.
const (
	EventsCreate    = "create"
	EventsLifecycle = "lifecycle"
)

// Values of Options.FleetBudget.
const (
	BudgetStatic = "static" // each replica the share of its partitions
	BudgetKafka  = "kafka"  // create budget flows to the backlog through the budget topic
)

func (o Options) withDefaults() Options {
	if o.Duration <= 0 {
		o.Duration = 60 * time.Second
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = 4 * time.Second
	}
	if o.RetryLane && o.StallLimit <= 0 {
		o.StallLimit = 2 * time.Second
	}
	return o
}

// Schedule is the plan of one seed.
type Schedule struct {
	Options
	Steps []Step
}

// Records returns every record of the schedule in produce order.
func (s *Schedule) Records() []Record {
	var out []Record
	for _, st := range s.Steps {
		out = append(out, st.Records...)
	}
	return out
}

// Count returns how many steps of kind k the schedule has.
func (s *Schedule) Count(k Kind) int {
	n := 0
	for _, st := range s.Steps {
		if st.Kind == k {
			n++
		}
	}
	return n
}

// triggers reports whether a step of the schedule waits for on.
func (s *Schedule) triggers(on Trigger) bool {
	return slices.ContainsFunc(s.Steps, func(st Step) bool { return st.On == on })
}

// String prints the schedule one step a line.
func (s *Schedule) String() string {
	var b strings.Builder
	lane := "off"
	if s.RetryLane {
		lane = fmt.Sprintf("on, stall limit %v", s.StallLimit)
	}
	fmt.Fprintf(&b, "seed %d: %v, %d replicas, session %v, fleet budget %s, events %s, membership %s, retry lane %s, %d records\n", s.Seed, s.Duration, s.Replicas, s.SessionTimeout,
		cmp.Or(s.FleetBudget, BudgetStatic), cmp.Or(s.Events, EventsCreate), cmp.Or(s.Membership, MembershipDynamic), lane, len(s.Records()))
	for _, st := range s.Steps {
		fmt.Fprintf(&b, "  %7.2fs %-9s", st.At.Seconds(), st.Kind)
		switch st.Kind {
		case KindBurst:
			fmt.Fprintf(&b, " %d records (%s)", len(st.Records), st.Note)
		case KindSlow:
			fmt.Fprintf(&b, " %s calls take %v", st.Account, st.Latency)
		case KindSlowEnd, KindFailEnd:
			fmt.Fprintf(&b, " %s", st.Account)
		case KindFail:
			fmt.Fprintf(&b, " %s calls answer 50004 for %v", st.Account, st.For)
		case KindStart, KindStop, KindKill, KindPause, KindResume:
			fmt.Fprintf(&b, " replica %d", st.Slot)
			if len(st.Slots) > 1 {
				fmt.Fprintf(&b, " (of %v)", st.Slots)
			}
			if st.On != "" {
				fmt.Fprintf(&b, " at its next %s within %v", st.On, st.Within)
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// generator draws a schedule; it tracks the fleet so every step is possible when it runs.
type generator struct {
	o     Options
	rng   *rand.Rand
	seq   map[string]int64
	n     int
	busy  []time.Duration // a slot is left alone until then (paused, or stopped and restarted)
	steps []Step
	// Lasting faults do not overlap their own kind, so each end step ends its own fault.
	stormUntil, dlqUntil time.Duration
	slowUntil            map[string]time.Duration // also fail (RetryLane): one fault per account at a time
	// groups is each imported account's groups after its events so far (EventsLifecycle).
	groups map[string]*acctGroups
	// now is the time of the step being drawn; reserved accounts (RetryLane: failed ones, whose
	// trickle of events is drawn ahead of its time) are left out of other bursts until then, so
	// every account's events are still produced in seq order.
	now      time.Duration
	reserved map[string]time.Duration
}

// NewSchedule draws the schedule of o.Seed. Every seed gets at least one graceful stop, one
// SIGKILL and one pause longer than the session timeout.
func NewSchedule(o Options) *Schedule {
	o = o.withDefaults()
	g := &generator{o: o, rng: rand.New(rand.NewPCG(o.Seed, o.Seed*0x9e3779b97f4a7c15+1)), seq: map[string]int64{}, slowUntil: map[string]time.Duration{},
		groups: map[string]*acctGroups{}, reserved: map[string]time.Duration{}}
	// Drawn whether or not it is forced, so that forcing the drawn size (the replay command
	// prints CHAOS_REPLICAS) replays the very same schedule.
	if drawn := 3 + g.rng.IntN(3); o.Replicas <= 0 {
		g.o.Replicas = drawn
	}
	if g.o.FleetBudget == "" {
		// Odd seeds kafka, even ones static: any two consecutive seeds test both. Not drawn from
		// the steps' generator, so that a seed's steps are what they were before the mode
		// existed (seeds stay comparable across runs and notes).
		g.o.FleetBudget = BudgetStatic
		if o.Seed%2 == 1 {
			g.o.FleetBudget = BudgetKafka
		}
	}
	if g.o.Membership == "" {
		g.o.Membership = MembershipDynamic
		if o.Seed%4 == 1 {
			g.o.Membership = MembershipStatic
		}
	}
	if g.o.Events == "" {
		// By the seed like the fleet budget, not drawn, so the other seeds' steps stay as
		// they were.
		g.o.Events = EventsCreate
		if o.Seed%3 == 0 {
			g.o.Events = EventsLifecycle
		}
	}
	g.busy = make([]time.Duration, g.o.Replicas)
	// The lifecycle events every seed must have, at random times in the first three quarters.
	must := []Kind{KindStop, KindKill, KindPause}
	mustAt := make([]time.Duration, len(must))
	for i := range must {
		mustAt[i] = time.Duration(float64(o.Duration) * (0.1 + 0.65*g.rng.Float64()))
	}
	// A lane schedule parks accounts at least once, in the first half.
	failAt := time.Duration(-1)
	if g.o.RetryLane {
		failAt = time.Duration(float64(o.Duration) * (0.1 + 0.4*g.rng.Float64()))
	}
	var t time.Duration
	for t < o.Duration {
		t += minStepGap + time.Duration(g.rng.Int64N(int64(1500*time.Millisecond)))
		if t >= o.Duration {
			break
		}
		g.now = t
		if failAt >= 0 && t >= failAt {
			g.fail(t)
			failAt = -1
		}
		for i, k := range must {
			if k != "" && t >= mustAt[i] && g.lifecycle(t, k) {
				must[i] = ""
			}
		}
		g.step(t)
	}
	// Anything the fleet could not take in time happens just after the end, when a replica is
	// free again.
	for _, k := range must {
		for at := o.Duration; k != "" && !g.lifecycle(at, k); at += time.Second {
		}
	}
	slices.SortStableFunc(g.steps, func(a, b Step) int { return int(a.At - b.At) })
	return &Schedule{Options: g.o, Steps: g.steps}
}

func (g *generator) add(s Step) { g.steps = append(g.steps, s) }

// step draws one random step at t.
func (g *generator) step(t time.Duration) {
	u := g.rng.Float64()
	switch {
	case u < 0.45:
		g.burst(t)
	case u < 0.55:
		g.lifecycle(t, KindStop)
	case u < 0.62:
		g.lifecycle(t, KindKill)
	case u < 0.68:
		g.lifecycle(t, KindPause)
	case u < 0.80 && g.o.RetryLane && g.rng.Float64() < 0.6:
		g.fail(t)
	case u < 0.80:
		acct := g.account()
		if g.slowUntil[acct] < t {
			d := time.Duration(float64(g.o.SessionTimeout) * (1.2 + 0.6*g.rng.Float64())).Round(100 * time.Millisecond)
			end := t + 6*time.Second + time.Duration(g.rng.Int64N(int64(6*time.Second)))
			g.add(Step{At: t, Kind: KindSlow, Account: acct, Latency: d})
			g.add(Step{At: end, Kind: KindSlowEnd, Account: acct})
			g.slowUntil[acct] = end
		}
		g.burst(t) // work for the slow account and the rest
	case u < 0.90:
		if g.stormUntil < t {
			g.stormUntil = t + 3*time.Second + time.Duration(g.rng.Int64N(int64(5*time.Second)))
			g.add(Step{At: t, Kind: KindStorm})
			g.add(Step{At: g.stormUntil, Kind: KindStormEnd})
		}
		g.burst(t)
	default:
		if g.o.DLQFaults && g.dlqUntil < t {
			g.dlqUntil = t + 3*time.Second + time.Duration(g.rng.Int64N(int64(5*time.Second)))
			g.add(Step{At: t, Kind: KindDLQDown})
			g.add(Step{At: g.dlqUntil, Kind: KindDLQUp})
		}
		g.burst(t)
	}
}

// lifecycle stops, kills or pauses a replica free at t (and restarts or resumes it later);
// false when that would leave no replica working.
func (g *generator) lifecycle(t time.Duration, k Kind) bool {
	return g.lifecycleOn(t, k, "")
}

// lifecycleOn is lifecycle, triggered by on ("": drawn, RetryLane only).
func (g *generator) lifecycleOn(t time.Duration, k Kind, on Trigger) bool {
	var free []int
	for i, until := range g.busy {
		if until <= t {
			free = append(free, i)
		}
	}
	if len(free) < 2 {
		return false
	}
	slot := free[g.rng.IntN(len(free))]
	st := Step{At: t, Kind: k, Slot: slot, On: on}
	if on == "" && g.o.RetryLane && g.rng.Float64() < 0.5 {
		// At the lane's own moments: an unpark follows the copy of the account's last event
		// applied; a park is its head on its way to the lane.
		st.On = OnUnpark
		if g.rng.Float64() < 0.3 {
			st.On = OnPark
		}
	}
	slots := []int{slot}
	if st.On != "" {
		// Whichever of the free replicas but one logs the event first: only a replica that owns
		// a parked account's partition can. All of them are left alone until it is back.
		st.Within = laneTriggerWithin
		keep := slot
		for keep == slot {
			keep = free[g.rng.IntN(len(free))]
		}
		for _, i := range free {
			if i != slot && i != keep {
				slots = append(slots, i)
			}
		}
		if len(slots) > 1 {
			st.Slots = slots
		}
	}
	g.add(st)
	t += st.Within // it acts by then
	if k == KindPause {
		d := time.Duration(float64(g.o.SessionTimeout) * (1.5 + g.rng.Float64())).Round(100 * time.Millisecond)
		g.add(Step{At: t + d, Kind: KindResume, Slot: slot, Slots: st.Slots})
		g.setBusy(slots, t+d+time.Second)
		return true
	}
	draw := time.Duration(g.rng.Int64N(int64(8 * time.Second)))
	back := t + 3*time.Second + draw
	if k == KindKill && g.o.Membership == MembershipStatic {
		// As a container restarted in its pod: at once, with its instance id, while the dead
		// process's fleet budget entry is still live, so the new one succeeds it (the same draw,
		// so the steps after it stay those of the seed). A triggered kill may come up to Within
		// before that.
		back = t + 100*time.Millisecond + draw%(500*time.Millisecond)
	}
	g.add(Step{At: back, Kind: KindStart, Slot: slot, Slots: st.Slots})
	g.setBusy(slots, back+time.Second)
	return true
}

func (g *generator) setBusy(slots []int, until time.Duration) {
	for _, i := range slots {
		g.busy[i] = until
	}
}

func (g *generator) account() string {
	for {
		a := fmt.Sprintf("%s%02d", userPrefix, g.rng.IntN(accountPool))
		if g.reserved[a] <= g.now {
			return a
		}
	}
}

// laneTriggerWithin bounds how long a triggered stop, kill or pause waits for its log event:
// an unpark comes after the fault ends and the head's next retry, whose backoff has grown by then
// (up to about ten seconds after a fault of four stall limits).
const laneTriggerWithin = 10 * time.Second

// fail makes one to three accounts answer 50004 (transient, not applied) for 1.5–4 stall limits,
// so their head events stall and park them, and gives them events: a few each at once (queued
// behind the head, then forwarded to the lane) and a trickle, one each every 200–400 ms from a
// second before the fault ends to two seconds after, so events are forwarded while the lane
// drains and the account unparks. The trickle is drawn now: the accounts are reserved until it
// ends, so no other burst gives them a later seq produced earlier.
func (g *generator) fail(t time.Duration) {
	var accts []string
	for n, tries := 1+g.rng.IntN(3), 0; len(accts) < n && tries < 20; tries++ {
		if a := g.account(); g.slowUntil[a] < t && !slices.Contains(accts, a) {
			accts = append(accts, a)
		}
	}
	if len(accts) == 0 {
		g.burst(t)
		return
	}
	d := time.Duration(float64(g.o.StallLimit) * (1.5 + 2.5*g.rng.Float64())).Round(100 * time.Millisecond)
	end := t + d + 2*time.Second
	for _, a := range accts {
		g.add(Step{At: t, Kind: KindFail, Account: a, For: d})
		g.add(Step{At: t + d, Kind: KindFailEnd, Account: a})
		g.slowUntil[a], g.reserved[a] = end, end
	}
	g.burst(t) // the others' work
	var recs []Record
	for _, a := range accts {
		for range 2 + g.rng.IntN(3) {
			recs = append(recs, g.valid(a))
		}
	}
	g.add(Step{At: t, Kind: KindBurst, Records: recs, Note: fmt.Sprintf("failed accounts %v", accts)})
	if u := g.rng.Float64(); u < 0.6 {
		// A crash, a leave or a freeze as the lane drains them, or as they park.
		at, on := t+d-500*time.Millisecond, OnUnpark
		if u < 0.2 {
			at, on = t+g.o.StallLimit/2, OnPark
		}
		g.lifecycleOn(at, []Kind{KindKill, KindStop, KindPause}[g.rng.IntN(3)], on)
	}
	for at := max(t+d-time.Second, t+100*time.Millisecond); at < end; at += 200*time.Millisecond + time.Duration(g.rng.Int64N(int64(200*time.Millisecond))) {
		recs = nil
		for _, a := range accts {
			recs = append(recs, g.valid(a))
		}
		g.add(Step{At: at, Kind: KindBurst, Records: recs, Note: "lane trickle"})
	}
}

// burst produces 10–300 records: a hot account takes a share, some valid events are re-sent,
// some account pairs go out with their seqs swapped, and a few are invalid or for accounts the
// API does not know.
func (g *generator) burst(t time.Duration) {
	n := 10 + g.rng.IntN(60)
	if g.rng.Float64() < 0.2 {
		n = 100 + g.rng.IntN(maxBurst-100)
	}
	hot := g.account()
	hotShare := 0.0
	if g.rng.Float64() < 0.4 {
		hotShare = 0.2 + 0.4*g.rng.Float64()
	}
	dupRate, swapRate, invRate, ghostRate := 0.05*g.rng.Float64(), 0.1*g.rng.Float64(), 0.04*g.rng.Float64(), 0.02*g.rng.Float64()
	var recs []Record
	var dups, swaps, invalid, ghosts int
	for range n {
		acct := g.account()
		if g.rng.Float64() < hotShare {
			acct = hot
		}
		switch u := g.rng.Float64(); {
		case u < invRate:
			recs = append(recs, g.invalid(acct))
			invalid++
		case u < invRate+ghostRate:
			recs = append(recs, g.valid(fmt.Sprintf("%s%d", ghostPrefix, g.rng.IntN(ghostAccounts))))
			ghosts++
		default:
			r := g.valid(acct)
			if g.rng.Float64() < swapRate {
				// The next seq of the same account goes out first.
				r2 := g.valid(acct)
				recs = append(recs, r2, r)
				swaps++
			} else {
				recs = append(recs, r)
			}
			if g.rng.Float64() < dupRate {
				d := recs[len(recs)-1]
				d.Kind = Duplicate
				recs = append(recs, d)
				dups++
			}
		}
	}
	note := fmt.Sprintf("dup %d, swapped %d, invalid %d, ghost %d", dups, swaps, invalid, ghosts)
	if hotShare > 0 {
		note += fmt.Sprintf(", hot %s %.0f%%", hot, hotShare*100)
	}
	g.add(Step{At: t, Kind: KindBurst, Records: recs, Note: note})
}

func (g *generator) valid(acct string) Record {
	if g.o.Events == EventsLifecycle && !strings.HasPrefix(acct, ghostPrefix) {
		return g.lifecycleEvent(acct)
	}
	return g.create(acct)
}

// create returns the account's next event, a create of a new group.
func (g *generator) create(acct string) Record {
	g.n++
	g.seq[acct]++
	id := fmt.Sprintf("c%d-%d", g.o.Seed, g.n)
	contacts := []event.Contact{{Type: event.ContactC2C, ToAccount: fmt.Sprintf("peer-%d", g.rng.IntN(50))}}
	if g.rng.IntN(3) == 0 {
		contacts = append(contacts, event.Contact{Type: event.ContactGroup, ToGroupID: fmt.Sprintf("@TGS#%d", g.rng.IntN(20))})
	}
	e := event.Event{
		EventID: id, EventType: event.TypeContactGroupCreated, FromAccount: acct, Seq: g.seq[acct],
		OccurredAt: time.Unix(1_700_000_000+int64(g.n), 0).UTC(), GroupName: fmt.Sprintf("g%d-%d", g.o.Seed%100000, g.n), Contacts: contacts,
	}
	v, err := e.Marshal()
	if err != nil {
		panic(fmt.Sprintf("chaos: generated event does not marshal: %v", err)) // a bug here, not a run outcome
	}
	items := make([]im.ContactItem, len(contacts))
	for i, c := range contacts {
		items[i] = im.ContactItem{Type: c.Type, ToAccount: c.ToAccount, ToGroupID: c.ToGroupID}
	}
	k := Valid
	if strings.HasPrefix(acct, ghostPrefix) {
		k = Rejected
	}
	return Record{Key: []byte(acct), Value: v, Kind: k, Account: acct, Seq: e.Seq, EventID: id, Type: EventCreated, Group: e.GroupName, Contacts: items}
}

// invalid returns a record that breaks the event contract in one of several ways.
func (g *generator) invalid(acct string) Record {
	g.n++
	id := fmt.Sprintf("c%d-%d", g.o.Seed, g.n)
	var v []byte
	switch g.rng.IntN(5) {
	case 0: // truncated JSON
		v = fmt.Appendf(nil, `{"event_id":%q,"event_type":"contact_group.created","from_account":%q,"group_name":"x","contacts":[{"type":1,"to_account":"p"}]`, id, acct)
	case 1: // unknown type
		v = fmt.Appendf(nil, `{"event_id":%q,"event_type":"contact_group.archived","from_account":%q,"group_name":"x","contacts":[{"type":1,"to_account":"p"}]}`, id, acct)
	case 2: // no contacts
		v = fmt.Appendf(nil, `{"event_id":%q,"event_type":"contact_group.created","from_account":%q,"group_name":"x","contacts":[]}`, id, acct)
	case 3: // group name too long
		v = fmt.Appendf(nil, `{"event_id":%q,"event_type":"contact_group.created","from_account":%q,"group_name":%q,"contacts":[{"type":1,"to_account":"p"}]}`, id, acct, strings.Repeat("名", 11))
	default: // not UTF-8
		v = append(fmt.Appendf(nil, `{"event_id":%q,"x":"`, id), 0xff, 0xfe, '"', '}')
	}
	return Record{Key: []byte(acct), Value: v, Kind: Invalid, Account: acct, EventID: id}
}
