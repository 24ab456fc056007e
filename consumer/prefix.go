package consumer

import (
	"cmp"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/dispatcher"
	"github.com/chatgroupd/chatgroupd/event"
)

// The applied prefix of an account's uncertain records (DESIGN.md, "Uncertain records of one
// account: the applied prefix"). The first uncertain record of an account to be dispatched
// carries all of the account's other uncertain records (Task.Prefix, Task.Later); the
// dispatcher's one look-up decides how many of them the previous owner applied, and the answer
// is applied here to the records still queued.

// scanWaitMax bounds how long an account waits for the fetch to bring the rest of its uncertain
// records: past it (the fetch can't get there: failing fetches, a slow broker), each record is
// checked on its own as before the scan existed.
const scanWaitMax = 5 * time.Second

// needsScan: r is uncertain, not a replay (a replay is always checked on its own), valid, and no
// earlier scan decided about it.
func (r *rec) needsScan() bool {
	return r.uncertain && r.replay == 0 && r.ev != nil && !r.scanned
}

// allFetched reports whether every record the previous owner may have dispatched has been
// fetched, so an account's queue holds all of its uncertain records. mu held.
func (p *part) allFetched() bool { return max(p.tr.next, p.fetchedTo) >= p.scanTo }

// scanWaits holds account a, whose next record is r, until its other uncertain records are
// fetched, unless the partition is full (nothing would make room) or the wait ran out. It
// reports whether a waits; ingest wakes it (releaseScans), or its timer at the wait's end. mu held.
func (e *engine) scanWaits(a *account, r *rec) bool {
	p := a.p
	if !r.needsScan() || p.allFetched() || e.full(p) {
		return false
	}
	now := e.cfg.Now()
	if p.scanUntil.IsZero() {
		p.scanUntil = now.Add(scanWaitMax)
	}
	if !now.Before(p.scanUntil) {
		return false
	}
	if !a.scanWaiting {
		a.scanWaiting = true
		p.scanWait = append(p.scanWait, a)
	}
	if a.timer == nil {
		a.timer = time.AfterFunc(p.scanUntil.Sub(now), func() {
			e.mu.Lock()
			a.timer = nil
			e.schedule(a)
			e.gc(a)
			e.mu.Unlock()
		})
	}
	return true
}

// releaseScans schedules the accounts waiting in scanWaits once the fetch has brought every
// uncertain record or the partition filled up. mu held.
func (e *engine) releaseScans(p *part) {
	if len(p.scanWait) == 0 || !(p.allFetched() || e.full(p)) {
		return
	}
	waiting := p.scanWait
	p.scanWait = nil
	for _, a := range waiting {
		a.scanWaiting = false
		e.schedule(a)
	}
}

// prefixTask fills t's prefix scan for r, the first of its account's uncertain records to be
// dispatched, when the account's queue holds all the others: it returns them, in the order
// they run (by seq; the queue's order for records without one). With the records not all
// fetched it returns nil and r is checked on its own. mu held.
func (e *engine) prefixTask(r *rec, t *dispatcher.Task) []*rec {
	if !r.needsScan() || !r.a.p.allFetched() {
		return nil
	}
	var later []*rec
	creates := r.ev.EventType == event.TypeContactGroupCreated
	for _, q := range r.a.q {
		if q.needsScan() {
			later = append(later, q)
			creates = creates && q.ev.EventType == event.TypeContactGroupCreated
		}
	}
	if creates {
		// Creates never hide each other's effect: each is checked on its own, as in contract v1.
		r.scanned = true
		for _, q := range later {
			q.scanned = true
		}
		return nil
	}
	if !slices.ContainsFunc(later, func(q *rec) bool { return q.seq() == 0 }) {
		slices.SortStableFunc(later, func(x, y *rec) int { return cmp.Compare(x.seq(), y.seq()) })
	}
	t.Prefix = true
	t.Later = make([]*event.Event, len(later))
	for i, q := range later {
		t.Later[i] = q.ev
	}
	return later
}

// applyPrefix applies a scan's decision to the records after the scanned one: inside the
// applied prefix they end as applied with no call; the prefix's last is checked on its own
// (it may be only partly applied); after it they are not applied and are sent without a check.
// mu held.
func (e *engine) applyPrefix(r *rec, later []*rec, out dispatcher.Outcome) {
	r.scanned = true
	for _, q := range later {
		// Decided, or (no scan: only creates, or the look-up ended the record) each is checked
		// on its own; either way no record asks again, which would cost a pass over the queue
		// per record.
		q.scanned = true
	}
	if !out.Scanned {
		return
	}
	for i, q := range later {
		switch pos := i + 1; {
		case pos < out.Prefix-1:
			q.settled = true
		case pos >= out.Prefix:
			q.uncertain = false
		}
	}
	if len(later) > 0 {
		e.cfg.Logger.Debug("uncertain records settled by one look-up", zap.String("account", r.a.name),
			zap.Int("records", len(later)+1), zap.Int("applied_before", out.Prefix))
	}
}
