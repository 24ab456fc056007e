package budget

import "time"

// A process restarted with the same instance id on the same host succeeds the member that ran
// it before (Config.Succeeds): it counts that member's calls as its own and asks for its entry
// to end at once (DESIGN.md, "Succession after a crash").

// succeed makes r ask for the predecessor's entry to end, while the ledger still has it: the
// sink first counts the predecessor's bound as calls of its own, and r's Used covers it. They
// are stamped as preloadPlan says: the calls its last record timed, each at the end of its
// slot; the rest of the bound when the predecessor was proved dead (Config.SucceedsAt, or
// now), after every call it made. Each stamp is no earlier than a call it stands for, so the
// counted calls hold their room in every window that can still hold any of the predecessor's,
// and they leave the window about as the predecessor's calls would have, not in one bunch.
//
// Before the member is ready its records name the predecessor too, with its Used as it is: the
// others then leave the predecessor's demand out of their targets (a restarted process would
// otherwise be counted twice, and everyone would shrink to make room for it), and the
// predecessor's entry ends only if its bound is 0.
func (m *Member) succeed(r *Record, now time.Time, ready bool) {
	if m.cfg.Succeeds == "" {
		return
	}
	n, live := m.ledger.Bound(m.cfg.Succeeds)
	if !live {
		return // ended (by our record, its expiry, or never seen): nothing left to count
	}
	r.Succeeds = m.cfg.Succeeds
	if !ready {
		return
	}
	if n > m.preloaded {
		at := m.cfg.SucceedsAt
		if at.IsZero() {
			at = now
		}
		// The first count follows the predecessor's latest record. A bound raised after it
		// (a later record of the predecessor read since) is counted at the lock: those may be
		// calls no record we counted by timed.
		rest := n - m.preloaded
		if m.preloaded == 0 {
			ts, ages := m.ledger.Ages(m.cfg.Succeeds)
			var slots []stamped
			slots, rest = preloadPlan(n, ts, ages, at, m.cfg.Window, m.unsafeAllSlots, m.unsafeSlotStart)
			for _, s := range slots {
				m.sink.Preload(s.n, s.at)
			}
		}
		if rest > 0 {
			m.sink.Preload(rest, at)
		}
		m.preloaded = n
	}
	r.Used = max(r.Used, n)
}

// stamped is n calls counted as made at at.
type stamped struct {
	n  int
	at time.Time
}

// preloadPlan is how a successor proved its predecessor dead at at counts the predecessor's
// bound (the most calls it can have in any window ending after its last record, stamped ts with
// ages): each slot of ages that lies wholly within (at − window, ts], at the slot's end, and the
// rest of the bound at at. With W the limiter's window (at least window), for every t ≥ at the
// predecessor's calls in (t − W, t] are then at most the stamps there:
//   - a call the slots counted is in (t − W, t] only if its slot's stamp is (the stamp is
//     no earlier than the call, and no later than ts ≤ t);
//   - every other call in (t − W, t] was made in (at − W, at] (it was dead by at), a window
//     that also holds every call the slots counted. The bound caps them together, so there
//     are at most bound − counted of them: the rest, stamped at at ∈ (t − W, t].
//
// The slots older than the window at at are left out: their room the predecessor may have
// used again after ts, with calls no record timed.
func preloadPlan(bound int, ts time.Time, ages []int, at time.Time, window time.Duration, allSlots, slotStart bool) (plan []stamped, rest int) {
	counted := 0
	for i, n := range ages {
		end := ts.Add(-time.Duration(i) * AgeStep)
		start := end.Add(-AgeStep)
		if n == 0 || (start.Before(at.Add(-window)) && !allSlots) {
			continue
		}
		if slotStart {
			end = start
		}
		plan = append(plan, stamped{n, end})
		counted += n
	}
	return plan, max(bound-counted, 0)
}
