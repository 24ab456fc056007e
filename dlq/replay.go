package dlq

import (
	"context"
	"errors"
	"fmt"

	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/event"
)

// DefaultMaxReplays is how many times one event may be replayed from the DLQ unless the operator
// says otherwise.
const DefaultMaxReplays = 3

// ReplayOptions says which DLQ records to replay and how.
type ReplayOptions struct {
	Filter
	// DryRun computes the summary and changes nothing.
	DryRun bool
	// Limit caps how many records are replayed (0: no cap). The rest are counted as OverLimit.
	Limit int
	// MaxReplays skips records whose dlq-replay-count is already at least this (default 3).
	MaxReplays int
	// Again replays records the ledger says were already replayed.
	Again bool
	// Force replays letters whose dlq-original-topic is not the target topic. Without it Replay
	// refuses (ErrOtherTopic) when any matching letter came from another topic: a mistyped DLQ
	// topic would otherwise inject another service's or environment's events.
	Force bool
	// Partitioner places a replay whose original partition can't be used (the topic's partition
	// count changed, or the letter does not record it): the account's partition under the
	// producers' partitioner. Default event.DefaultPartitioner.
	Partitioner event.Partitioner
	// Plan, when set, is called with the plan once the DLQ is read and before anything is
	// produced, in a dry run too. An error from it stops Replay with nothing produced; the
	// command uses it to print the plan and to ask for confirmation.
	Plan func(Summary) error
}

// ErrOtherTopic is returned (wrapped) when matching letters came from a topic other than the
// replay target and ReplayOptions.Force is not set.
var ErrOtherTopic = errors.New("letters from another topic")

// replayBatch bounds how many replays are in flight before their ledger entries are written, so
// an interrupted run leaves at most this many replays without a ledger entry (their duplicates
// are dropped by the consumer's dedupe on event_id and replay-count).
const replayBatch = 200

// route is where one replay goes, and why when not to its original partition.
type route struct {
	e         *Entry
	partition int
	fallback  string
}

// placement picks the partition of e's replay in target (n partitions): its original partition
// while the topic still has the partition count recorded in the letter, since that is where the
// account's live events are whatever partitioner the producer uses and per-partition order and
// dedupe then hold; otherwise the account's partition under p, with the reason.
func placement(e *Entry, target string, n int, p event.Partitioner) (int, string) {
	switch {
	case e.OriginalTopic != target:
		return p.Partition(e.Key, n), "letter from another topic (--force)"
	case e.OriginalPartitions == 0:
		return p.Partition(e.Key, n), "letter does not record the topic's partition count"
	case e.OriginalPartitions != n:
		return p.Partition(e.Key, n), fmt.Sprintf("%s had %d partitions when dead-lettered, has %d now",
			target, e.OriginalPartitions, n)
	case e.OriginalPartition >= n: // a letter that contradicts itself; never produce to a partition that does not exist
		return p.Partition(e.Key, n), fmt.Sprintf("original partition %d is not one of %s's %d", e.OriginalPartition, target, n)
	}
	return e.OriginalPartition, ""
}

// Replay re-produces the DLQ records matching opts to the main topic with their key, value and
// original headers, replay-count = dlq-replay-count+1 and replay-of = the DLQ coordinate, into
// the letter's original partition when the topic's partition count is unchanged (see
// ReplayOptions.Partitioner otherwise). Letters duplicated by a retried DLQ write are replayed
// once. Each replay is recorded in the compacted ledger topic only after the main topic
// acknowledged it, so running the same Replay twice replays nothing the second time, from any
// machine. On error the Summary says what was done before it.
func Replay(ctx context.Context, cfg ToolConfig, opts ReplayOptions) (Summary, error) {
	sum := Summary{DryRun: opts.DryRun}
	if err := opts.setDefaults(); err != nil {
		return sum, err
	}
	t, err := openTools(cfg)
	if err != nil {
		return sum, err
	}
	defer t.close()
	if cfg.Topic == "" {
		return sum, errors.New("dlq config: no topic to replay to")
	}
	// Check the target before reading anything, so a typo fails fast and changes nothing.
	tti, err := topicPartitions(ctx, t.client, t.cfg.Topic)
	if err != nil {
		return sum, fmt.Errorf("dlq: replay target: %w", err)
	}
	s, err := t.read(ctx, opts.Filter)
	if err != nil {
		return sum, err
	}
	sum.Source, sum.Target, sum.Partitioner = t.cfg.DLQTopic, t.cfg.Topic, string(opts.Partitioner)
	sum.TargetPartitions = len(tti.partitions)
	sum.Scanned, sum.Malformed, sum.Duplicates, sum.FilteredOut = s.scanned, s.malformed, s.duplicates, s.filteredOut
	sum.LedgerMalformed = s.ledgerMalformed
	todo := sum.triage(s.entries, opts)
	plan := sum.plan(todo)
	if opts.Plan != nil {
		if err := opts.Plan(plan); err != nil {
			return sum, err
		}
	}
	if sum.OtherTopic > 0 && !opts.Force {
		return sum, fmt.Errorf("dlq: %w: %d of the %d matching letters in %s came from %s, not from --topic %s; "+
			"nothing was replayed (check --dlq-topic, or pass --force to replay them into %s)",
			ErrOtherTopic, sum.OtherTopic, sum.Matched, t.cfg.DLQTopic, sum.OtherTopicsText(), t.cfg.Topic, t.cfg.Topic)
	}
	if opts.DryRun || len(todo) == 0 {
		return plan, nil
	}
	err = t.replay(ctx, &sum, todo)
	return sum, err
}

// setDefaults validates o and fills its defaults.
func (o *ReplayOptions) setDefaults() error {
	if err := o.Filter.Validate(); err != nil {
		return err
	}
	if o.Limit < 0 {
		return errors.New("dlq: negative limit")
	}
	if o.MaxReplays < 0 {
		return errors.New("dlq: negative max replays")
	}
	if o.MaxReplays == 0 {
		o.MaxReplays = DefaultMaxReplays
	}
	if o.Partitioner == "" {
		o.Partitioner = event.DefaultPartitioner
	}
	if err := o.Partitioner.Validate(); err != nil {
		return fmt.Errorf("dlq: %w", err)
	}
	return nil
}

// triage counts the matching entries into s (Target, Source and TargetPartitions set) and
// returns the ones to replay, each with its placement.
func (s *Summary) triage(entries []Entry, opts ReplayOptions) []route {
	s.Matched = len(entries)
	var todo []route
	for i := range entries {
		e := &entries[i]
		if e.OriginalTopic != s.Target {
			s.OtherTopic++
			if s.OtherTopics == nil {
				s.OtherTopics = map[string]int{}
			}
			s.OtherTopics[e.OriginalTopic]++
		}
		switch {
		case e.Truncated != "":
			// The DLQ topic refused the full letter: the event's value is not in it, and a replay
			// would only come back as invalid.
			s.Truncated++
			s.TruncatedRecords = append(s.TruncatedRecords, Coordinate(s.Source, e.Partition, e.Offset))
		case e.Replayed && !opts.Again:
			s.AlreadyReplayed++
		case e.ReplayCount >= opts.MaxReplays:
			s.OverMax++
			s.OverMaxRecords = append(s.OverMaxRecords, Coordinate(s.Source, e.Partition, e.Offset))
		case opts.Limit > 0 && len(todo) >= opts.Limit:
			s.OverLimit++
		default:
			p, why := placement(e, s.Target, s.TargetPartitions, opts.Partitioner)
			todo = append(todo, route{e: e, partition: p, fallback: why})
		}
	}
	return todo
}

// plan is s as it will be once every route in todo is replayed: what the Plan callback and a
// dry run report.
func (s Summary) plan(todo []route) Summary {
	plan := s
	for _, r := range todo {
		plan.count(r)
	}
	plan.Replayed = len(todo)
	for _, r := range todo {
		plan.ReplayedRecords = append(plan.ReplayedRecords, Coordinate(s.Source, r.e.Partition, r.e.Offset))
	}
	return plan
}

// replay produces todo to the main topic in batches of replayBatch, writing each batch's ledger
// entries once the main topic acknowledged it, and counts what was done into sum.
func (t *tools) replay(ctx context.Context, sum *Summary, todo []route) error {
	if err := t.ensureLedger(ctx); err != nil {
		return err
	}
	target := newProducer(t.cfg.Brokers, t.cfg.Topic, t.rt, 0)
	// Each replay carries the partition placement chose; kafka-go hands the message to the
	// balancer as given, so it reads the choice back from there.
	target.Balancer = kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { return m.Partition })
	defer target.Close()
	led := newProducer(t.cfg.Brokers, t.cfg.LedgerTopic, t.rt, 0)
	defer led.Close()

	// Records are taken in (partition, offset) order and the DLQ is keyed by account, so one
	// account's replays reach the main topic in the order they were dead-lettered.
	for start := 0; start < len(todo); start += replayBatch {
		if err := t.replayBatch(ctx, target, led, sum, todo[start:min(start+replayBatch, len(todo))]); err != nil {
			return err
		}
	}
	return nil
}

// replayBatch produces one batch and records in the ledger those the main topic acknowledged.
func (t *tools) replayBatch(ctx context.Context, target, led *kafka.Writer, sum *Summary, batch []route) error {
	msgs := make([]kafka.Message, len(batch))
	for i, r := range batch {
		msgs[i] = ReplayMessage(r.e, t.cfg.DLQTopic)
		msgs[i].Partition = r.partition
	}
	werr := target.WriteMessages(ctx, msgs...)
	acked := make([]*Entry, 0, len(batch))
	var we kafka.WriteErrors
	for i, r := range batch {
		// On a partial failure kafka-go reports each message's own error.
		if werr == nil || (errors.As(werr, &we) && len(we) == len(batch) && we[i] == nil) {
			acked = append(acked, r.e)
			sum.Replayed++
			sum.ReplayedRecords = append(sum.ReplayedRecords, Coordinate(t.cfg.DLQTopic, r.e.Partition, r.e.Offset))
			sum.count(r)
		}
	}
	if err := t.writeLedger(ctx, led, acked); err != nil {
		return err
	}
	if werr != nil {
		return fmt.Errorf("dlq: replay to %s: %d of %d records in this batch not acknowledged: %w",
			t.cfg.Topic, len(batch)-len(acked), len(batch), firstWriteError(werr))
	}
	return nil
}
