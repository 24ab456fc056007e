package consumer

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/dispatcher"
)

// run drives accounts' records on one goroutine: it starts with a, and when a has nothing more
// to run takes the next ready account, ending when none is ready. At most MaxInFlight run at once;
// spawning on demand instead of keeping idle workers means no herd contends for the lock.
func (e *engine) run(a *account) {
	defer e.runners.Done()
	e.mu.Lock()
	for {
		r := a.next
		a.next, a.queued, a.running = nil, false, r
		e.inflight++
		e.metrics().InFlight.Inc()
		e.mu.Unlock()

		ended := e.process(r)

		e.mu.Lock()
		a.running = nil
		a.p.inflight--
		e.inflight--
		e.metrics().InFlight.Dec()
		if ended {
			e.endRec(r)
			e.ended(a, r)
		} else {
			a.halted = true
		}
		if e.inflight == 0 {
			e.idle.Broadcast()
		}
		e.running--
		e.schedule(a) // back of the ready queue if it has more, for fairness
		e.gc(a)
		if e.stopping || len(e.ready) == 0 {
			e.mu.Unlock()
			return
		}
		a = e.ready[0]
		e.ready[0] = nil
		e.ready = e.ready[1:]
		e.running++
	}
}

// process drives one record to its end; false means it did not end (the generation is ending).
func (e *engine) process(r *rec) bool {
	ctx := e.dctx
	if e.cfg.RetryLane {
		if handled, ended := e.laneProcess(r); handled {
			return ended
		}
	}
	if r.ev == nil {
		return e.deadLetterInvalid(ctx, r)
	}
	var lease func() bool
	if !e.cfg.TestLegacyDrain {
		lease = e.leased
	}
	var parkNow context.Context
	if e.cfg.RetryLane {
		var cancel context.CancelFunc
		parkNow, cancel = context.WithCancel(context.Background())
		e.mu.Lock()
		r.a.parkNow, r.a.parkAsked = cancel, false
		e.mu.Unlock()
		defer func() {
			e.mu.Lock()
			r.a.parkNow = nil
			e.mu.Unlock()
			cancel()
		}()
	}
	admit := e.admitter(r)
	var out dispatcher.Outcome
	for {
		var err error
		tctx, traced := r.a.p.calls.trace(ctx, e.cfg.UncertainHold, e.cfg.Now, r.msg.Offset)
		out, err = e.cfg.Dispatcher.Dispatch(tctx, dispatcher.Task{
			Event: r.ev, ReplayCount: r.replay, Uncertain: r.uncertain, RecordTime: r.msg.Time, Drain: e.claim,
			Lease: lease, Admit: admit, StallLimit: e.stallLimit(), ParkNow: parkNow,
		})
		traced()
		if err == nil {
			// An outcome (even one with no request seen) counts as sent until the record ends.
			r.a.p.calls.markSent(r.msg.Offset)
			break
		}
		if ctx.Err() != nil || e.claim.Err() != nil {
			return false
		}
		// Outside shutdown a Dispatcher should never fail; don't lose the record over it. The
		// failed call may have created the group, so the retry checks first.
		r.uncertain = true
		e.cfg.Logger.Error("dispatch failed without an outcome; retrying",
			zap.Int("partition", r.msg.Partition), zap.Int64("offset", r.msg.Offset), zap.Error(err))
		if !sleepCtx(e.claim, time.Second) {
			return false
		}
	}
	if out.Result == dispatcher.Stalled && e.cfg.RetryLane {
		return e.park(r, out)
	}
	return e.finish(ctx, r, out, 0)
}

// stallLimit is the Task.StallLimit: only with the retry lane on (without it an event retries
// until its budget is spent, holding its account and, past the metadata bounds, its partition).
func (e *engine) stallLimit() time.Duration {
	if !e.cfg.RetryLane {
		return 0
	}
	return e.cfg.AccountStallLimit
}
