package consumer

import (
	"context"
	"slices"
	"time"
)

// Written only once stated (DESIGN.md, "Records a crash leaves uncertain").
//
// A successor after a crash must treat as uncertain (existence check, and the account held until
// the dead owner's calls are over) every record the dead owner may have written. The horizon alone
// can only say "anything below it": in a backlog that is every account of the partition, since
// each has a record picked (waiting for a grant or in the ready queue). So each periodic commit
// also lists the records that may have been written (metadata v5), and a record is written only
// once a commit listing it was accepted: admission waits for that. Every commit taken after a
// record was admitted lists it until it ends (it stays in callWatch.admitted or .sent), so the last accepted
// commit a successor reads lists every record the dead owner can have written.

// admission is one partition's side of the rule: snapshots of it taken for a commit, and the
// latest of them the coordinator accepted.
type admission struct {
	snap     uint64        // snapshots taken (commitSnap.seq of the latest)
	accepted uint64        // seq of the latest snapshot whose commit was accepted
	wake     chan struct{} // closed (and cleared) when a commit is accepted; nil: nobody waits
	// w and done are what the latest accepted commit states ended: below w, and the ranges.
	w    int64
	done []span
}

// gated reports whether records are written only once stated: the periodic commits list them.
// Off with hand-over statements (a negative HandoverSkew), with no hold and in the legacy drain,
// where nothing would read the list.
func (e *engine) gated() bool {
	cfg := e.cfg
	return cfg.HandoverSkew >= 0 && cfg.UncertainHold > 0 && !cfg.TestLegacyDrain
}

// admitter returns r's dispatcher.Task.Admit: nil when the rule is off. With
// Config.TestUngatedWrites the periodic commits still list what was written (taken connections
// and outcomes), but nothing waits for them, so a record written between two commits reads as
// never sent to a successor after a crash: a chaos suite proves its checker catches that.
func (e *engine) admitter(r *rec) func(context.Context) error {
	if !e.gated() || e.cfg.TestUngatedWrites {
		return nil
	}
	p, off := r.a.p, r.msg.Offset
	admitAt := uint64(0) // the first snapshot that lists r; 0 until asked (mu)
	var asked time.Time
	return func(ctx context.Context) error {
		for {
			e.mu.Lock()
			if admitAt == 0 {
				// Listed from now on, until r ends: snapshots to come take it in (mu held).
				admitAt = p.adm.snap + 1
				p.calls.markAdmitted(off)
				asked = e.cfg.Now()
			}
			if p.adm.accepted >= admitAt {
				e.mu.Unlock()
				if !asked.IsZero() {
					e.metrics().AdmitWait.Observe(e.cfg.Now().Sub(asked).Seconds())
					asked = time.Time{} // once per event
				}
				return nil
			}
			wake := p.adm.waiter()
			e.mu.Unlock()
			e.requestCommit()
			select {
			case <-wake:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
	}
}

// laneAdmitter returns the dispatcher.Task.Admit of a lane record copied from the main-topic
// record at src (nil when the rule is off or the copy names no source). The main record ended
// when it was forwarded or parked, without its own admission: its own call, if it made one, was
// admitted, but the copy's call is another. Until an accepted commit states the main record
// ended, a successor after a crash would read it as never sent (not listed), and dispatch it as
// certain, even after the lane applied the copy and unparked the account. So the copy's first
// write waits for an accepted commit snapshotted after the main record ended: it states it done
// (or, with no list, leaves it uncertain), and so does every commit after it.
func (e *engine) laneAdmitter(p *part, src int64) func(context.Context) error {
	if !e.laneGated(src) {
		return nil
	}
	admitAt := uint64(0) // 0 until the main record is seen ended (mu)
	admitted := false    // once admitted, the copy's later calls need nothing more (mu)
	return func(ctx context.Context) error {
		for {
			e.mu.Lock()
			if admitted || p.adm.states(src) {
				admitted = true
				e.mu.Unlock()
				return nil // stated already (the usual case: the copy is read well after)
			}
			if admitAt == 0 && p.mainEnded(src) {
				admitAt = p.adm.snap + 1
			}
			if admitAt != 0 && p.adm.accepted >= admitAt {
				admitted = true
				e.mu.Unlock()
				return nil
			}
			wake := p.adm.waiter()
			e.mu.Unlock()
			if admitAt != 0 {
				e.requestCommit()
			} // else: it ends within moments (laneHeadReady waited for the fetch to reach it)
			select {
			case <-wake:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
	}
}

// laneGated reports whether a lane copy of the main record at src waits for its statement
// (laneAdmitter). Config.TestUngatedLane turns that wait off alone.
func (e *engine) laneGated(src int64) bool {
	return e.gated() && !e.cfg.TestUngatedWrites && !e.cfg.TestUngatedLane && src >= 0
}

// mainEnded reports whether p's main-topic record at off has ended: in the tracker, or stated
// done by the inherited metadata ahead of the fetch, or lost with a truncated log (nothing of it
// is left at main to apply twice). mu held.
func (p *part) mainEnded(off int64) bool {
	if off < p.lostBelow {
		return true
	}
	if off < p.tr.next {
		return p.tr.ended(off)
	}
	return slices.ContainsFunc(p.done, func(s span) bool { return s.start <= off && off < s.end })
}

// states reports whether the latest accepted commit states the record at off ended. mu held.
func (a *admission) states(off int64) bool {
	return off < a.w || slices.ContainsFunc(a.done, func(s span) bool { return s.start <= off && off < s.end })
}

// waiter returns the channel the next accepted commit closes. mu held.
func (a *admission) waiter() <-chan struct{} {
	if a.wake == nil {
		a.wake = make(chan struct{})
	}
	return a.wake
}

// accept records that the commit of snapshot seq, stating watermark w and the ranges done above
// it, was accepted for p, waking the records waiting for it. mu held.
func (a *admission) accept(seq uint64, w int64, done []span) {
	a.w, a.done = w, done
	a.accepted = max(a.accepted, seq)
	if a.wake != nil {
		close(a.wake)
		a.wake = nil
	}
}
