package consumer

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// laneLoad reads partition p's lane from its committed position to the end it has now, so every
// parked account is known before the main partition is fetched. False: ctx ended.
func (e *engine) laneLoad(ctx context.Context, p *part) (*fetcher, bool) {
	cfg := e.cfg
	lt := cfg.laneTopic()
	start, end, ok := e.laneRange(ctx, p)
	if !ok {
		return nil, false
	}
	f := &fetcher{rt: cmpRT(cfg.Transport), addr: kafka.TCP(cfg.Brokers...), topic: lt, part: p.id,
		next: start, maxWait: 100 * time.Millisecond, maxBytes: 4 << 20}
	e.mu.Lock()
	p.lane.readPos = start
	e.mu.Unlock()
	for f.next < end {
		msgs, err := f.fetch(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, false
			}
			cfg.Logger.Warn("retry lane: fetch failed, retrying", zap.Int("partition", p.id), zap.Error(err))
			if !sleepCtx(ctx, time.Second) {
				return nil, false
			}
			continue
		}
		e.mu.Lock()
		for _, m := range msgs {
			e.laneIngest(p, m)
		}
		p.lane.readPos = max(p.lane.readPos, f.next)
		e.mu.Unlock()
	}
	e.laneLoaded(p, start, end)
	return f, true
}

// laneRange returns partition p's lane bounds (laneBounds), retrying until they are read. False:
// ctx ended.
func (e *engine) laneRange(ctx context.Context, p *part) (start, end int64, ok bool) {
	for {
		start, end, err := e.laneBounds(ctx, p.id)
		if err == nil {
			return start, end, true
		}
		if ctx.Err() != nil {
			return 0, 0, false
		}
		e.cfg.Logger.Warn("retry lane: reading its position failed; the partition waits", zap.Int("partition", p.id),
			zap.String("lane", e.cfg.laneTopic()), zap.Error(err))
		if !sleepCtx(ctx, time.Second) {
			return 0, 0, false
		}
	}
}

// laneLoaded marks partition p's lane loaded (read from start to end): the lane's heads wait for
// the previous owner's calls, and every parked account's worker may start.
func (e *engine) laneLoaded(p *part, start, end int64) {
	cfg := e.cfg
	e.mu.Lock()
	lp := p.lane
	if len(lp.unended) > 0 && p.hold.until.After(cfg.Now()) {
		// A lane worker of the previous owner may still have a call of a head running.
		p.hold.lane = p.hold.until
		cfg.Logger.Info("retry lane loaded: its heads wait for the previous owner's calls", zap.Int("partition", p.id),
			zap.Duration("hold", p.hold.lane.Sub(cfg.Now())))
	}
	lp.loaded, lp.commitOK = true, true
	names := make([]string, 0, len(lp.accts))
	for name, la := range lp.accts {
		names = append(names, name)
		e.laneWake(p, la)
	}
	e.metrics().LaneParked.WithLabelValues(cfg.Topic, strconv.Itoa(p.id)).Set(float64(len(lp.accts)))
	e.mu.Unlock()
	if len(names) > 0 {
		slices.Sort(names)
		cfg.Logger.Info("retry lane loaded: accounts parked", zap.Int("partition", p.id), zap.Int64("from", start),
			zap.Int64("to", end), zap.Strings("accounts", names))
	}
}

func cmpRT(rt kafka.RoundTripper) kafka.RoundTripper {
	if rt == nil {
		return kafka.DefaultTransport
	}
	return rt
}

// laneBounds returns where partition id's lane is read from (its committed offset, else the log
// start) and its end.
func (e *engine) laneBounds(ctx context.Context, id int) (int64, int64, error) {
	cfg := e.cfg
	lt := cfg.laneTopic()
	of, err := e.c.client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: cfg.GroupID, Topics: map[string][]int{lt: {id}}})
	if err == nil && of.Error != nil {
		err = of.Error
	}
	if err != nil {
		return 0, 0, fmt.Errorf("offset fetch: %w", err)
	}
	committed := int64(-1)
	for _, p := range of.Topics[lt] {
		if p.Error != nil {
			return 0, 0, fmt.Errorf("offset fetch: %w", p.Error)
		}
		committed = p.CommittedOffset
	}
	lo, err := e.c.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
		lt: {kafka.FirstOffsetOf(id), kafka.LastOffsetOf(id)}}})
	if err != nil {
		return 0, 0, fmt.Errorf("list offsets: %w", err)
	}
	bs := lo.Topics[lt]
	if len(bs) == 0 {
		return 0, 0, fmt.Errorf("list offsets: no answer for %s/%d", lt, id)
	}
	b := bs[0]
	if b.Error != nil {
		return 0, 0, fmt.Errorf("list offsets %s: %w", lt, b.Error)
	}
	if committed >= 0 && committed < b.FirstOffset {
		// Retention (or a tool) deleted lane records before they ended: they can't be retried.
		cfg.Logger.Error("retry lane: records deleted before they ended; give the lane topic a longer retention than --retry-budget",
			zap.String("lane", lt), zap.Int("partition", id), zap.Int64("committed", committed), zap.Int64("log_start", b.FirstOffset))
	}
	start := max(committed, b.FirstOffset)
	if committed > b.LastOffset {
		start = b.LastOffset
	}
	return start, b.LastOffset, nil
}

// laneTail keeps reading the lane after the load: records this member forwards come back here.
func (e *engine) laneTail(ctx context.Context, p *part, f *fetcher) {
	for {
		msgs, err := f.fetch(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			e.cfg.Logger.Warn("retry lane: fetch failed, retrying", zap.Int("partition", p.id), zap.Error(err))
			if !sleepCtx(ctx, time.Second) {
				return
			}
			continue
		}
		e.mu.Lock()
		for _, m := range msgs {
			e.laneIngest(p, m)
		}
		p.lane.readPos = max(p.lane.readPos, f.next)
		for _, la := range p.lane.accts {
			e.laneWake(p, la)
		}
		e.mu.Unlock()
	}
}

// laneIngest takes one lane record. mu held.
func (e *engine) laneIngest(p *part, m kafka.Message) {
	lp := p.lane
	name := string(m.Key)
	if v, ok := hdr(m.Headers, laneHdrUnpark); ok {
		if la := lp.accts[name]; la != nil {
			laneMarker(lp, la, markerThrough(v, m.Offset))
		}
		return
	}
	r := e.laneParse(m)
	la := lp.accts[name]
	if la == nil {
		// Parked by a previous owner (load), or re-parked here after an unpark.
		la = newLaneAcct(name, parkStall, e.cfg.Now())
		if !r.start.IsZero() {
			la.since = r.start
		}
		lp.accts[name] = la
	}
	if r.key != 0 {
		if first, ok := la.seen[r.key]; ok && first != m.Offset {
			// A crash between forwarding and the main commit forwards the same record again.
			e.outcomes[metrics.OutcomeDuplicate].Inc()
			return
		}
		la.seen[r.key] = m.Offset
	}
	if la.left || !la.room(lp.keepN(), len(m.Value)) {
		// Left in the lane: read again once the records before it ended.
		if !la.left {
			la.left, la.skipFrom = true, m.Offset
		}
		la.lastSkipped = m.Offset
		la.skipped++
		return
	}
	la.hold(lp, r)
}

// laneMarker applies an unpark marker of la's account: its records up to lane offset through had
// ended when the marker was written. mu held.
func laneMarker(lp *lanePart, la *laneAcct, through int64) {
	keep := la.q[:0]
	for _, r := range la.q {
		if r.msg.Offset <= through {
			delete(lp.unended, r.msg.Offset)
			la.qBytes -= len(r.msg.Value)
			continue
		}
		keep = append(keep, r)
	}
	clear(la.q[len(keep):])
	la.q = keep
	if la.left && la.skipFrom <= through {
		if la.lastSkipped <= through {
			la.left, la.skipped = false, 0
		} else {
			la.skipFrom = through + 1
		}
	}
	if len(la.q) == 0 && !la.left && la.forwarding == 0 && !lp.loaded {
		delete(lp.accts, la.name)
	}
}

func newLaneAcct(name, reason string, since time.Time) *laneAcct {
	return &laneAcct{name: name, seen: map[uint64]int64{}, lastProd: -1, lastEnded: -1, lastSkipped: -1,
		reason: reason, since: since}
}

// room: a record with a value of n bytes may be held in memory (the head always may).
func (la *laneAcct) room(keep, n int) bool {
	return len(la.q) == 0 || len(la.q) < keep && la.qBytes+n <= laneKeepBytes
}

// hold appends r to the account's records in memory. mu held.
func (la *laneAcct) hold(lp *lanePart, r *laneRec) {
	la.q = append(la.q, r)
	la.qBytes += len(r.msg.Value)
	lp.unended[r.msg.Offset] = r
}

// laneParse reads one lane record (not a marker).
func (e *engine) laneParse(m kafka.Message) *laneRec {
	r := &laneRec{msg: m, srcOff: -1}
	if v, ok := hdr(m.Headers, laneHdrSrcOffset); ok {
		r.srcOff, _ = strconv.ParseInt(v, 10, 64)
	}
	if v, ok := hdr(m.Headers, laneHdrRetryStart); ok {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			r.start = time.Unix(0, n)
		}
	}
	if v, ok := hdr(m.Headers, laneHdrAttempts); ok {
		r.attempts, _ = strconv.Atoi(v)
	}
	r.replay = replayCount(m.Headers)
	r.ev, r.verr = event.Parse(m.Value)
	if k, ok := hdr(m.Headers, laneHdrSrcKey); ok && r.ev != nil && k != r.ev.FromAccount && e.cfg.KeyMismatch == KeyMismatchDeadLetter {
		// The main path dead-letters it as invalid; so does the lane (it was counted there).
		r.ev, r.verr = nil, keyMismatchErr([]byte(k), r.ev.FromAccount)
	}
	if r.ev != nil {
		r.key = e.c.hash.id(r.ev.EventID, r.replay)
	}
	return r
}

// laneRefill reads the account's records left in the lane (from skipFrom up to what the tail has
// read) and holds the next of them. False: the generation ended first.
func (e *engine) laneRefill(p *part, la *laneAcct) bool {
	e.mu.Lock()
	from, hi := la.skipFrom, p.lane.readPos
	e.mu.Unlock()
	got, next, ok := e.laneScan(p, la, from, hi)
	if !ok {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if !la.left || la.skipFrom != from {
		return true // a marker moved it meanwhile: read again from there
	}
	taken := 0
	for _, r := range got {
		if !la.room(p.lane.keepN(), len(r.msg.Value)) {
			next = r.msg.Offset
			break
		}
		la.hold(p.lane, r)
		taken++
	}
	switch {
	case next >= 0:
		la.skipFrom = next
	case la.lastSkipped >= hi:
		la.skipFrom = hi // the tail left more of it after what was scanned
	default:
		la.left = false
	}
	la.skipped = max(la.skipped-taken, 0)
	if la.left {
		la.skipped = max(la.skipped, 1)
	} else {
		la.skipped = 0
	}
	return true
}

// markerThrough is the last lane offset an unpark marker at off declares ended: its value, or,
// for a value that does not parse, everything before it.
func markerThrough(v string, off int64) int64 {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n >= off {
		return off - 1
	}
	return n
}

// laneScan reads la's records in the lane from offset from up to hi and returns the next ones to
// hold (at most keepN) and, when the scan stopped at one more, its offset as next (else -1).
// False: the generation ended first.
func (e *engine) laneScan(p *part, la *laneAcct, from, hi int64) (got []*laneRec, next int64, ok bool) {
	cfg := e.cfg
	f := &fetcher{rt: cmpRT(cfg.Transport), addr: kafka.TCP(cfg.Brokers...), topic: cfg.laneTopic(), part: p.id,
		next: from, maxWait: 100 * time.Millisecond, maxBytes: 256 << 10}
	next = -1 // the first record of the account not taken, when the scan stopped at it
	for f.next < hi && next < 0 {
		msgs, err := f.fetch(e.claim)
		if err != nil {
			if e.claim.Err() != nil {
				return nil, -1, false
			}
			cfg.Logger.Warn("retry lane: reading parked records again failed, retrying", zap.Int("partition", p.id),
				zap.String("account", la.name), zap.Int64("offset", f.next), zap.Error(err))
			if !sleepCtx(e.claim, time.Second) {
				return nil, -1, false
			}
			continue
		}
		e.mu.Lock()
		for _, m := range msgs {
			if m.Offset >= hi || string(m.Key) != la.name {
				continue
			}
			if _, marker := hdr(m.Headers, laneHdrUnpark); marker {
				continue // the tail applied it already (it read everything below hi)
			}
			r := e.laneParse(m)
			if first, ok := la.seen[r.key]; r.key != 0 && ok && first != m.Offset {
				continue // a copy, counted when the tail read it
			}
			if len(got) >= p.lane.keepN() {
				next = m.Offset
				break
			}
			got = append(got, r)
		}
		e.mu.Unlock()
	}
	return got, next, true
}
