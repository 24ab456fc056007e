package consumer

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
)

// errStalled ends a leader's generation whose other members' partitions made no progress.
var errStalled = errors.New("partitions of other members without progress")

// partProgress is one partition as the leader's progress watch samples it.
type partProgress struct {
	committed int64 // -1: nothing committed
	meta      string
	start     int64 // log start offset
	end       int64 // log end offset
}

// waiting reports whether records wait beyond what the group committed.
func (s partProgress) waiting() bool {
	from := s.committed
	if from < 0 {
		from = s.start
	}
	return s.end > from
}

// stallWatch tracks, per partition, since when its committed offset and metadata have stayed
// the same while records wait beyond them. It is pure (the caller gives the time) so its rules
// are tested without a clock.
type stallWatch struct {
	limit time.Duration
	last  map[int]partProgress
	since map[int]time.Time
}

func newStallWatch(limit time.Duration) *stallWatch {
	return &stallWatch{limit: limit, last: map[int]partProgress{}, since: map[int]time.Time{}}
}

// observe records a sample of partition p taken at now.
func (w *stallWatch) observe(now time.Time, p int, s partProgress) {
	prev, seen := w.last[p]
	w.last[p] = s
	switch {
	case !s.waiting():
		delete(w.since, p)
	case !seen || prev.committed != s.committed || prev.meta != s.meta:
		w.since[p] = now // progress (or the first look): the clock starts again
	default:
		if _, ok := w.since[p]; !ok {
			w.since[p] = now // records arrived behind an unchanged commit
		}
	}
}

// stalled returns the partitions without progress for at least the limit at now, sorted.
func (w *stallWatch) stalled(now time.Time) []int {
	var out []int
	for p, t := range w.since {
		if now.Sub(t) >= w.limit {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// watchProgress runs, for the life of a generation this member leads, a check on the partitions
// it gave to others (owners: partition → member id): when one has records waiting and neither
// its committed offset nor its metadata changed for Config.ProgressStall, the generation ends
// and the member rejoins, which makes the coordinator rebalance (a leader's rejoin always does).
//
// Why: a coordinator hands out assignments for every member that was waiting in the join when
// the rebalance completed, and a member may vanish right then (killed while its JoinGroup was
// parked) and never hear of them. A broker that schedules that member's session expiry at the
// join, as Apache Kafka does, evicts it a session later and the group rebalances; one that
// doesn't (the embedded broker when the join answer could not be delivered) keeps it forever
// and its partitions are never consumed. Members' heartbeats keep succeeding then, so nothing
// else would notice. Only the leader acts: its rejoin rebalances a stable group, a follower's
// (with unchanged metadata) does not, and a stable generation always has a live leader (it
// sent the assignment).
func (m *member) watchProgress(g *groupGen, owners map[int]string) {
	cfg := m.cfg
	if cfg.ProgressStall <= 0 || len(owners) == 0 {
		return
	}
	parts := slices.Sorted(maps.Keys(owners))
	w := newStallWatch(cfg.ProgressStall)
	period := max(m.hb, min(cfg.ProgressStall/4, cfg.SessionTimeout))
	for sleepCtx(g.ctx, period) {
		ctx, cancel := context.WithTimeout(g.ctx, period)
		samples, err := m.sampleProgress(ctx, parts)
		cancel()
		if g.ctx.Err() != nil {
			return
		}
		if err != nil {
			// No sample, no progress seen: a partition's clock runs on.
			cfg.Logger.Debug("consumer group: progress watch", zap.Int32("generation", g.gen.ID), zap.Error(err))
		}
		now := time.Now()
		for p, s := range samples {
			w.observe(now, p, s)
		}
		stalled := w.stalled(now)
		if len(stalled) == 0 {
			continue
		}
		var who []string
		for _, p := range stalled {
			s := w.last[p]
			who = append(who, fmt.Sprintf("%d→%s (committed %d, end %d)", p, owners[p], s.committed, s.end))
		}
		cfg.Logger.Warn("consumer group: partitions of other members made no progress; rejoining to rebalance",
			zap.String("group", cfg.GroupID), zap.Int32("generation", g.gen.ID), zap.Ints("partitions", stalled),
			zap.Strings("owners", who), zap.Duration("stall", cfg.ProgressStall))
		cfg.Metrics.StalledRejoins.Inc()
		g.cancel(fmt.Errorf("%w: partitions %v for %s", errStalled, stalled, cfg.ProgressStall))
		return
	}
}

// sampleProgress reads the group's committed offsets and the log bounds of parts. Partitions
// with an error are left out.
func (m *member) sampleProgress(ctx context.Context, parts []int) (map[int]partProgress, error) {
	topic := m.cfg.Topic
	of, err := m.cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: m.cfg.GroupID, Topics: map[string][]int{topic: parts}})
	if err == nil && of.Error != nil {
		err = of.Error
	}
	if err != nil {
		return nil, fmt.Errorf("offset fetch: %w", err)
	}
	reqs := make([]kafka.OffsetRequest, 0, 2*len(parts))
	for _, p := range parts {
		reqs = append(reqs, kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	lo, err := m.cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("list offsets: %w", err)
	}
	bounds := map[int]kafka.PartitionOffsets{}
	for _, b := range lo.Topics[topic] {
		if b.Error == nil {
			bounds[b.Partition] = b
		}
	}
	out := make(map[int]partProgress, len(parts))
	var errs []error
	for _, c := range of.Topics[topic] {
		b, ok := bounds[c.Partition]
		if c.Error != nil || !ok {
			errs = append(errs, fmt.Errorf("partition %d: no sample", c.Partition))
			continue
		}
		out[c.Partition] = partProgress{committed: c.CommittedOffset, meta: c.Metadata, start: b.FirstOffset, end: b.LastOffset}
	}
	return out, errors.Join(errs...)
}

// assignmentGaps checks an assignment against the topic's partitions and the members of the
// generation: the partitions no member of it got (also those given to an id that is not a
// member) and those given more than once. Both are sorted.
func assignmentGaps(topic string, parts []int, members []string, out kafka.GroupMemberAssignments) (unowned, twice []int) {
	count := map[int]int{}
	for _, id := range members {
		for _, p := range out[id][topic] {
			count[p]++
		}
	}
	for _, p := range parts {
		switch n := count[p]; {
		case n == 0:
			unowned = append(unowned, p)
		case n > 1:
			twice = append(twice, p)
		}
	}
	slices.Sort(unowned)
	slices.Sort(twice)
	return unowned, twice
}
