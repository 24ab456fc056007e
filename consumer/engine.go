package consumer

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/dispatcher"
	"github.com/chatgroupd/chatgroupd/dlq"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// engine schedules one generation's records: per account one at a time and in seq order, many
// accounts at once through at most MaxInFlight runner goroutines. One mutex guards all of its
// state; the work done under it is a few map and slice operations per record.
type engine struct {
	c   *Consumer
	cfg *Config

	mu       sync.Mutex
	idle     *sync.Cond // drain waits here for inflight == 0
	laneCond *sync.Cond // forwards wait here while their account's unpark marker is written
	runners  sync.WaitGroup
	running  int        // goroutines in run
	ready    []*account // picked, waiting for a free runner
	parts    map[int]*part
	stopping bool
	inflight int

	outcomes  *outcomeCounters // EventsProcessed by outcome and event type
	commitNow chan struct{}    // asks the commit loop for an early (horizon) commit
	lastRate  time.Time        // when dispatch rates were last sampled
	final     bool             // the generation is over: the next commit is the last
	// keptWindows lists partitions whose dedupe window came from the previous generation.
	keptWindows []int
	dctx        context.Context
	// claim ends with the generation: dispatches not yet sent, dead-letter retries and retry
	// sleeps stop at once, while dctx still bounds what is already on its way.
	claim    context.Context
	endClaim context.CancelFunc
	// leaseUntil (unix ns) is until when the member may start new requests: its membership was
	// last confirmed (joined, or a commit accepted) early enough that it can't have been evicted
	// yet. A process paused past its session (GC, SIGSTOP, a VM freeze) wakes with an expired
	// lease, so its runners send nothing until a commit succeeds again — or, evicted, the
	// generation ends and drains them.
	leaseUntil atomic.Int64
}

// part is one assigned partition's state within a generation.
type part struct {
	id       int
	tr       *tracker
	win      *window
	accounts map[string]*account
	pending  map[uint64]*rec // dedupe key → record not yet ended
	inflight int             // records picked for dispatch and not yet back
	bytes    int             // key and value bytes of records held, not yet ended

	// hasPrev: the partition had a committed offset, so a previous owner may have dispatched
	// records in [watermark, inherited).
	hasPrev   bool
	inherited int64
	done      []span // completed ranges from the metadata, consumed as the fetch passes them

	committedH  int64 // dispatch horizon of the last successful commit (exclusive)
	committedW  int64
	maxPicked   int64
	wantH       int64
	ext         int64
	sinceCommit int           // records picked since the last rate sample
	rate        float64       // smoothed records picked per second
	blocked     []*account    // waiting for metadata pressure to ease
	hblocked    []*account    // waiting for the horizon to be extended by a commit
	mb          metaBudget    // what pressured knows of the commit metadata's size
	space       chan struct{} // signalled when the partition stops being full
	readFrom    int64         // where the fetch starts: up to DedupeWindow records before the watermark
	lane        *lanePart     // the retry lane's state (RetryLane on)
	// holdUntil: until then an account with an uncertain record dispatches nothing (a call of
	// the previous owner may still run; Config.UncertainHold, shortened by the previous owner's
	// hand-over statement, handover.go). Lane records wait for it too, uncertain or not.
	holdUntil time.Time
	// prevUntil is when the previous owner's calls end at the latest (the full hold from set-up
	// without its statement), whether or not records wait for it; laneHold is prevUntil when the
	// lane held records at assignment: they wait for it, uncertain or not.
	prevUntil, laneHold time.Time
	// calls follows this generation's API requests of the partition for the final commit's
	// hand-over statement.
	calls callWatch
}

type account struct {
	name    string
	hash    uint64
	p       *part
	q       []*rec
	running *rec
	next    *rec
	queued  bool
	blocked bool
	halted  bool // a record did not end (generation ending): nothing after it may run
	// parkNow (lane on) ends the running record's Task.ParkNow: the metadata budget can't wait
	// for its stall limit; parkAsked says it was called (the park's reason is then budget).
	parkNow   context.CancelFunc
	parkAsked bool
	timer     *time.Timer
	lastSeq   int64
	// heldUntil: nothing of the account is dispatched before then (part.holdUntil).
	heldUntil time.Time
}

type rec struct {
	msg       kafka.Message
	ev        *event.Event
	verr      error
	key       uint64
	replay    int
	idx       uint64
	arrived   time.Time
	uncertain bool
	dups      []uint64 // tracker indexes of duplicates waiting on this record
	a         *account
}

func (r *rec) size() int { return len(r.msg.Key) + len(r.msg.Value) }

func (r *rec) seq() int64 {
	if r.ev == nil {
		return 0
	}
	return r.ev.Seq
}

func newEngine(c *Consumer, dctx context.Context) *engine {
	e := &engine{c: c, cfg: &c.cfg, parts: map[int]*part{}, commitNow: make(chan struct{}, 1), dctx: dctx, lastRate: c.cfg.Now()}
	e.claim, e.endClaim = context.WithCancel(dctx)
	e.renewLease(time.Now()) // just joined
	e.idle = sync.NewCond(&e.mu)
	e.laneCond = sync.NewCond(&e.mu)
	e.outcomes = newOutcomeCounters(c.cfg.Metrics)
	if c.cfg.testEngine != nil {
		c.cfg.testEngine(e)
	}
	return e
}

func (e *engine) metrics() *metrics.Metrics { return e.cfg.Metrics }

// renewLease extends the lease from a confirmation of membership at t (see leaseUntil). It uses
// the real clock: it is about the process being stopped, not about test time.
func (e *engine) renewLease(t time.Time) {
	until := t.Add(e.c.leaseLen()).UnixNano()
	for {
		cur := e.leaseUntil.Load()
		if cur >= until || e.leaseUntil.CompareAndSwap(cur, until) {
			return
		}
	}
}

// leased reports whether the lease still runs (dispatcher.Task.Lease).
func (e *engine) leased() bool { return time.Now().UnixNano() < e.leaseUntil.Load() }

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
	if off >= p.committedH {
		p.wantH = max(p.wantH, off+1)
		a.blocked = true
		p.hblocked = append(p.hblocked, a)
		e.requestCommit()
		return
	}
	if e.pressured(p) && a != e.frontAccount(p) {
		a.blocked = true
		p.blocked = append(p.blocked, a)
		if fa := e.frontAccount(p); fa != nil && fa.parkNow != nil && !fa.parkAsked {
			// The account holding the watermark keeps the others waiting: if its event is
			// failing transiently, park it now rather than at its stall limit.
			fa.parkAsked = true
			fa.parkNow()
		}
		return
	}
	if off+p.ext/2 >= p.committedH {
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
	p.maxPicked = max(p.maxPicked, off)
	p.sinceCommit++
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
	if len(a.q) == 0 && a.running == nil && !a.queued && !a.blocked && a.timer == nil && !a.halted {
		if a.p.accounts[a.name] == a {
			delete(a.p.accounts, a.name)
		}
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
	var out dispatcher.Outcome
	for {
		var err error
		tctx, traced := r.a.p.calls.trace(ctx, e.cfg.UncertainHold, e.cfg.Now)
		out, err = e.cfg.Dispatcher.Dispatch(tctx, dispatcher.Task{
			Event: r.ev, ReplayCount: r.replay, Uncertain: r.uncertain, RecordTime: r.msg.Time, Drain: e.claim,
			Lease: lease, StallLimit: e.stallLimit(), ParkNow: parkNow,
		})
		traced()
		if err == nil {
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

// deadLetter writes l until Kafka acknowledges it. Until then the account and the watermark wait:
// a record must never be committed past before its dead letter is durable.
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
