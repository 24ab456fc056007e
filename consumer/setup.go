package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
)

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
