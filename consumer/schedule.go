package consumer

import "time"

// eligible: r may run now without breaking seq order. s-1 rather than lastSeq+1: a seq of
// 2^63-1 must not overflow into "everything later waits".
func (a *account) eligible(r *rec) bool {
	s := r.seq()
	switch {
	case s == 0:
		return true
	case a.lastSeq == 0:
		return s == 1
	default:
		return s-1 <= a.lastSeq
	}
}

// pick chooses the account's next record, or returns the time to look again. A record without
// seq keeps its place in arrival order: it never overtakes an earlier record waiting for its
// seq gap to fill.
func (e *engine) pick(a *account) (int, time.Time) {
	if len(a.q) == 0 {
		return -1, time.Time{}
	}
	if now := e.cfg.Now(); now.Before(a.heldUntil) {
		// A call of the previous owner for this account may still be running: wait it out
		// with every record of the account, so order is kept too.
		return -1, a.heldUntil
	}
	waiting := false // an earlier record is still held back by its seq
	for i, r := range a.q {
		if r.seq() == 0 && waiting {
			continue
		}
		if a.eligible(r) {
			return i, time.Time{}
		}
		waiting = true
	}
	deadline := a.q[0].arrived.Add(e.cfg.ReorderWindow)
	if e.cfg.Now().Before(deadline) {
		return -1, deadline
	}
	// The wait is over: the lowest seq goes next (records without seq wait their turn).
	best := -1
	for i, r := range a.q {
		if s := r.seq(); s > 0 && (best < 0 || s < a.q[best].seq()) {
			best = i
		}
	}
	if a.lastSeq > 0 {
		e.metrics().SeqGaps.Inc()
	}
	return best, time.Time{}
}

// schedule makes a runnable if it has a record that may run. Called with mu held.
func (e *engine) schedule(a *account) {
	if a.running != nil || a.queued || a.blocked || a.halted || e.stopping {
		return
	}
	i, wait := e.pick(a)
	if i < 0 {
		if !wait.IsZero() && a.timer == nil {
			a.timer = time.AfterFunc(wait.Sub(e.cfg.Now()), func() {
				e.mu.Lock()
				a.timer = nil
				e.schedule(a)
				e.gc(a)
				e.mu.Unlock()
			})
		}
		return
	}
	r := a.q[i]
	p := a.p
	off := r.msg.Offset
	if off >= p.hz.committed {
		p.hz.want = max(p.hz.want, off+1)
		a.blocked = true
		p.hblocked = append(p.hblocked, a)
		e.requestCommit()
		return
	}
	if a.end.needsStatement(r.ev) && !e.cfg.TestUnstatedEnds {
		e.waitStatement(a)
		return
	}
	if e.pressured(p) && a != e.frontAccount(p) {
		e.blockPressured(p, a)
		return
	}
	if off+p.hz.ext/2 >= p.hz.committed {
		e.requestCommit()
	}
	if i == 0 {
		a.q[0] = nil
		a.q = a.q[1:]
	} else {
		a.q = append(a.q[:i], a.q[i+1:]...)
	}
	if s := r.seq(); s > 0 && a.lastSeq > 0 && s <= a.lastSeq {
		e.metrics().LateEvents.Inc()
	}
	p.hz.maxPicked = max(p.hz.maxPicked, off)
	p.hz.picked++
	p.inflight++ // from now on it may end out of order
	a.next = r
	a.queued = true
	if e.running < e.cfg.MaxInFlight && len(e.ready) == 0 {
		e.running++
		e.runners.Add(1)
		go e.run(a)
		return
	}
	e.ready = append(e.ready, a)
}

// blockPressured makes a wait until the metadata pressure of p eases. mu held.
func (e *engine) blockPressured(p *part, a *account) {
	a.blocked = true
	p.blocked = append(p.blocked, a)
	if fa := e.frontAccount(p); fa != nil && fa.parkNow != nil && !fa.parkAsked {
		// The account holding the watermark keeps the others waiting: if its event is
		// failing transiently, park it now rather than at its stall limit.
		fa.parkAsked = true
		fa.parkNow()
	}
}

// unblock re-schedules the accounts of list (p.blocked or p.hblocked). Called with mu held.
func (e *engine) unblock(list *[]*account) {
	bl := *list
	*list = nil
	for _, a := range bl {
		a.blocked = false
	}
	for _, a := range bl {
		e.schedule(a)
	}
}

func (e *engine) requestCommit() {
	select {
	case e.commitNow <- struct{}{}:
	default:
	}
}

// pressured: the metadata could outgrow its limit if every record in flight ended out of order.
func (e *engine) pressured(p *part) bool {
	return p.metaPressured(p.inflight+1, e.cfg.MetadataMaxBytes)
}

// frontAccount is the account holding the partition's watermark record, the one that must be
// allowed to run under metadata pressure so the watermark can move.
func (e *engine) frontAccount(p *part) *account {
	if len(p.tr.ents) == 0 {
		return nil
	}
	return p.tr.ents[0].owner
}

// gc forgets an account with nothing left to do. Called with mu held.
func (e *engine) gc(a *account) {
	if len(a.q) == 0 && a.running == nil && !a.queued && !a.blocked && a.timer == nil && !a.halted && !a.end.pending {
		if a.p.accounts[a.name] == a {
			delete(a.p.accounts, a.name)
		}
	}
}
