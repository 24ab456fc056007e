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

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

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

	// kept holds, per partition, the dedupe window and the final commit of the last generation.
	// When the next generation gets the partition back with that very commit, nobody else has
	// moved it, and the window replaces the read-back: rebalances cost no history re-read.
	// Only the Run goroutine's generations touch it, one at a time.
	kept map[int]keptPart
	// route counts records the configured partitioner would not put where they are.
	route routeCheck
}

type keptPart struct {
	w    int64
	meta string
	win  *window
}

// New checks cfg and returns a Consumer; it does not connect until Run.
func New(cfg Config) (*Consumer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Consumer{
		cfg:    cfg,
		client: &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: cfg.Transport, Timeout: 10 * time.Second},
		hash:   hasher{seed: maphash.MakeSeed()},
		kept:   map[int]keptPart{},
	}, nil
}

// Ready reports whether the consumer is a member of the group with a current generation.
func (c *Consumer) Ready() bool { return c.ready.Load() }

// Run consumes until ctx is cancelled, then stops fetching, lets in-flight events finish within
// ShutdownTimeout, commits, leaves the group and returns nil. It returns an error only when the
// group can't be set up at all.
func (c *Consumer) Run(ctx context.Context) error {
	cfg := &c.cfg
	log := cfg.Logger
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                cfg.GroupID,
		Brokers:           cfg.Brokers,
		Dialer:            cfg.Dialer,
		Topics:            []string{cfg.Topic},
		HeartbeatInterval: c.heartbeat(),
		SessionTimeout:    cfg.SessionTimeout,
		RebalanceTimeout:  cfg.RebalanceTimeout,
		JoinGroupBackoff:  time.Second,
		StartOffset:       kafka.FirstOffset,
		ErrorLogger: kafka.LoggerFunc(func(f string, a ...any) {
			log.Debug("kafka group", zap.String("msg", fmt.Sprintf(f, a...)))
		}),
	})
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	for ctx.Err() == nil {
		gen, err := cg.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
				break
			}
			log.Warn("consumer group: join failed, retrying", zap.String("group", cfg.GroupID), zap.Error(err))
			continue
		}
		done := make(chan struct{})
		// Everything of the generation runs inside one Start function: kafka-go then waits for it
		// before rejoining, and it returns only when the generation is over.
		gen.Start(func(gctx context.Context) {
			defer close(done)
			c.runGeneration(ctx, gctx, gen)
		})
		<-done
	}
	c.ready.Store(false)
	// Close leaves the group; it waits for the generation's functions, which have returned.
	_ = cg.Close()
	log.Info("consumer stopped", zap.String("group", cfg.GroupID))
	return nil
}

func (c *Consumer) heartbeat() time.Duration { return min(3*time.Second, c.cfg.SessionTimeout/3) }

// runGeneration owns one generation: set up each partition, fetch and dispatch until the
// generation ends or ctx is cancelled, then drain, commit with this generation's id and return.
func (c *Consumer) runGeneration(runCtx, gctx context.Context, gen *kafka.Generation) {
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
	total, err := e.setup(stopCtx, ids)
	if err != nil {
		if stopCtx.Err() == nil {
			log.Error("consumer: partition setup failed; leaving generation", zap.Int32("generation", gen.ID), zap.Error(err))
			// Returning ends the generation and rejoins; pause so a lasting failure doesn't spin.
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
		p := e.parts[id]
		fetchers.Go(func() { e.fetch(fetchCtx, p) })
	}
	committer.Go(func() { e.commitLoop(stopCtx, gen) })
	e.requestCommit() // the first commit sets the dispatch horizon of fresh partitions

	<-stopCtx.Done()
	c.ready.Store(false)
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
	drain := cfg.ShutdownTimeout
	why := "shutdown"
	if runCtx.Err() == nil {
		// The coordinator evicts a member that doesn't rejoin within RebalanceTimeout of the
		// rebalance start, which we learn of up to a heartbeat late; evicted, its partitions would
		// be processed by the next owner while it still drains.
		drain = max(100*time.Millisecond, min(drain, cfg.RebalanceTimeout/2, cfg.RebalanceTimeout-c.heartbeat()-time.Second))
		why = "revoke"
	}
	log.Info("generation ending: draining in-flight events", zap.String("why", why), zap.Int32("generation", gen.ID),
		zap.Int("inflight", inflight), zap.Duration("timeout", drain))
	t := time.AfterFunc(drain, func() {
		dcancel()
		e.mu.Lock()
		e.idle.Broadcast()
		e.mu.Unlock()
	})
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
	for _, id := range ids {
		ps := strconv.Itoa(id)
		cfg.Metrics.ConsumerLag.DeleteLabelValues(cfg.Topic, ps)
		cfg.Metrics.OldestUnfinished.DeleteLabelValues(cfg.Topic, ps)
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
// topic's partition count.
func (e *engine) setup(ctx context.Context, ids []int) (int, error) {
	cfg := e.cfg
	cl := e.c.client
	var (
		of    *kafka.OffsetFetchResponse
		lo    *kafka.ListOffsetsResponse
		md    *kafka.MetadataResponse
		total int
	)
	// Retry briefly: a coordinator that moved or a broker that restarts is common at rebalance.
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if attempt > 0 {
			if !sleepCtx(ctx, time.Duration(attempt)*200*time.Millisecond) {
				return 0, ctx.Err()
			}
		}
		of, err = cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: cfg.GroupID, Topics: map[string][]int{cfg.Topic: ids}})
		if err == nil && of.Error != nil {
			err = of.Error
		}
		if err != nil {
			err = fmt.Errorf("offset fetch: %w", err)
			continue
		}
		reqs := make([]kafka.OffsetRequest, 0, 2*len(ids))
		for _, id := range ids {
			reqs = append(reqs, kafka.FirstOffsetOf(id), kafka.LastOffsetOf(id))
		}
		lo, err = cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{cfg.Topic: reqs}})
		if err != nil {
			err = fmt.Errorf("list offsets: %w", err)
			continue
		}
		md, err = cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{cfg.Topic}})
		if err == nil && (len(md.Topics) != 1 || md.Topics[0].Error != nil) {
			err = fmt.Errorf("topic %s missing", cfg.Topic)
		}
		if err != nil {
			err = fmt.Errorf("metadata: %w", err)
			continue
		}
		total = len(md.Topics[0].Partitions)
		break
	}
	if err != nil {
		return 0, fmt.Errorf("consumer setup: %w", err)
	}
	committed := map[int]kafka.OffsetFetchPartition{}
	for _, p := range of.Topics[cfg.Topic] {
		if p.Error != nil {
			return 0, fmt.Errorf("consumer setup: offset fetch partition %d: %w", p.Partition, p.Error)
		}
		committed[p.Partition] = p
	}
	bounds := map[int]kafka.PartitionOffsets{}
	for _, p := range lo.Topics[cfg.Topic] {
		if p.Error != nil {
			return 0, fmt.Errorf("consumer setup: list offsets partition %d: %w", p.Partition, p.Error)
		}
		bounds[p.Partition] = p
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, id := range ids {
		b := bounds[id]
		cp, ok := committed[id]
		p := &part{
			id: id, win: newWindow(cfg.DedupeWindow), accounts: map[string]*account{},
			pending: map[uint64]*rec{}, space: make(chan struct{}, 1), ext: int64(2 * cfg.MaxInFlight),
		}
		w := b.FirstOffset
		p.hasPrev = ok && cp.CommittedOffset >= 0
		p.committedW = -1
		if p.hasPrev {
			w = cp.CommittedOffset
			p.committedW = w
			m, err := decodeMeta(w, cp.Metadata)
			if err != nil {
				// No metadata of ours (another tool reset the offset, or an older version): the
				// previous owner may have dispatched anything ahead, as far as a full buffer.
				e.cfg.Logger.Warn("commit metadata unusable; treating the next records as uncertain",
					zap.Int("partition", id), zap.Int64("offset", w), zap.Int("uncertain", cfg.MaxBuffered), zap.Error(err))
				m = commitMeta{horizon: w + int64(cfg.MaxBuffered)}
			}
			p.inherited = max(m.horizon, w)
			p.done = m.done
			if w < b.FirstOffset {
				e.cfg.Logger.Warn("committed offset below the log start: records lost to retention",
					zap.Int("partition", id), zap.Int64("committed", w), zap.Int64("log_start", b.FirstOffset))
				w = b.FirstOffset
			}
		} else {
			p.inherited = w
		}
		p.tr = newTracker(w)
		p.committedH = p.inherited
		p.maxPicked = w - 1
		e.parts[id] = p
		p.readFrom = w
		if k, ok := e.c.kept[id]; ok && p.hasPrev && k.w == cp.CommittedOffset && k.meta == cp.Metadata {
			p.win = k.win
			e.keptWindows = append(e.keptWindows, id)
			e.cfg.Metrics.DedupeEntries.Add(float64(p.win.len()))
		} else if p.hasPrev {
			p.readFrom = max(b.FirstOffset, w-int64(cfg.DedupeWindow))
		}
	}
	clear(e.c.kept)
	return total, nil
}

// fetch reads one partition: first the history before the watermark into the dedupe window, then
// live records into the engine, pausing while the partition's buffer is full.
func (e *engine) fetch(ctx context.Context, p *part) {
	cfg := e.cfg
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: cfg.Brokers, Topic: cfg.Topic, Partition: p.id, Dialer: cfg.Dialer,
		MinBytes: 1, MaxBytes: 4 << 20, MaxWait: 250 * time.Millisecond, ReadBatchTimeout: 2 * time.Second,
		QueueCapacity: 256, ReadLagInterval: -1,
		ErrorLogger: kafka.LoggerFunc(func(f string, a ...any) {
			cfg.Logger.Debug("kafka reader", zap.Int("partition", p.id), zap.String("msg", fmt.Sprintf(f, a...)))
		}),
	})
	defer r.Close()
	if err := r.SetOffset(p.readFrom); err != nil {
		cfg.Logger.Error("fetch: set offset", zap.Int("partition", p.id), zap.Error(err))
		return
	}
	start := p.tr.next
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			cfg.Logger.Warn("fetch failed, retrying", zap.Int("partition", p.id), zap.Error(err))
			if !sleepCtx(ctx, time.Second) {
				return
			}
			continue
		}
		if m.Offset < start {
			e.readBack(p, m)
			continue
		}
		if !e.ingest(ctx, p, m) {
			return
		}
	}
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
			e.outcomes[metrics.OutcomeDuplicate].Inc()
		}
		return true
	}
	a := p.accounts[name]
	if a == nil {
		h := e.c.hash.account(name)
		a = &account{name: name, hash: h, p: p, lastSeq: p.win.lastSeq(h)}
		p.accounts[name] = a
	}
	r := &rec{msg: m, ev: ev, verr: verr, key: key, replay: replay, arrived: now, a: a,
		uncertain: p.hasPrev && off < p.inherited}
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

func replayCount(hs []kafka.Header) int {
	for _, h := range hs {
		if h.Key == event.HeaderReplayCount {
			n, err := strconv.Atoi(string(h.Value))
			if err == nil && n > 0 {
				return n
			}
			return 0
		}
	}
	return 0
}

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
