package consumer

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/dlq"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// Consumer reads the event topic as a member of a consumer group and drives every record to an
// end. Create it with New and run it with Run.
type Consumer struct {
	cfg    Config
	client *kafka.Client
	hash   hasher
	ready  atomic.Bool
	// crash, for tests, ends generations like a killed process: no drain, no final commit.
	crash bool
	// vanish, for tests, with crash: nor does Run leave the group, as a killed process doesn't.
	vanish bool

	// kept holds, per partition, the dedupe window and the final commit of the last generation.
	// When the next generation gets the partition back with that very commit, nobody else has
	// moved it, and the window replaces the read-back: rebalances cost no history re-read.
	// Only the Run goroutine's generations touch it, one at a time.
	kept map[int]keptPart
	// route counts records the configured partitioner would not put where they are.
	route routeCheck

	keys *keyGuard
	dlqH *dlqHealth
}

type keptPart struct {
	w    int64
	meta string
	win  *window
	// drained: the generation that kept it ended with no call in flight (none abandoned).
	drained bool
}

// New applies cfg's defaults, checks it and returns a Consumer; it does not connect until Run.
func New(cfg Config) (*Consumer, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Metrics.EventsMisrouted.WithLabelValues(cfg.Topic) // exposed at 0 from the start: it should stay there
	return &Consumer{
		cfg:    cfg,
		client: &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: cfg.Transport, Timeout: 10 * time.Second},
		hash:   hasher{seed: maphash.MakeSeed()},
		kept:   map[int]keptPart{},
		keys:   newKeyGuard(&cfg),
		dlqH:   newDLQHealth(cfg.Metrics),
	}, nil
}

// Ready reports whether the consumer is a member of the group with a current generation.
func (c *Consumer) Ready() bool { return c.ready.Load() }

// DeadLetterHealth returns nil, or while some partition waits on a dead letter the DLQ topic
// does not accept (deleted, ACL changed, brokers refusing), an error naming the partitions, since
// when and the last failure. It clears by itself once the letters are written.
func (c *Consumer) DeadLetterHealth() error { return c.dlqH.err() }

// Run consumes until ctx is cancelled, then stops fetching, lets in-flight events finish within
// ShutdownTimeout, commits, leaves the group and returns nil. It returns an error only when the
// group can't be set up at all, or ErrFenced when another process took over this member's
// instance id (it does not leave the group then: the group is the other process's now).
func (c *Consumer) Run(ctx context.Context) error {
	cfg := &c.cfg
	log := cfg.Logger
	m := newMember(cfg, c.heartbeat())
	var runErr error
	for ctx.Err() == nil {
		g, err := m.join(ctx)
		if err != nil {
			if errors.Is(err, ErrFenced) {
				runErr = err
			}
			break
		}
		c.runGeneration(ctx, g)
		g.stop()
		if cause := context.Cause(g.ctx); errors.Is(cause, ErrFenced) {
			runErr = cause
			break
		}
	}
	c.ready.Store(false)
	switch {
	case runErr != nil:
		log.Error("consumer fenced: another member joined with this instance id; stopping",
			zap.String("group", cfg.GroupID), zap.String("instance_id", cfg.InstanceID), zap.Error(runErr))
		return runErr
	case c.vanish:
	default:
		// Leaving hands the partitions over at once, also for a static member (by its instance
		// id): a graceful stop is a scale-down or a rollout, not a crash to wait out.
		if err := m.leave(context.WithoutCancel(ctx)); err != nil {
			log.Warn("consumer group: leave failed; the coordinator will evict this member after the session timeout",
				zap.String("group", cfg.GroupID), zap.Error(err))
		}
	}
	log.Info("consumer stopped", zap.String("group", cfg.GroupID))
	return nil
}

// heartbeat is the member's heartbeat interval: HeartbeatInterval, at most a third of the session.
func (c *Consumer) heartbeat() time.Duration {
	return min(c.cfg.HeartbeatInterval, c.cfg.SessionTimeout/3)
}

// leaseLen is how long a confirmation of membership lets the member start new requests: it is
// evicted a session after its last heartbeat, which may be a heartbeat before the confirmation,
// and a second is kept as margin (the bound of a revoked generation's drain, for the same reason).
// Every accepted heartbeat of the member (see member.heartbeat) and every accepted commit renew it.
func (c *Consumer) leaseLen() time.Duration {
	return max(100*time.Millisecond, c.cfg.SessionTimeout-c.heartbeat()-time.Second)
}

// revokeDrain bounds the wait for requests in flight once a generation ended. The member stops
// heartbeating then (kafka-go heartbeats only within a generation), so the coordinator evicts it
// SessionTimeout after its last heartbeat, which may be a heartbeat before we learn of the end;
// it also evicts a member that does not rejoin within RebalanceTimeout. Evicted, its partitions
// go to the next owner while its calls still run: two calls of one account at once, and a final
// commit refused. A second is left for that commit.
func (c *Consumer) revokeDrain() time.Duration {
	cfg := &c.cfg
	hb := c.heartbeat()
	d := min(cfg.ShutdownTimeout, cfg.RebalanceTimeout/2, cfg.RebalanceTimeout-hb-time.Second)
	if !cfg.TestLegacyDrain {
		d = min(d, cfg.SessionTimeout-hb-time.Second)
	}
	return max(100*time.Millisecond, d)
}

// runGeneration owns one generation: set up each partition, fetch and dispatch until the
// generation ends or ctx is cancelled, then drain, commit with this generation's id and return.
func (c *Consumer) runGeneration(runCtx context.Context, g *groupGen) {
	gctx, gen := g.ctx, g.gen
	cfg := &c.cfg
	log := cfg.Logger
	stopCtx, stop := context.WithCancel(runCtx)
	defer stop()
	defer context.AfterFunc(gctx, stop)()
	dctx, dcancel := context.WithCancel(context.WithoutCancel(runCtx))
	defer dcancel()

	var ids []int
	for _, a := range gen.Assignments[cfg.Topic] {
		ids = append(ids, a.ID)
	}
	slices.Sort(ids)
	cfg.Metrics.Rebalances.Inc()
	cfg.Metrics.AssignedParts.Set(float64(len(ids)))

	e := newEngine(c, dctx)
	total, late, err := e.setup(stopCtx, ids)
	if err != nil {
		if stopCtx.Err() == nil {
			log.Error("consumer: partition setup failed; leaving generation", zap.Int32("generation", gen.ID), zap.Error(err))
			// Returning rejoins (the coordinator hands the same partitions back, or rebalances
			// if the group changed meanwhile); pause so a lasting failure doesn't spin.
			sleepCtx(stopCtx, time.Second)
		}
		return
	}
	c.route.partitions.Store(int64(total))
	if cfg.Share != nil {
		cfg.Share.SetPartitions(ids, total)
	}
	log.Info("rebalance: partitions assigned", zap.String("group", cfg.GroupID), zap.Int32("generation", gen.ID),
		zap.String("member", gen.MemberID), zap.Ints("partitions", ids), zap.Int("topic_partitions", total),
		zap.Ints("dedupe_kept", e.keptWindows))
	c.ready.Store(true)

	fetchCtx, fetchCancel := context.WithCancel(stopCtx)
	defer fetchCancel()
	var fetchers, committer sync.WaitGroup
	for _, id := range ids {
		if slices.Contains(late, id) {
			fetchers.Go(func() {
				if e.setupLate(fetchCtx, id) {
					e.mu.Lock()
					p := e.parts[id]
					e.mu.Unlock()
					e.requestCommit()
					e.fetch(fetchCtx, p)
				}
			})
			continue
		}
		p := e.parts[id]
		fetchers.Go(func() { e.fetch(fetchCtx, p) })
	}
	committer.Go(func() { e.commitLoop(stopCtx, gen) })
	if !cfg.TestLegacyDrain {
		// The member's heartbeats renew the lease: each one accepted confirms membership.
		g.setRenew(e.renewLease)
		defer g.setRenew(nil)
	}
	e.requestCommit() // the first commit sets the dispatch horizon of fresh partitions

	<-stopCtx.Done()
	c.ready.Store(false)
	shutdown := runCtx.Err() != nil
	if !c.crash {
		// From now on a successor may own these partitions: the rate share goes to zero for new
		// grants, and dispatches that have not sent their request give up at once (their records
		// stay uncommitted and are dispatched again, as uncertain, by whoever owns them next).
		// Only requests already sent are waited for, within the drain bound below.
		if cfg.Share != nil {
			cfg.Share.SetPartitions(nil, total)
		}
		if !cfg.TestLegacyDrain {
			e.endClaim()
		}
	}
	fetchCancel()
	e.mu.Lock()
	e.stop()
	inflight := e.inflight
	e.mu.Unlock()
	fetchers.Wait()
	committer.Wait()

	if c.crash {
		dcancel()
		e.runners.Wait()
		return
	}
	drain, why := cfg.ShutdownTimeout, "shutdown"
	if !shutdown {
		drain, why = c.revokeDrain(), "revoke"
	}
	log.Info("generation ending: draining in-flight events", zap.String("why", why), zap.Int32("generation", gen.ID),
		zap.Int("inflight", inflight), zap.Duration("timeout", drain))
	expire := func() {
		dcancel()
		e.mu.Lock()
		e.idle.Broadcast()
		e.mu.Unlock()
	}
	t := time.AfterFunc(drain, expire)
	if shutdown && !cfg.TestLegacyDrain {
		// A shutdown drain runs while the member still heartbeats; if the generation ends
		// meanwhile (another member joined), the member goes silent and the revoke bound
		// applies from that moment.
		began := time.Now()
		stopAfter := context.AfterFunc(gctx, func() {
			if rest := c.revokeDrain(); time.Since(began)+rest < drain {
				t.Reset(rest)
			}
		})
		defer stopAfter()
	}
	e.mu.Lock()
	for e.inflight > 0 && dctx.Err() == nil {
		e.idle.Wait()
	}
	abandoned := e.inflight
	e.mu.Unlock()
	t.Stop()
	if abandoned > 0 {
		log.Warn("generation ending: abandoning in-flight events uncommitted", zap.Int("inflight", abandoned))
	}
	dcancel()
	e.runners.Wait()

	cctx, cancel := context.WithTimeout(context.WithoutCancel(runCtx), 10*time.Second)
	defer cancel()
	e.mu.Lock()
	e.final = true
	e.mu.Unlock()
	if err := e.commit(cctx, gen); err != nil {
		log.Warn("final commit failed", zap.Int32("generation", gen.ID), zap.Error(err))
	}
	if abandoned == 0 {
		// Every call this member sent has ended: if it gets a kept partition back, no call of
		// the previous owner (itself) can still run, and there is nothing to hold for.
		for _, id := range ids {
			if k, ok := c.kept[id]; ok {
				k.drained = true
				c.kept[id] = k
			}
		}
	}
	for _, id := range ids {
		ps := strconv.Itoa(id)
		cfg.Metrics.ConsumerLag.DeleteLabelValues(cfg.Topic, ps)
		cfg.Metrics.OldestUnfinished.DeleteLabelValues(cfg.Topic, ps)
		cfg.Metrics.LaneParked.DeleteLabelValues(cfg.Topic, ps)
		cfg.Metrics.LaneDepth.DeleteLabelValues(cfg.Topic, ps)
		cfg.Metrics.LaneOldest.DeleteLabelValues(cfg.Topic, ps)
	}
	cfg.Metrics.AssignedParts.Set(0)
	cfg.Metrics.InFlight.Set(0)
	e.mu.Lock()
	entries := 0
	for _, p := range e.parts {
		entries += p.win.len()
	}
	e.mu.Unlock()
	cfg.Metrics.DedupeEntries.Sub(float64(entries))
}

// setup reads each partition's committed offset and metadata and the log bounds, and returns the
// topic's partition count and the partitions it could not set up: an error on one partition's
// offset or bounds must not cost the member all of them, so those are set up alone later
// (setupLate) while the others run.
func (e *engine) setup(ctx context.Context, ids []int) (int, []int, error) {
	cfg := e.cfg
	cl := e.c.client
	var (
		md    *kafka.MetadataResponse
		total int
		err   error
	)
	// Retry briefly: a coordinator that moved or a broker that restarts is common at rebalance.
	for attempt := 0; attempt < 5; attempt++ {
		if attempt > 0 {
			if !sleepCtx(ctx, time.Duration(attempt)*200*time.Millisecond) {
				return 0, nil, ctx.Err()
			}
		}
		topics := []string{cfg.Topic}
		if cfg.RetryLane {
			topics = append(topics, cfg.laneTopic())
		}
		md, err = cl.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
		if err == nil {
			total, err = checkTopics(cfg, md)
		}
		if err != nil {
			err = fmt.Errorf("metadata: %w", err)
			continue
		}
		break
	}
	if err != nil {
		return 0, nil, fmt.Errorf("consumer setup: %w", err)
	}
	states, err := e.readPositions(ctx, ids)
	var pending []int
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, id := range ids {
		st, ok := states[id]
		if !ok {
			pending = append(pending, id)
			continue
		}
		e.initPart(id, st)
	}
	clear(e.c.kept)
	if len(pending) > 0 {
		cfg.Logger.Warn("consumer setup: some partitions not set up yet; retrying them alone",
			zap.Ints("partitions", pending), zap.Error(err))
	}
	return total, pending, nil
}

// errLaneTopic: the retry lane's topic is missing or has fewer partitions than the event topic
// (partition p's stuck accounts go to lane partition p).
var errLaneTopic = errors.New("retry lane topic unusable")

// checkTopics returns the event topic's partition count, checking the lane topic beside it.
func checkTopics(cfg *Config, md *kafka.MetadataResponse) (int, error) {
	parts := map[string]int{}
	for _, t := range md.Topics {
		if t.Error == nil {
			parts[t.Name] = len(t.Partitions)
		}
	}
	total, ok := parts[cfg.Topic]
	if !ok {
		return 0, fmt.Errorf("topic %s missing", cfg.Topic)
	}
	if cfg.RetryLane {
		lt := cfg.laneTopic()
		if n := parts[lt]; n < total {
			return 0, fmt.Errorf("%w: %s has %d partitions, the event topic %d; create it with %d (e.g. kafka-topics.sh --create --topic %s --partitions %d)",
				errLaneTopic, lt, n, total, total, lt, total)
		}
	}
	return total, nil
}

// position is what setup learned of one partition: its committed offset and metadata (when the
// group has one) and the log's bounds.
type position struct {
	commit    kafka.OffsetFetchPartition
	hasCommit bool
	bounds    kafka.PartitionOffsets
}

// readPositions fetches the committed offsets and log bounds of ids, retrying a few times, and
// returns those it got without error, with the last error seen for the others.
func (e *engine) readPositions(ctx context.Context, ids []int) (map[int]position, error) {
	cfg := e.cfg
	cl := e.c.client
	out := map[int]position{}
	var lastErr error
	todo := ids
	for attempt := 0; attempt < 5 && len(todo) > 0; attempt++ {
		if attempt > 0 && !sleepCtx(ctx, time.Duration(attempt)*200*time.Millisecond) {
			break
		}
		of, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: cfg.GroupID, Topics: map[string][]int{cfg.Topic: todo}})
		if err == nil && of.Error != nil {
			err = of.Error
		}
		if err != nil {
			lastErr = fmt.Errorf("offset fetch: %w", err)
			continue
		}
		reqs := make([]kafka.OffsetRequest, 0, 2*len(todo))
		for _, id := range todo {
			reqs = append(reqs, kafka.FirstOffsetOf(id), kafka.LastOffsetOf(id))
		}
		lo, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{cfg.Topic: reqs}})
		if err != nil {
			lastErr = fmt.Errorf("list offsets: %w", err)
			continue
		}
		committed := map[int]kafka.OffsetFetchPartition{}
		for _, p := range of.Topics[cfg.Topic] {
			if p.Error != nil {
				lastErr = fmt.Errorf("offset fetch partition %d: %w", p.Partition, p.Error)
				continue
			}
			committed[p.Partition] = p
		}
		bounds := map[int]kafka.PartitionOffsets{}
		for _, p := range lo.Topics[cfg.Topic] {
			if p.Error != nil {
				lastErr = fmt.Errorf("list offsets partition %d: %w", p.Partition, p.Error)
				continue
			}
			bounds[p.Partition] = p
		}
		var again []int
		for _, id := range todo {
			cp, okC := committed[id]
			b, okB := bounds[id]
			if !okC || !okB {
				again = append(again, id)
				continue
			}
			out[id] = position{commit: cp, hasCommit: cp.CommittedOffset >= 0, bounds: b}
		}
		todo = again
	}
	return out, lastErr
}

// setupLate sets up one partition the batch could not, retrying with backoff until it succeeds
// (true) or ctx ends (false).
func (e *engine) setupLate(ctx context.Context, id int) bool {
	backoff := time.Second
	for {
		states, err := e.readPositions(ctx, []int{id})
		if st, ok := states[id]; ok {
			e.mu.Lock()
			e.initPart(id, st)
			e.mu.Unlock()
			e.cfg.Logger.Info("consumer setup: partition set up after retries", zap.Int("partition", id))
			return true
		}
		e.cfg.Logger.Warn("consumer setup: partition still failing; retrying", zap.Int("partition", id),
			zap.Duration("backoff", backoff), zap.Error(err))
		if !sleepCtx(ctx, backoff) {
			return false
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// initPart sets up partition id from what setup read. Whatever makes the committed position
// untrustworthy is taken conservatively: records that may already have been applied are
// dispatched as uncertain (looked up before created), never skipped. mu held.
func (e *engine) initPart(id int, st position) {
	cfg := e.cfg
	log := cfg.Logger
	resets := cfg.Metrics.OffsetResets
	b, cp := st.bounds, st.commit
	first, end := b.FirstOffset, b.LastOffset
	p := &part{
		id: id, win: newWindow(cfg.DedupeWindow), accounts: map[string]*account{},
		pending: map[uint64]*rec{}, space: make(chan struct{}, 1), ext: int64(2 * cfg.MaxInFlight),
		lane: &lanePart{id: id, accts: map[string]*laneAcct{}, unended: map[int64]*laneRec{}},
	}
	// The lane gauges exist per owned partition, at 0 until something is parked (or for good
	// with the lane off), so alerts and dashboards see the series.
	ps := strconv.Itoa(id)
	for _, g := range []*prometheus.GaugeVec{cfg.Metrics.LaneParked, cfg.Metrics.LaneDepth, cfg.Metrics.LaneOldest} {
		g.WithLabelValues(cfg.Topic, ps).Set(0)
	}
	w := first
	p.committedW = -1
	keep := st.hasCommit
	var ho *handover // the previous owner's hand-over statement, if its final commit made one
	switch {
	case st.hasCommit:
		w = cp.CommittedOffset
		p.hasPrev = true
		p.committedW = w
		m, err := decodeMeta(w, cp.Metadata)
		ho = m.handover
		if err != nil {
			// Not ours, corrupt, or from a tool that moved the offset: the previous owner may
			// have dispatched anything it had fetched. Everything up to the log end is uncertain.
			log.Error("commit metadata unusable: every record up to the log end will be dispatched as uncertain",
				zap.Int("partition", id), zap.Int64("offset", w), zap.Int64("log_end", end), zap.Error(err))
			reason := "bad_metadata"
			if errors.Is(err, errMetaWatermarkMismatch) {
				reason = "moved_offset" // intact metadata of ours, beside an offset a tool moved
			}
			resets.WithLabelValues(reason).Inc()
			m = commitMeta{horizon: max(w+int64(cfg.MaxBuffered), end)}
		}
		if w > end {
			// The log was truncated below our commit (unclean leader election): records now
			// written from the log end on are new, and may repeat ones that were lost. Resume
			// there, dispatching as uncertain as many as the old horizon covered; the completed
			// ranges described records that no longer exist.
			log.Error("committed offset beyond the log end: log truncated; resuming at the log end, records from there dispatched as uncertain",
				zap.Int("partition", id), zap.Int64("committed", w), zap.Int64("log_end", end), zap.Int64("horizon", m.horizon))
			resets.WithLabelValues("beyond_log_end").Inc()
			m = commitMeta{horizon: max(m.horizon, w)}
			w, keep = end, false
		}
		p.inherited = max(m.horizon, w)
		p.done = m.done
		if w < first {
			log.Warn("committed offset below the log start: records lost to retention",
				zap.Int("partition", id), zap.Int64("committed", w), zap.Int64("log_start", first))
			resets.WithLabelValues("below_log_start").Inc()
			w = first
		}
	case first > 0:
		// No committed offset, yet records were deleted: the group's offsets expired or the
		// group was deleted, not a new group. Whatever is retained may have been applied.
		log.Error("no committed offset but the log does not start at 0 (offsets expired or group deleted): every retained record will be dispatched as uncertain",
			zap.Int("partition", id), zap.Int64("log_start", first), zap.Int64("log_end", end))
		resets.WithLabelValues("no_commit").Inc()
		p.hasPrev = true
		p.inherited = end
	default:
		p.inherited = w
	}
	p.tr = newTracker(w)
	p.committedH = p.inherited
	if cfg.UncertainHold > 0 && !cfg.TestLegacyDrain {
		// Records in [w, inherited), and the lane's records, may have calls of the previous
		// owner still running: held in full, or for what is left of the window its final
		// commit stated (handover.go).
		now := cfg.Now()
		until := handoverHold(now, cfg.UncertainHold, cfg.HandoverSkew, ho)
		p.prevUntil = until
		if p.hasPrev && p.inherited > w {
			p.holdUntil = until
			cfg.Metrics.HandoverHold.Observe(until.Sub(now).Seconds())
			log.Info("partition set up: accounts of uncertain records wait for the previous owner's calls",
				zap.Int("partition", id), zap.Int64("from", w), zap.Int64("to", p.inherited),
				zap.Duration("hold", until.Sub(now)), zap.Bool("stated", until.Before(now.Add(cfg.UncertainHold))))
		}
	}
	p.maxPicked = w - 1
	e.parts[id] = p
	p.readFrom = w
	if k, ok := e.c.kept[id]; ok && keep && k.w == cp.CommittedOffset && k.meta == cp.Metadata {
		// Nobody else owned it since this member's own final commit. Its uncertain records
		// (the horizon it dispatched up to) stay uncertain, but if that generation's calls all
		// ended, none can still be running: no hold.
		if k.drained {
			p.holdUntil = time.Time{}
		}
		p.win = k.win
		e.keptWindows = append(e.keptWindows, id)
		cfg.Metrics.DedupeEntries.Add(float64(p.win.len()))
	} else if p.hasPrev {
		p.readFrom = max(first, w-int64(cfg.DedupeWindow))
	}
}

// fetch reads one partition: first the history before the watermark into the dedupe window, then
// live records into the engine, pausing while the partition's buffer is full.
func (e *engine) fetch(ctx context.Context, p *part) {
	cfg := e.cfg
	f := &fetcher{rt: cfg.Transport, addr: kafka.TCP(cfg.Brokers...), topic: cfg.Topic, part: p.id,
		next: p.readFrom, maxWait: 250 * time.Millisecond, maxBytes: 4 << 20}
	if f.rt == nil {
		f.rt = kafka.DefaultTransport
	}
	start := p.tr.next
	if cfg.RetryLane {
		// Every parked account must be known before any of its main-topic events is seen.
		lf, ok := e.laneLoad(ctx, p)
		if !ok {
			return
		}
		var tail sync.WaitGroup
		defer tail.Wait()
		tail.Go(func() { e.laneTail(ctx, p, lf) })
	}
	for {
		msgs, err := f.fetch(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, kafka.OffsetOutOfRange) && e.outOfRange(ctx, f) {
				continue
			}
			cfg.Logger.Warn("fetch failed, retrying", zap.Int("partition", p.id), zap.Int64("offset", f.next), zap.Error(err))
			if !sleepCtx(ctx, time.Second) {
				return
			}
			continue
		}
		for _, m := range msgs {
			if m.Offset < start {
				e.readBack(p, m)
				continue
			}
			if !e.ingest(ctx, p, m) {
				return
			}
		}
		e.passed(p, f.next, start)
	}
}

// passed tells the tracker the fetch went past every offset below next. Offsets the fetch left
// out (transaction markers, aborted records) are otherwise only known as skipped once a later
// record arrives: at the log's tail — where a real broker writes the markers, after the
// transaction's last record — they would hold the watermark one or two short of the log end.
func (e *engine) passed(p *part, next, start int64) {
	if next <= start {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(p.tr.ents) == 0 && next > p.tr.next {
		p.tr.next = next
	}
}

// outOfRange handles a fetch offset the log no longer holds. Below the log start (retention
// deleted records before we read them) the fetch moves to the start and reports true. Beyond
// the log end the log was truncated under us: nothing safe can be done within this generation
// (the tracker already passed those offsets), so it says so loudly and reports false.
func (e *engine) outOfRange(ctx context.Context, f *fetcher) bool {
	cfg := e.cfg
	lo, err := e.c.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
		cfg.Topic: {kafka.FirstOffsetOf(f.part), kafka.LastOffsetOf(f.part)}}})
	if err != nil {
		return false
	}
	for _, b := range lo.Topics[cfg.Topic] {
		if b.Partition != f.part || b.Error != nil {
			continue
		}
		if f.next < b.FirstOffset {
			cfg.Logger.Warn("fetch position below the log start: records lost to retention", zap.Int("partition", f.part),
				zap.Int64("offset", f.next), zap.Int64("log_start", b.FirstOffset))
			cfg.Metrics.OffsetResets.WithLabelValues("below_log_start").Inc()
			f.next = b.FirstOffset
			return true
		}
		if f.next > b.LastOffset {
			cfg.Logger.Error("fetch position beyond the log end: the log was truncated under this member; the partition stalls until reassigned",
				zap.Int("partition", f.part), zap.Int64("offset", f.next), zap.Int64("log_end", b.LastOffset))
		}
	}
	return false
}

// readBack remembers a record that ended before the watermark: its dedupe key and its seq.
func (e *engine) readBack(p *part, m kafka.Message) {
	ev, err := event.Parse(m.Value)
	if err != nil {
		return
	}
	key := e.c.hash.id(ev.EventID, replayCount(m.Headers))
	ah := e.c.hash.account(ev.FromAccount)
	e.mu.Lock()
	before := p.win.len()
	p.win.add(key, ah, ev.Seq)
	e.cfg.Metrics.DedupeEntries.Add(float64(p.win.len() - before))
	e.mu.Unlock()
}

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
		idx := p.tr.add(off, now.UnixNano(), nil)
		e.endIdx(p, idx)
		if completed {
			if ev != nil {
				before := p.win.len()
				p.win.add(key, e.c.hash.account(name), ev.Seq)
				cfg.Metrics.DedupeEntries.Add(float64(p.win.len() - before))
				if a := p.accounts[name]; a != nil {
					a.lastSeq = max(a.lastSeq, ev.Seq)
				}
			}
		} else {
			e.outcomes.inc(metrics.OutcomeDuplicate, ev, m.Value)
		}
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
		uncertain: p.hasPrev && off < p.inherited}
	if r.uncertain && now.Before(p.holdUntil) {
		a.heldUntil = p.holdUntil
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

// sleepCtx waits d and reports true, or false as soon as ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
