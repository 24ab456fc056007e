package consumer

import (
	"context"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/dlq"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// ingest hands one live record to the engine. It returns false when the engine stopped.
func (e *engine) ingest(ctx context.Context, p *part, m kafka.Message) bool {
	cfg := e.cfg
	now := cfg.Now()
	ev, verr := event.Parse(m.Value)
	ev, verr = e.c.keys.check(m, ev, verr)
	replay := replayCount(m.Headers)
	var key uint64
	name := string(m.Key)
	if ev != nil {
		key = e.c.hash.id(ev.EventID, replay)
		name = ev.FromAccount
	}
	cfg.Metrics.EventsConsumed.Inc()
	e.c.route.check(cfg, m)

	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopping {
		return false
	}
	off := m.Offset
	completed := p.popDone(off)
	if completed || (key != 0 && p.win.has(key)) {
		e.endAtOnce(p, off, now, completed, key, name, ev)
		// Ended at once, but tracked until the watermark passes it: it counts toward the
		// fetch bound like any record, or a stuck watermark lets the tracker grow without end.
		return e.waitSpace(ctx, p)
	}
	a := p.accounts[name]
	if a == nil {
		h := e.c.hash.account(name)
		a = &account{name: name, hash: h, p: p, lastSeq: p.win.lastSeq(h)}
		p.accounts[name] = a
	}
	r := &rec{msg: m, ev: ev, verr: verr, key: key, replay: replay, arrived: now, a: a,
		uncertain: p.hasPrev && off < p.inherited && p.prev.mayHave(off)}
	if r.uncertain && now.Before(p.hold.main) {
		a.heldUntil = p.hold.main
	}
	r.idx = p.tr.add(off, now.UnixNano(), a)
	if key != 0 {
		if orig := p.pending[key]; orig != nil {
			// The same event is queued or in flight: end this copy with it, never run it twice.
			orig.dups = append(orig.dups, r.idx)
			return e.waitSpace(ctx, p)
		}
		p.pending[key] = r
	}
	p.bytes += r.size()
	a.q = append(a.q, r)
	e.schedule(a)
	return e.waitSpace(ctx, p)
}

// endAtOnce ends a record that needs no dispatch: completed (the inherited metadata says it
// ended) or a duplicate of one the dedupe window remembers. mu held.
func (e *engine) endAtOnce(p *part, off int64, now time.Time, completed bool, key uint64, name string, ev *event.Event) {
	idx := p.tr.add(off, now.UnixNano(), nil)
	e.endIdx(p, idx)
	if !completed {
		e.outcomes.inc(metrics.OutcomeDuplicate, ev, nil)
		return
	}
	if ev == nil {
		return
	}
	before := p.win.len()
	p.win.add(key, e.c.hash.account(name), ev.Seq)
	e.cfg.Metrics.DedupeEntries.Add(float64(p.win.len() - before))
	if a := p.accounts[name]; a != nil {
		a.lastSeq = max(a.lastSeq, ev.Seq)
	}
}

// waitSpace blocks the fetch while the partition is full. mu held.
func (e *engine) waitSpace(ctx context.Context, p *part) bool {
	if !e.full(p) {
		return true
	}
	log := e.cfg.Logger
	start := time.Now()
	logged := false
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for e.full(p) && !e.stopping {
		e.mu.Unlock()
		long := false
		select {
		case <-p.space:
		case <-ctx.Done():
		case <-tick.C:
			long = true
		}
		e.mu.Lock()
		if ctx.Err() != nil {
			return false
		}
		if long && !logged {
			// Brief pauses are the normal rhythm of a backlog; only a long one is news.
			logged = true
			log.Info("fetch paused: partition buffer full", zap.Int("partition", p.id),
				zap.Int("unended", p.tr.unended), zap.Int("tracked", len(p.tr.ents)), zap.Int64("watermark", p.tr.watermark()))
		}
	}
	if logged {
		log.Info("fetch resumed", zap.Int("partition", p.id), zap.Duration("paused", time.Since(start)))
	}
	return !e.stopping
}

// popDone reports whether off is in the completed ranges inherited from the metadata. Offsets
// arrive in increasing order, so passed ranges are dropped.
func (p *part) popDone(off int64) bool {
	for len(p.done) > 0 && p.done[0].end <= off {
		p.done = p.done[1:]
	}
	return len(p.done) > 0 && p.done[0].start <= off
}

// replayCount is the trusted replay-count of a record: the one dlq.Record writes into
// dlq-replay-count, read by the same function from the same headers.
func replayCount(hs []kafka.Header) int { return dlq.ReplayCount(hs) }
