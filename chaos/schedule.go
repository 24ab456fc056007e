// Package chaos runs a fleet of real `chatgroupd run` processes against a Kafka broker and the
// IM simulator under a random schedule drawn from a seed — produce bursts with duplicates,
// swapped seqs, hot accounts and invalid records; replicas started, stopped, killed and paused
// past their session; slow accounts; API fault storms; a dead-letter topic that refuses writes —
// and then checks the product's guarantees against the simulator's call log and the topics.
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
	Account string        // slow, slow-end
	Latency time.Duration // slow
	Records []Record      // burst
	Note    string        // burst: its shape, for the printed schedule
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
}

// Values of Options.Membership.
const (
	MembershipDynamic = "dynamic"
	MembershipStatic  = "static"
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

// String prints the schedule one step a line.
func (s *Schedule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d: %v, %d replicas, session %v, fleet budget %s, events %s, membership %s, %d records\n", s.Seed, s.Duration, s.Replicas, s.SessionTimeout,
		cmp.Or(s.FleetBudget, BudgetStatic), cmp.Or(s.Events, EventsCreate), cmp.Or(s.Membership, MembershipDynamic), len(s.Records()))
	for _, st := range s.Steps {
		fmt.Fprintf(&b, "  %7.2fs %-9s", st.At.Seconds(), st.Kind)
		switch st.Kind {
		case KindBurst:
			fmt.Fprintf(&b, " %d records (%s)", len(st.Records), st.Note)
		case KindSlow:
			fmt.Fprintf(&b, " %s calls take %v", st.Account, st.Latency)
		case KindSlowEnd:
			fmt.Fprintf(&b, " %s", st.Account)
		case KindStart, KindStop, KindKill, KindPause, KindResume:
			fmt.Fprintf(&b, " replica %d", st.Slot)
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
	slowUntil            map[string]time.Duration
	// groups is each imported account's groups after its events so far (EventsLifecycle).
	groups map[string]*acctGroups
}

// NewSchedule draws the schedule of o.Seed. Every seed gets at least one graceful stop, one
// SIGKILL and one pause longer than the session timeout.
func NewSchedule(o Options) *Schedule {
	o = o.withDefaults()
	g := &generator{o: o, rng: rand.New(rand.NewPCG(o.Seed, o.Seed*0x9e3779b97f4a7c15+1)), seq: map[string]int64{}, slowUntil: map[string]time.Duration{},
		groups: map[string]*acctGroups{}}
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
	var t time.Duration
	for t < o.Duration {
		t += minStepGap + time.Duration(g.rng.Int64N(int64(1500*time.Millisecond)))
		if t >= o.Duration {
			break
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
	g.add(Step{At: t, Kind: k, Slot: slot})
	if k == KindPause {
		d := time.Duration(float64(g.o.SessionTimeout) * (1.5 + g.rng.Float64())).Round(100 * time.Millisecond)
		g.add(Step{At: t + d, Kind: KindResume, Slot: slot})
		g.busy[slot] = t + d + time.Second
		return true
	}
	draw := time.Duration(g.rng.Int64N(int64(8 * time.Second)))
	back := t + 3*time.Second + draw
	if k == KindKill && g.o.Membership == MembershipStatic {
		// As a container restarted in its pod: at once, with its instance id, while the dead
		// process's fleet budget entry is still live, so the new one succeeds it (the same draw,
		// so the steps after it stay those of the seed).
		back = t + 100*time.Millisecond + draw%(500*time.Millisecond)
	}
	g.add(Step{At: back, Kind: KindStart, Slot: slot})
	g.busy[slot] = back + time.Second
	return true
}

func (g *generator) account() string {
	return fmt.Sprintf("%s%02d", userPrefix, g.rng.IntN(accountPool))
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
