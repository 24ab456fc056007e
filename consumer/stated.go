package consumer

import (
	"slices"

	"github.com/chatgroupd/chatgroupd/event"
)

// An account's next record waits for its earlier records' ends to be committed (DESIGN.md,
// "One unstated record per account").
//
// A successor looks up the user's groups before it dispatches an uncertain record: one the
// previous owner may have applied without a commit saying so. The look-up sees the groups as they
// are, after every record the previous owner applied. Were two of an account's records
// applied without a statement, the look-up for the first could see the second's effect: a create
// whose group a later rename moved looks undone, a create and a delete of one group look like
// neither happened. So an account dispatches a record only when no earlier record of it ended
// without a commit stating so; the successor then finds at most one of the account's uncertain
// records applied, the first, and its look-up sees only that record's effect.
//
// Creates are exempt among themselves: a create never hides another (a later create of the same
// name only adds conversations), so create-only accounts (contract v1) run as before.
//
// The retry lane keeps the same rule for a parked account with a marker in the lane instead of a
// commit (laneStateEnded): the lane's committed position is one offset for every parked account
// and can't state one account's ends while another's head is stuck below them.

// unstatedEnd is one account's ended records that no successful commit states yet.
type unstatedEnd struct {
	pending bool  // an ended record of the account is not stated yet
	off     int64 // the offset of the last of them; a commit stating it states the earlier ones
	mixed   bool  // one of them is not a create
}

// needsStatement reports whether ev must wait for the account's ended records to be stated.
func (u unstatedEnd) needsStatement(ev *event.Event) bool {
	return u.pending && (u.mixed || !isCreate(ev))
}

// add notes that a record of the account, carrying ev, ended at offset off.
func (u *unstatedEnd) add(ev *event.Event, off int64) {
	u.pending, u.off, u.mixed = true, off, u.mixed || !isCreate(ev)
}

func isCreate(ev *event.Event) bool {
	return ev != nil && ev.EventType == event.TypeContactGroupCreated
}

// ended notes that r of a ended; only a record that went to the API needs a statement. mu held.
func (e *engine) ended(a *account, r *rec) {
	if r.ev == nil {
		return // dead-lettered as invalid: no call was made
	}
	if !a.end.pending {
		a.p.unstated = append(a.p.unstated, a)
	}
	a.end.add(r.ev, r.msg.Offset)
}

// waitStatement blocks a until a commit states its ended records, asking for one now. mu held.
func (e *engine) waitStatement(a *account) {
	a.blocked = true
	a.p.sblocked = append(a.p.sblocked, a)
	e.requestCommit()
}

// stated takes an accepted commit of p (watermark w, completed ranges done above it): the
// accounts whose ended records it states go on. mu held.
func (e *engine) stated(p *part, w int64, done []span) {
	covered := func(off int64) bool {
		if off < w {
			return true
		}
		_, in := slices.BinarySearchFunc(done, off, func(s span, off int64) int {
			switch {
			case s.end <= off:
				return -1
			case s.start > off:
				return 1
			}
			return 0
		})
		return in
	}
	keep := p.unstated[:0]
	var freed []*account
	for _, a := range p.unstated {
		if !covered(a.end.off) {
			keep = append(keep, a)
			continue
		}
		a.end = unstatedEnd{}
		if !a.blocked {
			freed = append(freed, a)
		}
	}
	clear(p.unstated[len(keep):])
	p.unstated = keep
	for _, a := range freed {
		e.gc(a) // kept only for its statement
	}

	waiting := p.sblocked
	p.sblocked = nil
	for _, a := range waiting {
		if a.end.pending {
			p.sblocked = append(p.sblocked, a)
			continue
		}
		a.blocked = false
		e.schedule(a)
		e.gc(a)
	}
}
