package consumer

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
)

// generation is one generation's run around its engine: the partitions it got and the goroutines
// it started (a fetch per partition, the commit loop). runGeneration reads as its phases: start,
// stop the intake, drain, finish. Its contexts are runGeneration's and passed to each phase: stop
// (stopCtx) ends with the generation or with Run's context: no new fetch, no periodic commit;
// dctx bounds the generation's dispatches: the drain ends it (dcancel) once its time is up, or at
// once when the process crashes (tests).
type generation struct {
	c       *Consumer
	g       *groupGen
	e       *engine
	ids     []int // the assigned partitions, sorted
	dcancel context.CancelFunc
	// fetchCancel ends the fetches; fetchers and committer wait for them and the commit loop.
	fetchCancel context.CancelFunc
	fetchers    sync.WaitGroup
	committer   sync.WaitGroup
	total       int // the topic's partition count
}

// runGeneration owns one generation: set up each partition, fetch and dispatch until the
// generation ends or ctx is cancelled, then drain, commit with this generation's id and return.
func (c *Consumer) runGeneration(runCtx context.Context, g *groupGen) {
	stopCtx, stop := context.WithCancel(runCtx)
	defer stop()
	defer context.AfterFunc(g.ctx, stop)()
	dctx, dcancel := context.WithCancel(context.WithoutCancel(runCtx))
	defer dcancel()
	gr := &generation{c: c, g: g, ids: assigned(c.cfg.Topic, g), dcancel: dcancel}
	if !gr.start(stopCtx, dctx) {
		return
	}
	defer gr.fetchCancel()
	if !c.cfg.TestLegacyDrain {
		// The member's heartbeats renew the lease: each one accepted confirms membership.
		g.setRenew(gr.e.renewLease)
		defer g.setRenew(nil)
	}
	gr.e.requestCommit() // the first commit sets the dispatch horizon of fresh partitions

	<-stopCtx.Done()
	shutdown := runCtx.Err() != nil // else the generation ended under the member: a revoke
	if s, ok := c.cfg.Share.(ShareStopper); ok && shutdown && !c.crash {
		s.Stopping()
	}
	inflight := gr.stopIntake()
	if c.crash {
		dcancel()
		gr.e.runners.Wait()
		return
	}
	abandoned := gr.drain(dctx, shutdown, inflight)
	gr.finish(runCtx, abandoned)
}

// assigned lists the partitions of topic the generation assigned to this member, sorted.
func assigned(topic string, g *groupGen) []int {
	var ids []int
	for _, a := range g.gen.Assignments[topic] {
		ids = append(ids, a.ID)
	}
	slices.Sort(ids)
	return ids
}

// start sets the partitions up and starts their fetches and the commit loop. False: the set-up
// failed or the generation ended first (nothing was started).
func (gr *generation) start(stopCtx, dctx context.Context) bool {
	c, cfg, gen := gr.c, &gr.c.cfg, gr.g.gen
	cfg.Metrics.Rebalances.Inc()
	cfg.Metrics.AssignedParts.Set(float64(len(gr.ids)))
	e := newEngine(c, dctx)
	gr.e = e
	total, late, err := e.setup(stopCtx, gr.ids)
	if err != nil {
		if stopCtx.Err() == nil {
			cfg.Logger.Error("consumer: partition setup failed; leaving generation", zap.Int32("generation", gen.ID), zap.Error(err))
			// Returning rejoins (the coordinator hands the same partitions back, or rebalances
			// if the group changed meanwhile); pause so a lasting failure doesn't spin.
			sleepCtx(stopCtx, time.Second)
		}
		return false
	}
	gr.total = total
	c.route.partitions.Store(int64(total))
	if cfg.Share != nil {
		cfg.Share.SetPartitions(gr.ids, total)
	}
	cfg.Logger.Info("rebalance: partitions assigned", zap.String("group", cfg.GroupID), zap.Int32("generation", gen.ID),
		zap.String("member", gen.MemberID), zap.Ints("partitions", gr.ids), zap.Int("topic_partitions", total),
		zap.Ints("dedupe_kept", e.keptWindows))
	c.ready.Store(true)

	fetchCtx, fetchCancel := context.WithCancel(stopCtx)
	gr.fetchCancel = fetchCancel
	for _, id := range gr.ids {
		if slices.Contains(late, id) {
			gr.fetchers.Go(func() {
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
		gr.fetchers.Go(func() { e.fetch(fetchCtx, p) })
	}
	gr.committer.Go(func() { e.commitLoop(stopCtx, gen) })
	return true
}

// stopIntake ends the generation's intake once it is over: no more fetches, no new dispatches,
// the commit loop stopped. It returns the records in flight then.
func (gr *generation) stopIntake() int {
	c, cfg, e := gr.c, &gr.c.cfg, gr.e
	c.ready.Store(false)
	if !c.crash {
		// From now on a successor may own these partitions: the rate share goes to zero for new
		// grants, and dispatches that have not sent their request give up at once (their records
		// stay uncommitted and are dispatched again, as uncertain, by whoever owns them next).
		// Only requests already sent are waited for, within the drain bound below.
		if cfg.Share != nil {
			cfg.Share.SetPartitions(nil, gr.total)
		}
		if !cfg.TestLegacyDrain {
			e.endClaim()
		}
	}
	gr.fetchCancel()
	e.mu.Lock()
	e.stop()
	inflight := e.inflight
	e.mu.Unlock()
	gr.fetchers.Wait()
	gr.committer.Wait()
	return inflight
}

// drain waits for the records in flight to end, within ShutdownTimeout on shutdown or the revoke
// bound when the generation ended under the member, and returns how many it abandoned. Every
// runner has returned when it does.
func (gr *generation) drain(dctx context.Context, shutdown bool, inflight int) int {
	c, cfg, e := gr.c, &gr.c.cfg, gr.e
	drain, why := cfg.ShutdownTimeout, "shutdown"
	if !shutdown {
		drain, why = c.revokeDrain(), "revoke"
	}
	cfg.Logger.Info("generation ending: draining in-flight events", zap.String("why", why), zap.Int32("generation", gr.g.gen.ID),
		zap.Int("inflight", inflight), zap.Duration("timeout", drain))
	expire := func() {
		gr.dcancel()
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
		stopAfter := context.AfterFunc(gr.g.ctx, func() {
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
		cfg.Logger.Warn("generation ending: abandoning in-flight events uncommitted", zap.Int("inflight", abandoned))
	}
	gr.dcancel()
	e.runners.Wait()
	return abandoned
}

// finish makes the generation's final commit, remembers what the next generation may keep and
// removes the partitions' metric series.
func (gr *generation) finish(runCtx context.Context, abandoned int) {
	c, cfg, e, gen := gr.c, &gr.c.cfg, gr.e, gr.g.gen
	cctx, cancel := context.WithTimeout(context.WithoutCancel(runCtx), 10*time.Second)
	defer cancel()
	e.mu.Lock()
	e.final = true
	e.mu.Unlock()
	if err := e.commit(cctx, gen); err != nil {
		cfg.Logger.Warn("final commit failed", zap.Int32("generation", gen.ID), zap.Error(err))
	}
	if abandoned == 0 {
		// Every call this member sent has ended: if it gets a kept partition back, no call of
		// the previous owner (itself) can still run, and there is nothing to hold for.
		for _, id := range gr.ids {
			if k, ok := c.kept[id]; ok {
				k.drained = true
				c.kept[id] = k
			}
		}
	}
	gr.clearMetrics()
}

// clearMetrics removes the series of the generation's partitions and zeroes its gauges.
func (gr *generation) clearMetrics() {
	cfg, e := &gr.c.cfg, gr.e
	for _, id := range gr.ids {
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
