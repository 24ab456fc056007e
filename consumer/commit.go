package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
)

// commitLoop commits every CommitInterval, and early when a partition's dispatch horizon runs
// short, until ctx ends. The final commit is made by the generation's owner after draining.
func (e *engine) commitLoop(ctx context.Context, gen *kafka.Generation) {
	t := time.NewTicker(e.cfg.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = e.commit(ctx, gen)
			e.updateLag(ctx)
		case <-e.commitNow:
			_ = e.commit(ctx, gen)
		}
	}
}

type commitSnap struct {
	p    *part
	w, h int64
	ext  int64
	done []span // completed ranges above w, until encoded into meta
	// stated is what the encoded metadata states done above w (the ranges that fit).
	stated []span
	ho     *handover // the final commit's hand-over statement (nil: none)
	// sent, with ho, lists the offsets below h that may have reached the API (metadata v4).
	sent []span
	// list: the commit lists sent (metadata v4 with ho, else v5); seq numbers p's snapshots.
	list bool
	seq  uint64
	meta string
}

// commit writes every partition's watermark with the metadata (horizon and completed ranges
// above the watermark) in one request, with this generation's id. A partition's new horizon is
// adopted only once the broker accepted it: dispatch never passes a horizon a successor can't see.
func (e *engine) commit(ctx context.Context, gen *kafka.Generation) error {
	cfg := e.cfg
	snaps, laneCommits := e.snapshot(cfg.Now())
	// Encoding and the round trip before the commit are O(ranges): outside the lock.
	snaps = e.encodeSnaps(snaps)
	if len(snaps) == 0 && len(laneCommits) == 0 {
		return nil
	}
	sent := time.Now()
	failed, err := e.send(ctx, gen, snaps, laneCommits)
	if err != nil {
		return err
	}
	e.adopt(snaps, failed)
	if len(failed) > 0 {
		cfg.Metrics.Commits.WithLabelValues("error").Inc()
		errs := make([]error, 0, len(failed))
		for id, err := range failed {
			errs = append(errs, fmt.Errorf("partition %d: %w", id, err))
		}
		err := errors.Join(errs...)
		cfg.Logger.Warn("commit rejected", zap.Int32("generation", gen.ID), zap.Error(err))
		return fmt.Errorf("commit: %w", err)
	}
	// The coordinator took a commit of this generation: the member was one when it was sent.
	e.renewLease(sent)
	cfg.Metrics.Commits.WithLabelValues("ok").Inc()
	return nil
}

// snapshot takes, under the lock, what each partition's commit writes (its watermark and the
// horizon to extend to) and the lane positions, sampling dispatch rates on the way.
func (e *engine) snapshot(now time.Time) ([]commitSnap, []kafka.OffsetCommit) {
	e.mu.Lock()
	defer e.mu.Unlock()
	elapsed := now.Sub(e.lastRate)
	sample := elapsed >= 200*time.Millisecond // shorter intervals (early commits) give noisy rates
	if sample {
		e.lastRate = now
	}
	snaps := make([]commitSnap, 0, len(e.parts))
	for _, p := range e.parts {
		w := p.tr.watermark()
		if sample {
			r := float64(p.hz.picked) / elapsed.Seconds()
			p.hz.rate = (p.hz.rate + r) / 2
			p.hz.picked = 0
		}
		ext := p.hz.lead()
		h := max(p.hz.committed, max(p.hz.maxPicked+1, p.hz.want, w)+ext)
		var ho *handover
		list := e.gated() && !e.final
		if e.final {
			// Nothing will be dispatched any more: the horizon can shrink to what really was,
			// keeping what the previous owner may have dispatched.
			h = max(p.inherited, p.hz.maxPicked+1, w)
			ho = e.statement(p, now)
			// The statement says which records below h may have reached the API: the
			// successor checks only those (DESIGN.md, "Never-sent records").
			list = ho != nil
		}
		var sent []span
		if list {
			// Periodic: every record written was admitted, so listed, and stays listed until
			// it ends (admit.go). Final: what took a connection, and what was inherited.
			sent = p.sentStatement(!e.final)
		}
		p.adm.snap++
		snaps = append(snaps, commitSnap{p: p, w: w, h: h, ext: ext, done: p.doneAbove(), ho: ho, sent: sent, list: list, seq: p.adm.snap})
	}
	return snaps, e.laneCommits()
}

// statement is the final commit's hand-over statement for p (nil: none, the successor holds in
// full). Every runner has returned: what the partition's requests did is known. mu held.
func (e *engine) statement(p *part, now time.Time) *handover {
	if e.cfg.HandoverSkew < 0 || e.cfg.UncertainHold <= 0 {
		return nil
	}
	return p.calls.statement(p.hold.inherited(), now)
}

// encodeSnaps encodes each snapshot's metadata and checks it round-trips; a partition whose
// metadata can't be written even without ranges is left out of this commit.
func (e *engine) encodeSnaps(snaps []commitSnap) []commitSnap {
	cfg := e.cfg
	encode := encodeMeta
	if cfg.metaEncoder != nil {
		encode = cfg.metaEncoder
	}
	verified := snaps[:0]
	for _, s := range snaps {
		enc, ok, err := verifiedMeta(encode, s.w, commitMeta{horizon: s.h, done: s.done, handover: s.ho, sentKnown: s.list, sent: s.sent}, cfg.MetadataMaxBytes)
		if err != nil {
			// Never write what a successor would reject or misread; only "done" knowledge is lost.
			cfg.Metrics.CommitMetaRefused.Inc()
			cfg.Logger.Error("commit metadata failed its round trip; committing without completed ranges",
				zap.Int("partition", s.p.id), zap.Int64("watermark", s.w), zap.Bool("skipped", !ok), zap.Error(err))
			if !ok {
				continue
			}
		}
		cfg.Metrics.CommitMetaBytes.WithLabelValues(cfg.Topic, strconv.Itoa(s.p.id)).Set(float64(len(enc.s)))
		s.w, s.h, s.meta, s.done, s.stated, s.sent = enc.w, enc.h, enc.s, nil, enc.done, nil
		verified = append(verified, s)
	}
	slices.SortFunc(verified, func(a, b commitSnap) int { return a.p.id - b.p.id })
	return verified
}

// send makes the commit request and returns the partitions the coordinator refused, or an error
// when the request failed as a whole.
func (e *engine) send(ctx context.Context, gen *kafka.Generation, snaps []commitSnap, laneCommits []kafka.OffsetCommit) (map[int]error, error) {
	cfg := e.cfg
	commits := make([]kafka.OffsetCommit, len(snaps))
	for i, s := range snaps {
		commits[i] = kafka.OffsetCommit{Partition: s.p.id, Offset: s.w, Metadata: s.meta}
	}
	topics := map[string][]kafka.OffsetCommit{}
	if len(commits) > 0 {
		topics[cfg.Topic] = commits
	}
	if len(laneCommits) > 0 {
		// The lane's positions go with the same generation id: a fenced member can't move them.
		topics[cfg.laneTopic()] = laneCommits
	}
	resp, err := e.c.client.OffsetCommit(ctx, &kafka.OffsetCommitRequest{
		GroupID: cfg.GroupID, GenerationID: int(gen.ID), MemberID: gen.MemberID, Topics: topics,
	})
	if err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			// A periodic commit cut short by its generation ending is no failure: the final
			// commit that follows carries the same offsets. Counting it as one made every
			// rebalance look like a broker refusing commits.
			cfg.Logger.Debug("commit abandoned: its generation ended", zap.Int32("generation", gen.ID), zap.Error(err))
			return nil, fmt.Errorf("commit: %w", err)
		}
		cfg.Metrics.Commits.WithLabelValues("error").Inc()
		cfg.Logger.Warn("commit failed", zap.Int32("generation", gen.ID), zap.Error(err))
		return nil, fmt.Errorf("commit: %w", err)
	}
	for _, pr := range resp.Topics[cfg.laneTopic()] {
		if pr.Error != nil && cfg.RetryLane {
			// Only progress is lost: the lane is read again from the last accepted position.
			cfg.Logger.Warn("retry lane commit rejected", zap.Int("partition", pr.Partition), zap.Error(pr.Error))
		}
	}
	failed := map[int]error{}
	for _, pr := range resp.Topics[cfg.Topic] {
		if pr.Error != nil {
			failed[pr.Partition] = pr.Error
		}
	}
	return failed, nil
}

// adopt takes the accepted commits' watermarks and horizons as the partitions' own, and lets the
// accounts waiting for the horizon go on.
func (e *engine) adopt(snaps []commitSnap, failed map[int]error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range snaps {
		if failed[s.p.id] != nil {
			continue
		}
		s.p.committedW = s.w
		s.p.hz.committed = max(s.p.hz.committed, s.h)
		// The window may stand in for the read-back only if it saw every record below the
		// committed offset: the encoder advances that offset over an inherited completed range
		// the fetch may not have reached, whose events the read-back would remember.
		if e.final && s.w <= s.p.tr.next {
			e.c.kept[s.p.id] = keptPart{w: s.w, meta: s.meta, win: s.p.win}
		}
		s.p.hz.ext = s.ext
		// Any accepted commit states every admitted record: listed, or below a horizon with no
		// list (v2, v3), which makes all of [watermark, horizon) uncertain.
		s.p.adm.accept(s.seq, s.w, s.stated)
		e.unblock(&s.p.hblocked)
		e.stated(s.p, s.w, s.stated)
	}
}

// doneAbove lists every offset above the watermark known to have ended: what the tracker saw,
// and what the inherited metadata says about offsets the fetch has not reached yet.
func (p *part) doneAbove() []span {
	out := p.tr.done()
	for _, r := range p.done {
		r.start = max(r.start, p.tr.next)
		if r.start >= r.end {
			continue
		}
		if n := len(out); n > 0 && out[n-1].end >= r.start {
			out[n-1].end = max(out[n-1].end, r.end)
			continue
		}
		out = append(out, r)
	}
	return out
}

// updateLag sets the lag (log end − committed) of every owned partition from one ListOffsets
// request, and the age of each partition's oldest unfinished record.
func (e *engine) updateLag(ctx context.Context) {
	cfg := e.cfg
	e.mu.Lock()
	ids := make([]int, 0, len(e.parts))
	committed := map[int]int64{}
	oldest := map[int]int64{}
	for id, p := range e.parts {
		ids = append(ids, id)
		committed[id] = p.committedW
		oldest[id] = p.tr.oldest()
	}
	e.mu.Unlock()
	now := cfg.Now()
	for id, at := range oldest {
		age := 0.0
		if at > 0 {
			age = now.Sub(time.Unix(0, at)).Seconds()
		}
		cfg.Metrics.OldestUnfinished.WithLabelValues(cfg.Topic, strconv.Itoa(id)).Set(age)
	}
	reqs := make([]kafka.OffsetRequest, len(ids))
	for i, id := range ids {
		reqs[i] = kafka.LastOffsetOf(id)
	}
	resp, err := e.c.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{cfg.Topic: reqs}})
	if err != nil {
		cfg.Logger.Debug("lag: list offsets", zap.Error(err))
		return
	}
	for _, po := range resp.Topics[cfg.Topic] {
		c, ok := committed[po.Partition]
		if po.Error != nil || !ok || c < 0 {
			continue
		}
		cfg.Metrics.ConsumerLag.WithLabelValues(cfg.Topic, strconv.Itoa(po.Partition)).Set(float64(max(po.LastOffset-c, 0)))
	}
}
