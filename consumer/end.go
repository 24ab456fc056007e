package consumer

import (
	"context"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/dispatcher"
	"github.com/chatgroupd/chatgroupd/dlq"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// finish ends r with the dispatcher's outcome: counted when applied, else dead-lettered. prior
// is the API calls made for it before (in the main topic, before it moved to the retry lane).
func (e *engine) finish(ctx context.Context, r *rec, out dispatcher.Outcome, prior int) bool {
	if out.Result == dispatcher.Applied {
		t := r.ev.OccurredAt
		if t.IsZero() {
			t = r.msg.Time
		}
		e.outcomes.applied(r.ev, e.cfg.Now().Sub(t).Seconds(), !t.IsZero())
		return true
	}
	reason := out.Result.String() // rejected, partial, exhausted: the dlq reasons and outcome labels
	if !knownOutcome(reason) {
		e.cfg.Logger.Error("dispatcher returned an unknown result; dead-lettering as rejected",
			zap.Int("result", int(out.Result)), zap.Int64("offset", r.msg.Offset))
		reason = dlq.ReasonRejected
	}
	l := dlq.Letter{
		Reason: reason, Code: out.Code, Info: out.Info, Attempts: prior + out.Attempts,
		EventID: r.ev.EventID, FromAccount: r.ev.FromAccount, ReplayCount: r.replay, Result: out.Detail,
	}
	if !e.deadLetter(ctx, r, l) {
		return false
	}
	e.outcomes.inc(reason, r.ev, r.msg.Value)
	return true
}

// deadLetterInvalid ends a record that failed validation with its dead letter; false when the
// letter could not be written (the record stays unended).
func (e *engine) deadLetterInvalid(ctx context.Context, r *rec) bool {
	l := dlq.Letter{Reason: dlq.ReasonInvalid, Info: r.verr.Error(), ReplayCount: r.replay}
	if !e.deadLetter(ctx, r, l) {
		return false
	}
	e.outcomes.inc(metrics.OutcomeInvalid, nil, r.msg.Value)
	return true
}

// deadLetter writes l until Kafka acknowledges it. Until then the account and the watermark wait:
// a record must never be committed past before its dead letter is durable.
func (e *engine) deadLetter(ctx context.Context, r *rec, l dlq.Letter) bool {
	backoff := 100 * time.Millisecond
	failed := false
	defer func() {
		if failed {
			e.c.dlqH.done(r.msg.Partition)
		}
	}()
	for attempt := 1; ; attempt++ {
		err := e.cfg.DeadLetterer.DeadLetter(ctx, r.msg, l)
		if err == nil {
			return true // the DeadLetterer logs the one line per dead letter
		}
		if ctx.Err() != nil {
			return false
		}
		e.c.dlqH.failing(r.msg.Partition, err, !failed, e.cfg.Now())
		failed = true
		e.cfg.Logger.Warn("dead letter failed; retrying, partition blocked behind it",
			zap.Int("partition", r.msg.Partition), zap.Int64("offset", r.msg.Offset),
			zap.Int("attempt", attempt), zap.Error(err))
		if !sleepCtx(e.claim, backoff) { // no new attempt once the generation ended
			return false
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// endRec records that r ended (applied or dead-lettered). Called with mu held.
func (e *engine) endRec(r *rec) {
	p := r.a.p
	full := e.full(p)
	p.bytes -= r.size()
	if full && !e.full(p) {
		e.signalSpace(p)
	}
	e.endIdx(p, r.idx)
	p.calls.forget(r.msg.Offset) // done now: no list needs it
	for _, d := range r.dups {
		e.endIdx(p, d)
		e.outcomes.inc(metrics.OutcomeDuplicate, r.ev, r.msg.Value)
	}
	r.dups = nil
	if r.key != 0 {
		if p.pending[r.key] == r {
			delete(p.pending, r.key)
		}
	}
	if r.ev != nil {
		before := p.win.len()
		p.win.add(r.key, r.a.hash, r.ev.Seq)
		if d := p.win.len() - before; d != 0 {
			e.metrics().DedupeEntries.Add(float64(d))
		}
		r.a.lastSeq = max(r.a.lastSeq, r.ev.Seq)
	}
}

// full: the partition's fetch must pause. Unended records are bounded by MaxBuffered, and so
// are ended ones held above a stuck watermark (4×), or a record whose dead letter never succeeds
// would let the tracker grow without end.
func (e *engine) full(p *part) bool {
	return p.tr.unended >= e.cfg.MaxBuffered || len(p.tr.ents) >= 4*e.cfg.MaxBuffered ||
		p.bytes >= e.cfg.MaxBufferedBytes
}

func (e *engine) signalSpace(p *part) {
	select {
	case p.space <- struct{}{}:
	default:
	}
}

// endIdx ends one tracker entry and releases fetch and metadata back-pressure. mu held.
func (e *engine) endIdx(p *part, idx uint64) {
	full := e.full(p)
	p.tr.end(idx)
	if full && !e.full(p) {
		e.signalSpace(p)
	}
	if len(p.blocked) == 0 {
		return
	}
	if !e.pressured(p) {
		e.unblock(&p.blocked)
		return
	}
	// Still pressured: the account now holding the watermark must run, or nothing moves.
	if fa := e.frontAccount(p); fa != nil && fa.blocked {
		if i := slices.Index(p.blocked, fa); i >= 0 {
			p.blocked = slices.Delete(p.blocked, i, i+1)
		}
		fa.blocked = false
		e.schedule(fa)
	}
}

// stop takes no new work: drops what is queued but not started, stops timers. mu held.
func (e *engine) stop() {
	e.stopping = true
	for _, a := range e.ready {
		a.queued, a.next = false, nil
		a.p.inflight--
	}
	e.ready = nil
	for _, p := range e.parts {
		for _, a := range p.accounts {
			if a.timer != nil {
				a.timer.Stop()
				a.timer = nil
			}
		}
		select {
		case p.space <- struct{}{}:
		default:
		}
	}
	e.idle.Broadcast()
	e.laneCond.Broadcast()
}
