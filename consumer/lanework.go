package consumer

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/dispatcher"
)

// laneWake starts the account's lane worker when it has work and none runs. mu held.
func (e *engine) laneWake(p *part, la *laneAcct) {
	if la.worker || e.stopping || !p.lane.loaded {
		return
	}
	if len(la.q) == 0 && !la.left && !e.laneCanUnpark(p, la) {
		return
	}
	la.worker = true
	e.runners.Add(1)
	go e.laneWork(p, la)
}

// laneCanUnpark: nothing of the account is left in the lane or on its way there. mu held.
func (e *engine) laneCanUnpark(p *part, la *laneAcct) bool {
	return len(la.q) == 0 && !la.left && la.forwarding == 0 && la.lastProd < p.lane.readPos && !la.unparking
}

// laneWork drives a parked account's lane records one at a time, in lane order, then unparks it.
func (e *engine) laneWork(p *part, la *laneAcct) {
	defer e.runners.Done()
	e.mu.Lock()
	defer e.mu.Unlock()
	for !e.stopping {
		if len(la.q) == 0 && la.left {
			e.mu.Unlock()
			ok := e.laneRefill(p, la)
			e.mu.Lock()
			if !ok {
				break
			}
			continue
		}
		if len(la.q) == 0 {
			if !e.laneCanUnpark(p, la) {
				break
			}
			if !e.unpark(p, la) {
				e.mu.Unlock()
				ok := sleepCtx(e.claim, time.Second)
				e.mu.Lock()
				if !ok {
					break
				}
				continue
			}
			break
		}
		r := la.q[0]
		if ready, ok := e.laneHeadReady(p, la, r); !ok {
			break
		} else if !ready {
			continue
		}
		e.inflight++
		e.mu.Unlock()
		ended := e.laneDispatch(p, r)
		e.mu.Lock()
		e.inflight--
		if e.inflight == 0 {
			e.idle.Broadcast()
		}
		if !ended {
			break
		}
		la.q[0] = nil
		la.q = la.q[1:]
		la.qBytes -= len(r.msg.Value)
		la.lastEnded = max(la.lastEnded, r.msg.Offset)
		if r.ev != nil {
			la.end.add(r.ev, r.msg.Offset)
		}
		delete(p.lane.unended, r.msg.Offset)
	}
	la.worker = false
}

// laneHeadReady reports whether la's head r may be dispatched now. When not, it has waited (mu
// released) for the previous owner's calls or written the marker the head waits for; ok false:
// the generation ended meanwhile. mu held.
func (e *engine) laneHeadReady(p *part, la *laneAcct, r *laneRec) (ready, ok bool) {
	wait := p.hold.lane.Sub(e.cfg.Now()) // a call of the previous owner may still run (prevHold)
	if wait <= 0 && e.laneGated(r.srcOff) && !p.mainEnded(r.srcOff) {
		// Its main record has not ended here yet (the fetch has not reached it): the copy's
		// admission would wait for that holding a rate-limit grant (admit.go), so wait here.
		wait = 50 * time.Millisecond
	}
	if wait <= 0 && la.end.needsStatement(r.ev) && !e.cfg.TestUnstatedEnds && !e.laneStateEnded(p, la) {
		wait = time.Second // the marker's write failed: try again
	}
	if wait <= 0 {
		return !la.end.needsStatement(r.ev) || e.cfg.TestUnstatedEnds, true
	}
	e.mu.Unlock()
	ok = sleepCtx(e.claim, wait)
	e.mu.Lock()
	return false, ok
}

// laneStateEnded writes a marker stating the account's lane records up to its last ended one
// ended, before its next record may be dispatched (stated.go). A reader takes it like an unpark
// marker: the records up to it are dropped as ended, and an account with nothing left in the lane
// is no longer parked, which is then the truth. mu held (released while writing). False: the
// write failed.
func (e *engine) laneStateEnded(p *part, la *laneAcct) bool {
	through := []byte(strconv.FormatInt(la.lastEnded, 10))
	e.mu.Unlock()
	_, err := e.laneProduce(e.dctx, p.id, []byte(la.name), nil, []kafka.Header{{Key: laneHdrUnpark, Value: through}}, e.cfg.Now())
	e.mu.Lock()
	if err != nil {
		e.cfg.Logger.Warn("retry lane: ended marker failed; retrying", zap.Int("partition", p.id), zap.String("account", la.name), zap.Error(err))
		return false
	}
	la.end = unstatedEnd{}
	return true
}

// unpark writes the account's unpark marker and forgets it was parked; its main-topic events
// dispatch as usual from then on. mu held (released while writing). False: write failed.
func (e *engine) unpark(p *part, la *laneAcct) bool {
	la.unparking = true
	e.mu.Unlock()
	// The marker names the last record known ended rather than "everything before me": a record
	// another writer (a fenced former owner) put in between must not be taken as ended.
	through := []byte(strconv.FormatInt(la.lastEnded, 10))
	off, err := e.laneProduce(e.dctx, p.id, []byte(la.name), nil, []kafka.Header{{Key: laneHdrUnpark, Value: through}}, e.cfg.Now())
	e.mu.Lock()
	la.unparking = false
	e.laneCond.Broadcast()
	if err != nil {
		e.cfg.Logger.Warn("retry lane: unpark marker failed; retrying", zap.Int("partition", p.id), zap.String("account", la.name), zap.Error(err))
		return false
	}
	if len(la.q) > 0 || la.left || la.forwarding > 0 || la.lastProd > off {
		return true // more arrived meanwhile: the account stays parked, the worker goes on
	}
	delete(p.lane.accts, la.name)
	ps := strconv.Itoa(p.id)
	e.metrics().LaneUnparks.WithLabelValues("drained").Inc()
	e.metrics().LaneParked.WithLabelValues(e.cfg.Topic, ps).Set(float64(len(p.lane.accts)))
	e.cfg.Logger.Info("account unparked: the retry lane holds nothing more of it", zap.Int("partition", p.id),
		zap.String("account", la.name), zap.Duration("parked_for", e.cfg.Now().Sub(la.since)))
	if a := p.accounts[la.name]; a != nil {
		e.schedule(a)
	}
	return true
}

// laneDispatch drives one lane record to its end exactly as the main path would, with an
// existence check first (it may have been applied before a crash) and the retry budget counted
// from its first dispatch. False: the generation ended first.
func (e *engine) laneDispatch(p *part, r *laneRec) bool {
	ctx := e.dctx
	src := r.msg
	src.Topic, src.Partition, src.Offset = e.cfg.Topic, p.id, r.srcOff
	src.Key = nil
	if k, ok := hdr(r.msg.Headers, laneHdrSrcKey); ok {
		src.Key = []byte(k)
	}
	src.Headers = nil
	for _, h := range r.msg.Headers {
		if !strings.HasPrefix(h.Key, laneHdrPrefix) {
			src.Headers = append(src.Headers, h)
		}
	}
	dr := &rec{msg: src, ev: r.ev, verr: r.verr, replay: r.replay}
	if r.ev == nil {
		return e.deadLetterInvalid(ctx, dr)
	}
	var lease func() bool
	if !e.cfg.TestLegacyDrain {
		lease = e.leased
	}
	admit := e.laneAdmitter(p, r.srcOff)
	var out dispatcher.Outcome
	for {
		var err error
		tctx, traced := p.calls.trace(ctx, e.cfg.UncertainHold, e.cfg.Now, -1)
		out, err = e.cfg.Dispatcher.Dispatch(tctx, dispatcher.Task{
			Event: r.ev, ReplayCount: r.replay, Uncertain: true, RecordTime: src.Time, Drain: e.claim, RetryStart: r.start,
			Lease: lease, Admit: admit,
		})
		traced()
		if err == nil {
			break
		}
		if ctx.Err() != nil || e.claim.Err() != nil || errors.Is(err, dispatcher.ErrDrained) {
			return false
		}
		e.cfg.Logger.Error("lane dispatch failed without an outcome; retrying", zap.Int("partition", p.id),
			zap.Int64("lane_offset", r.msg.Offset), zap.Error(err))
		if !sleepCtx(e.claim, time.Second) {
			return false
		}
	}
	return e.finish(ctx, dr, out, r.attempts)
}

// laneCommits returns each loaded lane partition's position to commit (the first lane record
// not ended, or the read position) and updates the lane gauges. mu held.
func (e *engine) laneCommits() []kafka.OffsetCommit {
	if !e.cfg.RetryLane {
		return nil
	}
	now := e.cfg.Now()
	var out []kafka.OffsetCommit
	for _, p := range e.parts {
		lp := p.lane
		if lp == nil || !lp.commitOK {
			continue
		}
		w := lp.readPos
		depth := len(lp.unended)
		for _, la := range lp.accts {
			if la.left {
				w = min(w, la.skipFrom) // read, not held, not ended
				depth += la.skipped
			}
		}
		var oldest time.Time
		for off, r := range lp.unended {
			w = min(w, off)
			t := r.start
			if t.IsZero() {
				t = r.msg.Time
			}
			if !t.IsZero() && (oldest.IsZero() || t.Before(oldest)) {
				oldest = t
			}
		}
		ps := strconv.Itoa(p.id)
		m := e.metrics()
		m.LaneDepth.WithLabelValues(e.cfg.Topic, ps).Set(float64(depth))
		age := 0.0
		if !oldest.IsZero() {
			age = now.Sub(oldest).Seconds()
		}
		m.LaneOldest.WithLabelValues(e.cfg.Topic, ps).Set(age)
		m.LaneParked.WithLabelValues(e.cfg.Topic, ps).Set(float64(len(lp.accts)))
		out = append(out, kafka.OffsetCommit{Partition: p.id, Offset: w})
	}
	slices.SortFunc(out, func(a, b kafka.OffsetCommit) int { return a.Partition - b.Partition })
	return out
}
