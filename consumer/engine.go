package consumer

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

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

	hz         horizon    // how far dispatch may go, as the commits extend it
	committedW int64      // watermark of the last successful commit (-1: none yet)
	blocked    []*account // waiting for metadata pressure to ease
	hblocked   []*account // waiting for the horizon to be extended by a commit
	// unstated lists the accounts with an ended record no successful commit states yet;
	// sblocked those of them whose next record waits for that statement (stated.go).
	unstated []*account
	sblocked []*account
	mb       metaBudget    // what pressured knows of the commit metadata's size
	space    chan struct{} // signalled when the partition stops being full
	readFrom int64         // where the fetch starts: up to DedupeWindow records before the watermark
	lane     *lanePart     // the retry lane's state (RetryLane on)
	hold     prevHold      // waiting out the previous owner's calls (handover.go)
	prev     prevSent      // which inherited records the previous owner may have sent
	// calls follows this generation's API requests of the partition for the final commit's
	// hand-over statement.
	calls callWatch
	adm   admission // records wait for a commit listing them before they are written (admit.go)
	// lostBelow: the log was truncated below the committed offset; main records below this were
	// lost (their lane copies have no main record left: admit.go mainEnded). 0 otherwise.
	lostBelow int64
}

// horizon is one partition's dispatch horizon: no record at or beyond committed is dispatched,
// so a successor knows every record below what was committed may have been (uncertain) and none
// above it was. Commits extend it ahead of dispatch (commit.go); schedule blocks an account whose
// next record is beyond it and asks for an early commit.
type horizon struct {
	committed int64   // dispatch horizon of the last successful commit (exclusive)
	maxPicked int64   // the highest offset picked for dispatch
	want      int64   // a blocked record needs the horizon past this (exclusive)
	ext       int64   // how far the last commit extended the horizon beyond dispatch
	picked    int     // records picked since the last rate sample
	rate      float64 // smoothed records picked per second
}

// minHorizonLead is the least a commit extends the horizon beyond what is needed (records): the
// lead while the dispatch rate is still unknown or below 4 records/s. It was 2·MaxInFlight (512
// records, 15 s of a fleet partition's 33 records/s), every one uncertain for a successor after a
// crash; a record that reaches the horizon costs only an early commit (one round trip), and one
// commit takes every blocked record's offset (want) at once.
const minHorizonLead = 8

// lead is how far a commit extends the horizon beyond need: ~2 s of the partition's smoothed
// dispatch rate, so it rarely blocks, but no further: every offset below it is uncertain (an
// existence check, its account held) for a successor after a crash.
func (h *horizon) lead() int64 { return max(minHorizonLead, int64(h.rate*2)) }

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
	// heldUntil: nothing of the account is dispatched before then (prevHold.main).
	heldUntil time.Time
	// end is what a successor would not know of the account's last ended records (stated.go).
	end unstatedEnd
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
