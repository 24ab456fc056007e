package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/dispatcher"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// Headers of retry-lane records. Everything else of the source record (key in a header, value,
// headers, timestamp) travels unchanged, so a dead letter written from the lane is the one the
// main topic would have produced.
const (
	laneHdrPrefix     = "chatgroupd-lane-"
	laneHdrSrcOffset  = laneHdrPrefix + "src-offset"  // the record's offset in the main topic
	laneHdrSrcKey     = laneHdrPrefix + "src-key"     // the record's key in the main topic
	laneHdrRetryStart = laneHdrPrefix + "retry-start" // unix nanos when its retrying began (stalled head only)
	laneHdrAttempts   = laneHdrPrefix + "attempts"    // API calls already made for it
	laneHdrReason     = laneHdrPrefix + "reason"      // why it is in the lane: stall (the head) or follow
	laneHdrUnpark     = laneHdrPrefix + "unpark"      // a marker: the key's account's records up to its value (a lane offset) ended
	laneHdrCode       = laneHdrPrefix + "code"        // the stalled head's last failure code
	laneHdrInfo       = laneHdrPrefix + "info"        // and its text
)

// Park reasons (metrics label and lane header).
const (
	parkStall  = "stall"
	parkBudget = "budget" // parked early: the held-back events would outgrow the commit metadata
	parkFollow = "follow"
)

// lanePart is one owned partition's retry lane: partition p of the lane topic, read by the member
// that owns partition p of the main topic. Guarded by engine.mu.
type lanePart struct {
	id      int
	accts   map[string]*laneAcct // parked accounts
	readPos int64                // next lane offset to read
	unended map[int64]*laneRec   // lane records read and not yet ended
	// loaded: the lane was read to the end it had at assignment, so accts lists every parked
	// account; the main partition is not fetched before that.
	loaded bool
	// marks are unpark markers read while loading: records before them are ended already.
	commitOK bool // the lane position may be committed (loaded)
	// keep overrides laneKeep (tests measuring what the cap saves); 0: laneKeep.
	keep int
}

// keepN is how many records per parked account are held in memory.
func (lp *lanePart) keepN() int {
	if lp.keep > 0 {
		return lp.keep
	}
	return laneKeep
}

// What a parked account's lane records may hold in memory: the next laneKeep records (and at most
// laneKeepBytes of their values, the head always). The rest stay in the lane, the source of truth,
// and are read again as the head advances (laneRefill). A hot parked account with thousands of
// queued events then costs its partition a few tens of kilobytes, not megabytes.
const (
	laneKeep      = 64
	laneKeepBytes = 1 << 20
)

// laneAcct is one parked account of a partition.
type laneAcct struct {
	name string
	q    []*laneRec // lane records held in memory, not ended, in lane order
	// qBytes is the value bytes of q.
	qBytes int
	// left: records of the account were read but not held (q was full); skipFrom is the lane
	// offset of the first: everything of it from there on is read again from the lane once q
	// empties. lastSkipped is the last such offset, skipped how many there are (gauge only).
	left                  bool
	skipFrom, lastSkipped int64
	skipped               int
	// seen maps each event (id and replay count) to the lane offset of its first copy: a later
	// copy (forwarded again after a crash) is a duplicate, the first one is not, however often
	// it is read.
	seen       map[uint64]int64
	forwarding int   // main-topic records being produced to the lane
	lastProd   int64 // lane offset of the last record produced for it by this member (-1 none)
	lastEnded  int64 // lane offset of its last record that ended here (-1 none)
	unparking  bool  // an unpark marker is being written: forwards wait
	worker     bool  // a lane worker goroutine drives q
	reason     string
	since      time.Time // parked since
}

// laneRec is one record read from the lane.
type laneRec struct {
	msg      kafka.Message
	ev       *event.Event
	verr     error
	key      uint64
	replay   int
	start    time.Time // retry start carried from an earlier dispatch (zero: none)
	attempts int
	srcOff   int64
}

// laneTopic is the retry lane's topic name.
func (c *Config) laneTopic() string {
	if c.LaneTopic != "" {
		return c.LaneTopic
	}
	return c.Topic + ".retry"
}

func hdr(hs []kafka.Header, k string) (string, bool) {
	for _, h := range hs {
		if h.Key == k {
			return string(h.Value), true
		}
	}
	return "", false
}

// laneProduce writes one record to the lane partition with acks=all and returns its offset. The
// caller ends the main-topic record only after this returned nil: the commit never passes a
// record before the lane holds it.
func (e *engine) laneProduce(ctx context.Context, part int, key, value []byte, hs []kafka.Header, t time.Time) (int64, error) {
	resp, err := e.c.client.Produce(ctx, &kafka.ProduceRequest{
		Topic: e.cfg.laneTopic(), Partition: part, RequiredAcks: kafka.RequireAll,
		Records: kafka.NewRecordReader(kafka.Record{Key: kafka.NewBytes(key), Value: kafka.NewBytes(value), Headers: hs, Time: t}),
	})
	if err == nil && resp.Error != nil {
		err = resp.Error
	}
	if err != nil {
		return 0, fmt.Errorf("retry lane produce: %w", err)
	}
	return resp.BaseOffset, nil
}

// laneParked returns the account's park state when r's account is parked (waiting while an
// unpark marker is being written). Called with mu held.
func (e *engine) laneParked(r *rec) *laneAcct {
	lp := r.a.p.lane
	for {
		la := lp.accts[r.a.name]
		if la == nil || !la.unparking {
			return la
		}
		e.laneCond.Wait()
	}
}

// laneForward moves r (a record of a parked account, or the head that just stalled, out) into
// the lane, retrying until the lane acknowledges it; false means the generation ended first (r
// did not end). reason is parkStall for the stalled head (out carries its budget), else follow.
func (e *engine) laneForward(r *rec, la *laneAcct, reason string, out dispatcher.Outcome) bool {
	m := r.msg
	hs := make([]kafka.Header, 0, len(m.Headers)+5)
	for _, h := range m.Headers {
		if !strings.HasPrefix(h.Key, laneHdrPrefix) {
			hs = append(hs, h)
		}
	}
	hs = append(hs,
		kafka.Header{Key: laneHdrSrcOffset, Value: []byte(strconv.FormatInt(m.Offset, 10))},
		kafka.Header{Key: laneHdrSrcKey, Value: m.Key},
		kafka.Header{Key: laneHdrReason, Value: []byte(reason)})
	if !out.RetryStart.IsZero() {
		hs = append(hs, kafka.Header{Key: laneHdrRetryStart, Value: []byte(strconv.FormatInt(out.RetryStart.UnixNano(), 10))},
			kafka.Header{Key: laneHdrAttempts, Value: []byte(strconv.Itoa(out.Attempts))},
			kafka.Header{Key: laneHdrCode, Value: []byte(strconv.Itoa(out.Code))},
			kafka.Header{Key: laneHdrInfo, Value: []byte(truncate(out.Info, 512))})
	}
	backoff := 100 * time.Millisecond
	for {
		off, err := e.laneProduce(e.dctx, m.Partition, []byte(r.a.name), m.Value, hs, m.Time)
		if err == nil {
			e.mu.Lock()
			la.lastProd = max(la.lastProd, off)
			e.mu.Unlock()
			return true
		}
		e.cfg.Logger.Warn("retry lane write failed; retrying, account waits", zap.Int("partition", m.Partition),
			zap.Int64("offset", m.Offset), zap.String("account", r.a.name), zap.Error(err))
		if !sleepCtx(e.claim, backoff) {
			return false
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// laneProcess handles r when the lane is on: a record of a parked account is forwarded. It
// returns handled=false when r's account is not parked (dispatch it as usual).
func (e *engine) laneProcess(r *rec) (handled, ended bool) {
	e.mu.Lock()
	la := e.laneParked(r)
	if la == nil {
		e.mu.Unlock()
		return false, false
	}
	la.forwarding++
	e.mu.Unlock()
	ended = e.laneForward(r, la, parkFollow, dispatcher.Outcome{})
	e.mu.Lock()
	la.forwarding--
	e.mu.Unlock()
	return true, ended
}

// park parks r's account because r stalled, and forwards r as the lane's head for it.
func (e *engine) park(r *rec, out dispatcher.Outcome) bool {
	p := r.a.p
	e.mu.Lock()
	la := e.laneParked(r)
	reason := parkStall
	if r.a.parkAsked {
		reason = parkBudget
	}
	if la == nil {
		la = newLaneAcct(r.a.name, reason, e.cfg.Now())
		p.lane.accts[r.a.name] = la
		e.metrics().LaneParks.WithLabelValues(reason).Inc()
		e.metrics().LaneParked.WithLabelValues(e.cfg.Topic, strconv.Itoa(p.id)).Inc()
	}
	la.forwarding++
	e.mu.Unlock()
	e.cfg.Logger.Warn("account parked in the retry lane: its head event keeps failing transiently",
		zap.Int("partition", p.id), zap.String("account", r.a.name), zap.Int64("offset", r.msg.Offset), zap.String("reason", reason),
		zap.Int("code", out.Code), zap.String("info", out.Info))
	ok := e.laneForward(r, la, reason, out)
	e.mu.Lock()
	la.forwarding--
	e.mu.Unlock()
	return ok
}

// laneLoad reads partition p's lane from its committed position to the end it has now, so every
// parked account is known before the main partition is fetched. False: ctx ended.
func (e *engine) laneLoad(ctx context.Context, p *part) (*fetcher, bool) {
	cfg := e.cfg
	lt := cfg.laneTopic()
	var start, end int64
	for {
		var err error
		start, end, err = e.laneBounds(ctx, p.id)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil, false
		}
		cfg.Logger.Warn("retry lane: reading its position failed; the partition waits", zap.Int("partition", p.id),
			zap.String("lane", lt), zap.Error(err))
		if !sleepCtx(ctx, time.Second) {
			return nil, false
		}
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
	e.mu.Lock()
	lp := p.lane
	if len(lp.unended) > 0 && p.prevUntil.After(cfg.Now()) {
		// A lane worker of the previous owner may still have a call of a head running.
		p.laneHold = p.prevUntil
		cfg.Logger.Info("retry lane loaded: its heads wait for the previous owner's calls", zap.Int("partition", p.id),
			zap.Duration("hold", p.laneHold.Sub(cfg.Now())))
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
	return f, true
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
		// The account's records up to the value had ended when it was written.
		la := lp.accts[name]
		if la == nil {
			return
		}
		through := markerThrough(v, m.Offset)
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
			delete(lp.accts, name)
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
			e.outcomes.inc(metrics.OutcomeDuplicate, r.ev, m.Value)
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
	cfg := e.cfg
	e.mu.Lock()
	from, hi := la.skipFrom, p.lane.readPos
	e.mu.Unlock()
	f := &fetcher{rt: cmpRT(cfg.Transport), addr: kafka.TCP(cfg.Brokers...), topic: cfg.laneTopic(), part: p.id,
		next: from, maxWait: 100 * time.Millisecond, maxBytes: 256 << 10}
	var got []*laneRec
	next := int64(-1) // the first record of the account not taken, when the scan stopped at it
	for f.next < hi && next < 0 {
		msgs, err := f.fetch(e.claim)
		if err != nil {
			if e.claim.Err() != nil {
				return false
			}
			cfg.Logger.Warn("retry lane: reading parked records again failed, retrying", zap.Int("partition", p.id),
				zap.String("account", la.name), zap.Int64("offset", f.next), zap.Error(err))
			if !sleepCtx(e.claim, time.Second) {
				return false
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
		if d := p.laneHold.Sub(e.cfg.Now()); d > 0 {
			// The previous owner may still have a call of this account's head running at the
			// API (same hold as uncertain main records; lane records are all uncertain).
			e.mu.Unlock()
			ok := sleepCtx(e.claim, d)
			e.mu.Lock()
			if !ok {
				break
			}
			continue
		}
		r := la.q[0]
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
		delete(p.lane.unended, r.msg.Offset)
	}
	la.worker = false
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
	var out dispatcher.Outcome
	for {
		var err error
		tctx, traced := p.calls.trace(ctx, e.cfg.UncertainHold, e.cfg.Now)
		out, err = e.cfg.Dispatcher.Dispatch(tctx, dispatcher.Task{
			Event: r.ev, ReplayCount: r.replay, Uncertain: true, RecordTime: src.Time, Drain: e.claim, RetryStart: r.start,
			Lease: lease,
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

// truncate cuts s to at most n bytes (headers stay small).
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
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
