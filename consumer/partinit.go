package consumer

import (
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// initPart sets up partition id from what setup read. Whatever makes the committed position
// untrustworthy is taken conservatively: records that may already have been applied are
// dispatched as uncertain (looked up before created), never skipped. mu held.
func (e *engine) initPart(id int, st position) {
	p := e.newPart(id)
	w, keep, ho := e.inherit(p, st)
	p.tr = newTracker(w)
	p.hz.committed = p.inherited
	e.holdForPrev(p, w, ho)
	p.hz.maxPicked = w - 1
	e.parts[id] = p
	p.readFrom = w
	e.restoreKept(p, st, keep)
}

// newPart returns partition id's empty state and exposes its lane gauges.
func (e *engine) newPart(id int) *part {
	cfg := e.cfg
	p := &part{
		id: id, win: newWindow(cfg.DedupeWindow), accounts: map[string]*account{},
		pending: map[uint64]*rec{}, space: make(chan struct{}, 1), hz: horizon{ext: minHorizonLead},
		lane: &lanePart{id: id, accts: map[string]*laneAcct{}, unended: map[int64]*laneRec{}},
	}
	// The lane gauges exist per owned partition, at 0 until something is parked (or for good
	// with the lane off), so alerts and dashboards see the series.
	ps := strconv.Itoa(id)
	for _, g := range []*prometheus.GaugeVec{cfg.Metrics.LaneParked, cfg.Metrics.LaneDepth, cfg.Metrics.LaneOldest} {
		g.WithLabelValues(cfg.Topic, ps).Set(0)
	}
	p.committedW = -1
	return p
}

// inherit takes over what the previous owner left of partition p: the committed watermark w to
// resume from, the horizon it may have dispatched up to (p.inherited, p.hasPrev), the completed
// ranges above w (p.done) and its hand-over statement, if its final commit made one. keep is false
// when the commit can't be the one this member kept (the log was truncated below it).
func (e *engine) inherit(p *part, st position) (w int64, keep bool, ho *handover) {
	cfg := e.cfg
	log := cfg.Logger
	resets := cfg.Metrics.OffsetResets
	first, end := st.bounds.FirstOffset, st.bounds.LastOffset
	switch {
	case st.hasCommit:
		w = st.commit.CommittedOffset
		p.hasPrev = true
		p.committedW = w
		m := e.inheritedMeta(p.id, w, end, st.commit.Metadata)
		ho = m.handover
		keep = true
		if w > end {
			// The log was truncated below our commit (unclean leader election): records now
			// written from the log end on are new, and may repeat ones that were lost. Resume
			// there, dispatching as uncertain as many as the old horizon covered; the completed
			// ranges described records that no longer exist.
			log.Error("committed offset beyond the log end: log truncated; resuming at the log end, records from there dispatched as uncertain",
				zap.Int("partition", p.id), zap.Int64("committed", w), zap.Int64("log_end", end), zap.Int64("horizon", m.horizon))
			resets.WithLabelValues("beyond_log_end").Inc()
			m = commitMeta{horizon: max(m.horizon, w)}
			p.lostBelow = w
			w, keep = end, false
		}
		p.inherited = max(m.horizon, w)
		p.done = m.done
		p.prev = prevSent{known: m.sentKnown, spans: m.sent}
		if w < first {
			log.Warn("committed offset below the log start: records lost to retention",
				zap.Int("partition", p.id), zap.Int64("committed", w), zap.Int64("log_start", first))
			resets.WithLabelValues("below_log_start").Inc()
			w = first
		}
	case first > 0:
		// No committed offset, yet records were deleted: the group's offsets expired or the
		// group was deleted, not a new group. Whatever is retained may have been applied.
		log.Error("no committed offset but the log does not start at 0 (offsets expired or group deleted): every retained record will be dispatched as uncertain",
			zap.Int("partition", p.id), zap.Int64("log_start", first), zap.Int64("log_end", end))
		resets.WithLabelValues("no_commit").Inc()
		p.hasPrev = true
		p.inherited = end
		w = first
	default:
		w = first
		p.inherited = w
	}
	return w, keep, ho
}

// inheritedMeta decodes the metadata committed beside watermark w of partition id. Metadata it
// can't use makes every record up to the log end uncertain.
func (e *engine) inheritedMeta(id int, w, end int64, meta string) commitMeta {
	cfg := e.cfg
	m, err := decodeMeta(w, meta)
	if err == nil {
		return m
	}
	// Not ours, corrupt, or from a tool that moved the offset: the previous owner may have
	// dispatched anything it had fetched. Everything up to the log end is uncertain.
	cfg.Logger.Error("commit metadata unusable: every record up to the log end will be dispatched as uncertain",
		zap.Int("partition", id), zap.Int64("offset", w), zap.Int64("log_end", end), zap.Error(err))
	reason := "bad_metadata"
	if errors.Is(err, errMetaWatermarkMismatch) {
		reason = "moved_offset" // intact metadata of ours, beside an offset a tool moved
	}
	cfg.Metrics.OffsetResets.WithLabelValues(reason).Inc()
	return commitMeta{horizon: max(w+int64(cfg.MaxBuffered), end), handover: m.handover}
}

// holdForPrev sets how long partition p waits for the previous owner's calls (prevHold): in full,
// or for what is left of the window its final commit (ho) stated; the records in [w, inherited)
// wait for it.
func (e *engine) holdForPrev(p *part, w int64, ho *handover) {
	cfg := e.cfg
	if cfg.UncertainHold <= 0 || cfg.TestLegacyDrain {
		return
	}
	now := cfg.Now()
	until := handoverHold(now, cfg.UncertainHold, cfg.HandoverSkew, ho)
	p.hold.until = until
	if p.hasPrev && len(p.prev.uncertainFrom(w, p.inherited)) > 0 {
		p.hold.main = until
		cfg.Metrics.HandoverHold.Observe(until.Sub(now).Seconds())
		cfg.Logger.Info("partition set up: accounts of uncertain records wait for the previous owner's calls",
			zap.Int("partition", p.id), zap.Int64("from", w), zap.Int64("to", p.inherited),
			zap.Duration("hold", until.Sub(now)), zap.Bool("stated", until.Before(now.Add(cfg.UncertainHold))))
	}
}

// restoreKept gives partition p back the dedupe window this member kept from its own previous
// generation when nobody else owned it since (the commit is still the one it wrote); otherwise the
// fetch reads back up to DedupeWindow records before the watermark. mu held.
func (e *engine) restoreKept(p *part, st position, keep bool) {
	cfg := e.cfg
	cp := st.commit
	if k, ok := e.c.kept[p.id]; ok && keep && k.w == cp.CommittedOffset && k.meta == cp.Metadata {
		// Its uncertain records (the horizon it dispatched up to) stay uncertain, but if that
		// generation's calls all ended, none can still be running: no hold.
		if k.drained {
			p.hold.main = time.Time{}
		}
		p.win = k.win
		e.keptWindows = append(e.keptWindows, p.id)
		cfg.Metrics.DedupeEntries.Add(float64(p.win.len()))
	} else if p.hasPrev {
		p.readFrom = max(st.bounds.FirstOffset, p.readFrom-int64(cfg.DedupeWindow))
	}
}
