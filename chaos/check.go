package chaos

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/chatgroupd/chatgroupd/dlq"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
)

// Evidence is everything the checker reads at the end of a run.
type Evidence struct {
	Topic string
	// Records are the produced records with Partition, Offset and ProducedAt filled.
	Records []Record
	// Calls is the simulator's call log.
	Calls []imsim.Call
	// Letters are the DLQ topic's records.
	Letters []*dlq.Entry
	// Lag is the committed-to-end distance summed over the topic's partitions (a partition
	// without a commit counts every record).
	Lag int64
	// Budget is the calls per second one API may receive; Budgets, when they name an API, give
	// it a budget of its own.
	Budget  int
	Budgets map[string]int
	// ReorderWindow is how long the consumer waits for a missing seq before it goes on.
	ReorderWindow time.Duration
	// Exempt accounts are left out of the one-call-at-a-time check (the readiness prober's).
	Exempt []string
	// Partitions are the event topic's partitions as the run ended, with who held each last.
	Partitions []PartitionEnd
}

// PartitionEnd is one partition of the event topic when the run ended: the group's committed
// offset, the log end, and the last generation a replica logged it assigned in.
type PartitionEnd struct {
	Partition int
	Committed int64 // -1: nothing committed
	End       int64
	// Owner is the last replica that logged the partition assigned ("" if none ever did), in
	// generation Generation as member Member; OwnerAlive is whether it still ran when the
	// drain ended.
	Owner      string
	Member     string
	Generation int
	OwnerAlive bool
	// LastGeneration is the newest generation any replica logged: a partition whose Generation
	// is older went to no replica in it (a member that no longer existed, or nobody).
	LastGeneration int
}

// Report is the result of Check: the figures, and the violations among them.
type Report struct {
	Records           int
	Applied           int // valid events whose group was created exactly once
	DeadLettered      int // invalid and rejected records with their one right letter
	DuplicatesDropped int // re-sends neither applied again nor dead-lettered

	Lost              int // valid, invalid or rejected records neither applied nor dead-lettered
	DuplicateCreates  int // groups created more than once, plus creates answered "already exists"
	ContactsTwice     int // conversations added to one group by more than one applied create
	DoubleEffects     int // renames, conversations added or removed, deletes applied more often than their events
	ConcurrentCalls   int // calls that began while another call of the same account was in flight
	OrderViolations   int // applied after a higher seq of the account that was not ahead by more than the reorder window
	Late              int // applied after a higher seq that was produced well before it (allowed, counted)
	WindowsOverBudget int // calls that made their one-second window exceed the budget
	MaxWindow         int // most calls of one API in a sliding second, as they arrived
	// MaxWindowAtHandler is MaxWindow counted at the simulator's handler starts instead, which
	// a starved simulator process delays (informational; see checkBudget).
	MaxWindowAtHandler int
	WrongOutcome       int // dead-lettered with the wrong reason, valid dead-lettered, wrong contacts
	DLQStrays          int // letters for no produced record
	DLQRepeats         int // extra letters for one record (at-least-once across crashes: counted, allowed)
	Lag                int64
	// Unprogressed counts partitions whose records were not all committed when the run ended;
	// each is named in Problems with the last owner it had.
	Unprogressed int

	Problems []string // the first few of each kind, for the failure message
	kinds    map[string]int
}

// maxProblems bounds the examples kept of each kind of violation, so one flood does not hide
// the others.
const maxProblems = 6

func (r *Report) problem(kind, format string, args ...any) {
	if r.kinds == nil {
		r.kinds = map[string]int{}
	}
	if r.kinds[kind]++; r.kinds[kind] <= maxProblems {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
}

// Summary is the report on one line.
func (r Report) Summary() string {
	return fmt.Sprintf("records=%d applied=%d dead_lettered=%d duplicates_dropped=%d lost=%d duplicate_creates=%d contacts_twice=%d double_effects=%d concurrent_calls=%d order_violations=%d late=%d windows_over_budget=%d max_window=%d max_window_at_handler=%d wrong_outcome=%d dlq_strays=%d dlq_repeats=%d lag=%d unprogressed=%d",
		r.Records, r.Applied, r.DeadLettered, r.DuplicatesDropped, r.Lost, r.DuplicateCreates, r.ContactsTwice, r.DoubleEffects, r.ConcurrentCalls,
		r.OrderViolations, r.Late, r.WindowsOverBudget, r.MaxWindow, r.MaxWindowAtHandler, r.WrongOutcome, r.DLQStrays, r.DLQRepeats, r.Lag, r.Unprogressed)
}

// Err returns the violations, nil when every invariant held.
func (r Report) Err() error {
	var errs []error
	add := func(n int64, what string) {
		if n != 0 {
			errs = append(errs, fmt.Errorf("%d %s", n, what))
		}
	}
	add(int64(r.Lost), "records lost")
	add(int64(r.DuplicateCreates), "duplicate creates")
	add(int64(r.ContactsTwice), "conversations added twice")
	add(int64(r.DoubleEffects), "lifecycle effects applied twice")
	add(int64(r.ConcurrentCalls), "concurrent calls of one account")
	add(int64(r.OrderViolations), "seq order violations")
	add(int64(r.WindowsOverBudget), "calls over the one-second budget")
	add(int64(r.WrongOutcome), "wrong outcomes")
	add(int64(r.DLQStrays), "stray dead letters")
	add(r.Lag, "records of lag: offsets not committed to the log end")
	add(int64(r.Unprogressed), "partitions without progress: records left uncommitted (owners named below)")
	if len(errs) > 0 && len(r.Problems) > 0 {
		errs = append(errs, errors.New("first problems:\n  "+strings.Join(r.Problems, "\n  ")))
	}
	return errors.Join(errs...)
}

// Add sums o into r (for totals over seeds); Problems are not merged.
func (r *Report) Add(o Report) {
	r.Records += o.Records
	r.Applied += o.Applied
	r.DeadLettered += o.DeadLettered
	r.DuplicatesDropped += o.DuplicatesDropped
	r.Lost += o.Lost
	r.DuplicateCreates += o.DuplicateCreates
	r.ContactsTwice += o.ContactsTwice
	r.DoubleEffects += o.DoubleEffects
	r.ConcurrentCalls += o.ConcurrentCalls
	r.OrderViolations += o.OrderViolations
	r.Late += o.Late
	r.WindowsOverBudget += o.WindowsOverBudget
	r.MaxWindow = max(r.MaxWindow, o.MaxWindow)
	r.MaxWindowAtHandler = max(r.MaxWindowAtHandler, o.MaxWindowAtHandler)
	r.WrongOutcome += o.WrongOutcome
	r.DLQStrays += o.DLQStrays
	r.DLQRepeats += o.DLQRepeats
	r.Lag += o.Lag
	r.Unprogressed += o.Unprogressed
}

type coord struct {
	p int
	o int64
}

type groupKey struct{ account, group string }

// Check judges a run. It is pure: the unit tests feed it synthetic evidence.
func Check(ev Evidence) Report {
	r := Report{Records: len(ev.Records), Lag: ev.Lag}
	checkProgress(&r, ev.Partitions)
	applied, created := appliedCreates(&r, ev.Calls, ev.Records)
	life := checkLifecycle(&r, ev.Records, ev.Calls)
	appliedAt := life.appliedAt
	for rec, c := range created {
		appliedAt[rec] = c.Start
	}
	lifeByID := map[string]bool{} // event id → its valid lifecycle record applied
	for rec, ok := range life.applied {
		lifeByID[rec.EventID] = ok
	}
	letters := map[coord][]*dlq.Entry{}
	for _, l := range ev.Letters {
		c := coord{l.OriginalPartition, l.OriginalOffset}
		letters[c] = append(letters[c], l)
	}
	known := map[coord]bool{}
	for i := range ev.Records {
		rec := &ev.Records[i]
		c := coord{rec.Partition, rec.Offset}
		known[c] = true
		ls := letters[c]
		if len(ls) > 1 {
			r.DLQRepeats += len(ls) - 1
		}
		where := fmt.Sprintf("%d/%d %s %s", rec.Partition, rec.Offset, rec.Kind, rec.EventID)
		switch rec.Kind {
		case Valid, Duplicate:
			call, isApplied := created[rec]
			if rec.lifecycle() {
				isApplied = life.applied[rec]
			}
			switch {
			case len(ls) > 0:
				r.WrongOutcome++
				r.problem("outcome", "%s: dead-lettered (%s %d: %s)", where, ls[0].Reason, ls[0].Code, ls[0].Info)
			case rec.Kind == Duplicate:
				if rec.lifecycle() && lifeByID[rec.EventID] || !rec.lifecycle() && len(applied[groupKey{rec.Account, rec.Group}]) > 0 {
					r.DuplicatesDropped++
				} // else its original is not applied either, and is counted lost
			case !isApplied:
				r.Lost++
				r.problem("lost", "%s: not applied (account %s seq %d %s group %s)", where, rec.Account, rec.Seq, cmp.Or(rec.Type, EventCreated), rec.Group)
			default:
				r.Applied++
				if !rec.lifecycle() && !sameContacts(call.Contacts, rec.Contacts) {
					r.WrongOutcome++
					r.problem("outcome", "%s: group %s created with %v, want %v", where, rec.Group, call.Contacts, rec.Contacts)
				}
			}
		case Invalid, Rejected:
			want := dlq.ReasonInvalid
			if rec.Kind == Rejected {
				want = dlq.ReasonRejected
			}
			switch {
			case len(ls) == 0:
				r.Lost++
				r.problem("lost", "%s: not dead-lettered", where)
			case ls[0].Reason != want:
				r.WrongOutcome++
				r.problem("outcome", "%s: dead-lettered as %s, want %s", where, ls[0].Reason, want)
			case !bytes.Equal(ls[0].Value, rec.Value) || !bytes.Equal(ls[0].Key, rec.Key) || ls[0].OriginalTopic != ev.Topic:
				r.WrongOutcome++
				r.problem("outcome", "%s: the letter's key, value or topic differ from the original", where)
			default:
				r.DeadLettered++
			}
			if !rec.lifecycle() && rec.Group != "" && len(applied[groupKey{rec.Account, rec.Group}]) > 0 && !validCreate(ev.Records, rec) {
				r.WrongOutcome++
				r.problem("outcome", "%s: created group %s", where, rec.Group)
			}
		}
	}
	for c, ls := range letters {
		if !known[c] {
			r.DLQStrays += len(ls)
			r.problem("stray", "dead letter for %d/%d (%s) matches no produced record", c.p, c.o, ls[0].Reason)
		}
	}
	checkConcurrency(&r, ev.Calls, ev.Exempt)
	checkOrder(&r, ev.Records, appliedAt, ev.ReorderWindow)
	checkBudget(&r, ev.Calls, ev.Budget, ev.Budgets)
	return r
}

// validCreate reports whether a valid create of rec's account names rec's group (then a
// create of that group is its, not rec's).
func validCreate(recs []Record, rec *Record) bool {
	return slices.ContainsFunc(recs, func(o Record) bool {
		return o.Kind == Valid && !o.lifecycle() && o.Account == rec.Account && o.Group == rec.Group
	})
}

// appliedCreates returns the applied create calls by account and group, in start order, and
// the call that applied each valid create record: the k-th valid create of a name (in seq
// order; a name comes back after a delete or a rename) is the k-th applied create of it. It
// counts groups created more often than their valid creates, creates refused because the group
// existed, and conversations added by more than one create of a group created too often.
func appliedCreates(r *Report, calls []imsim.Call, recs []Record) (map[groupKey][]imsim.Call, map[*Record]imsim.Call) {
	out := map[groupKey][]imsim.Call{}
	for _, c := range calls {
		if c.API != im.APICreate {
			continue
		}
		if !c.Applied && c.Code != 0 && strings.Contains(c.Info, "already exists") {
			r.DuplicateCreates++
			r.problem("dup", "create of existing group %s/%s at %s (answered %d)", c.Account, c.Group, c.Start.Format("15:04:05.000"), c.Code)
		}
		if c.Applied {
			k := groupKey{c.Account, c.Group}
			out[k] = append(out[k], c)
		}
	}
	wants := map[groupKey][]*Record{}
	for i := range recs {
		if rec := &recs[i]; rec.Kind == Valid && !rec.lifecycle() {
			k := groupKey{rec.Account, rec.Group}
			wants[k] = append(wants[k], rec)
		}
	}
	created := map[*Record]imsim.Call{}
	for k, rs := range wants {
		slices.SortStableFunc(rs, func(a, b *Record) int { return cmp.Compare(a.Seq, b.Seq) })
		cs := out[k]
		sort.SliceStable(cs, func(i, j int) bool { return cs[i].Start.Before(cs[j].Start) })
		for i, rec := range rs {
			if i < len(cs) {
				created[rec] = cs[i]
			}
		}
	}
	for k, cs := range out {
		sort.SliceStable(cs, func(i, j int) bool { return cs[i].Start.Before(cs[j].Start) })
		if len(cs) <= max(1, len(wants[k])) {
			continue
		}
		r.DuplicateCreates += len(cs) - max(1, len(wants[k]))
		r.problem("dup", "group %s/%s created %d times", k.account, k.group, len(cs))
		seen := map[string]int{}
		for _, c := range cs {
			for _, it := range c.Contacts {
				seen[it.Key()]++
			}
		}
		for key, n := range seen {
			if n > 1 {
				r.ContactsTwice += n - 1
				r.problem("contacts", "conversation %s added to %s/%s %d times", key, k.account, k.group, n)
			}
		}
	}
	return out, created
}

// checkConcurrency counts calls that began while an earlier call of the same account was still
// in flight at the simulator.
func checkConcurrency(r *Report, calls []imsim.Call, exempt []string) {
	by := map[string][]imsim.Call{}
	for _, c := range calls {
		if c.Account != "" && !slices.Contains(exempt, c.Account) {
			by[c.Account] = append(by[c.Account], c)
		}
	}
	for acct, cs := range by {
		sort.Slice(cs, func(i, j int) bool { return cs[i].Start.Before(cs[j].Start) })
		var last imsim.Call
		for i, c := range cs {
			if i > 0 && c.Start.Before(last.End) {
				r.ConcurrentCalls++
				r.problem("concurrent", "account %s: %s %s began at %s while %s %s ran %s–%s", acct, c.API, c.Group, c.Start.Format("15:04:05.000"),
					last.API, last.Group, last.Start.Format("15:04:05.000"), last.End.Format("15:04:05.000"))
			}
			if i == 0 || c.End.After(last.End) {
				last = c
			}
		}
	}
}

// checkOrder walks each account's applied events — creates and lifecycle events alike, at the
// call that made their first effect — in the order they were applied: an event applied after
// one with a higher seq is an order violation, unless the higher one was produced more than the
// reorder window before it (the consumer was allowed to stop waiting: late).
func checkOrder(r *Report, recs []Record, appliedAt map[*Record]time.Time, window time.Duration) {
	type ap struct {
		rec *Record
		at  time.Time
	}
	by := map[string][]ap{}
	for i := range recs {
		rec := &recs[i]
		if rec.Kind != Valid || rec.Seq == 0 {
			continue
		}
		if at, ok := appliedAt[rec]; ok {
			by[rec.Account] = append(by[rec.Account], ap{rec, at})
		}
	}
	for acct, aps := range by {
		sort.SliceStable(aps, func(i, j int) bool { return aps[i].at.Before(aps[j].at) })
		for i, a := range aps {
			var ahead *Record
			for _, b := range aps[:i] {
				if b.rec.Seq > a.rec.Seq && (ahead == nil || b.rec.ProducedAt.Before(ahead.ProducedAt)) {
					ahead = b.rec
				}
			}
			if ahead == nil {
				continue
			}
			if a.rec.ProducedAt.Sub(ahead.ProducedAt) > window {
				r.Late++
				continue
			}
			r.OrderViolations++
			r.problem("order", "account %s: seq %d (%s) applied after seq %d (%s)", acct, a.rec.Seq, a.rec.EventID, ahead.Seq, ahead.EventID)
		}
	}
}

// checkBudget slides a one-second window over each API's calls as they reached the simulator
// (every call, admitted or not): at the kernel's receive time of the request (Call.Arrived),
// or where that is unknown at its handler's start.
//
// Not at the handler's start alone: the simulator shares two cores with the fleet and the
// broker, and on a loaded machine its goroutines read requests up to tens of milliseconds after
// they arrived (traced for s4: 0.2 ms median, 22.5 ms at p99.9, 28 ms at most; a replica's calls,
// 50 written in 1.008 s and never more than 50 in 1.005 s, were read as 51 in 0.9975 s because
// the first was read 11 ms late). That delay is the test machine's, not the network's a real
// API would count after; counting at the handler would fail the fleet for the simulator's CPU
// starvation. The handler-start figure is still reported (MaxWindowAtHandler).
//
// Each API is held to its own budget: Budgets[api] where set, else budget (≤ 0: not checked).
func checkBudget(r *Report, calls []imsim.Call, budget int, budgets map[string]int) {
	by, byHandler := map[string][]time.Time{}, map[string][]time.Time{}
	for _, c := range calls {
		at := c.Start
		if !c.Arrived.IsZero() {
			at = c.Arrived
		}
		by[c.API] = append(by[c.API], at)
		byHandler[c.API] = append(byHandler[c.API], c.Start)
	}
	for _, ts := range byHandler {
		r.MaxWindowAtHandler = max(r.MaxWindowAtHandler, maxInSecond(ts))
	}
	for api, ts := range by {
		budget := budget
		if b, ok := budgets[api]; ok {
			budget = b
		}
		if budget <= 0 {
			continue
		}
		slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
		lo, worst := 0, 0
		var worstAt time.Time
		for hi, t := range ts {
			for !ts[lo].After(t.Add(-time.Second)) {
				lo++
			}
			n := hi - lo + 1
			r.MaxWindow = max(r.MaxWindow, n)
			if n > budget {
				r.WindowsOverBudget++
				if n > worst {
					worst, worstAt = n, t
				}
			}
		}
		if worst > 0 {
			r.problem("budget", "%s: %d calls in the second before %s (budget %d)", api, worst, worstAt.Format("15:04:05.000"), budget)
		}
	}
}

// maxInSecond is the most of ts within one sliding second; it sorts ts.
func maxInSecond(ts []time.Time) int {
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	lo, most := 0, 0
	for hi, t := range ts {
		for !ts[lo].After(t.Add(-time.Second)) {
			lo++
		}
		most = max(most, hi-lo+1)
	}
	return most
}

func sameContacts(got, want []im.ContactItem) bool {
	key := func(cs []im.ContactItem) []string {
		out := make([]string, len(cs))
		for i, c := range cs {
			out[i] = c.Key()
		}
		sort.Strings(out)
		return out
	}
	return slices.Equal(key(got), key(want))
}

// checkProgress names every partition left with uncommitted records, and who held it last: a
// member of the last generation that no replica was (one that vanished, or none at all when the
// leader left the partition out), a replica that had exited, or a live replica that stalled.
func checkProgress(r *Report, parts []PartitionEnd) {
	for _, p := range parts {
		if p.End <= max(p.Committed, 0) {
			continue
		}
		r.Unprogressed++
		var who string
		switch {
		case p.Owner == "":
			who = "no replica was ever assigned it"
		case p.Generation < p.LastGeneration:
			who = fmt.Sprintf("no replica was assigned it in generation %d, the last (it went to a member that no longer existed, or to nobody); "+
				"last held by %s (member %s) in generation %d", p.LastGeneration, p.Owner, p.Member, p.Generation)
		case !p.OwnerAlive:
			who = fmt.Sprintf("its owner in generation %d, %s (member %s), had exited", p.Generation, p.Owner, p.Member)
		default:
			who = fmt.Sprintf("its owner in generation %d, %s (member %s), still ran", p.Generation, p.Owner, p.Member)
		}
		r.problem("unprogressed", "partition %d without progress: committed %d of %d; %s", p.Partition, p.Committed, p.End, who)
	}
}
