package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/event"
)

// DefaultMaxReplays is how many times one event may be replayed from the DLQ unless the operator
// says otherwise.
const DefaultMaxReplays = 3

// ToolConfig is what the operator tools (List, Replay) need to reach Kafka.
type ToolConfig struct {
	Brokers []string
	Topic   string // the main event topic: where Replay produces
	// DLQTopic defaults to Topic + ".dlq".
	DLQTopic string
	// LedgerTopic, the compacted replay ledger, defaults to DLQTopic + ".replays".
	LedgerTopic string
	// Transport carries TLS and SASL settings; nil means plaintext with DialTimeout.
	Transport kafka.RoundTripper
	// DialTimeout bounds connecting to a broker when Transport is nil (default 5s), so an
	// unreachable cluster fails in seconds.
	DialTimeout time.Duration
	// SkipMalformed skips (and counts) DLQ records without our headers instead of failing.
	SkipMalformed bool
	Logger        *zap.Logger      // default zap.NewNop()
	Now           func() time.Time // default time.Now; stamps ledger entries
}

// withDefaults fills the defaults and validates.
func (c ToolConfig) withDefaults() (ToolConfig, error) {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("no brokers"))
	}
	if c.Topic == "" && c.DLQTopic == "" {
		errs = append(errs, errors.New("no topic"))
	}
	if c.DialTimeout < 0 {
		errs = append(errs, errors.New("negative dial timeout"))
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("dlq config: %w", err)
	}
	if c.DLQTopic == "" {
		c.DLQTopic = c.Topic + ".dlq"
	}
	if c.LedgerTopic == "" {
		c.LedgerTopic = c.DLQTopic + ".replays"
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

// Validate checks cfg without contacting Kafka.
func (c ToolConfig) Validate() error {
	_, err := c.withDefaults()
	return err
}

// Filter selects DLQ records. Zero fields match everything; a record must match every set field.
type Filter struct {
	Codes   []int    // dlq-error-code is one of these
	Reasons []string // dlq-reason is one of these (each must be a known reason)
	Account string   // the record's account (dlq-from-account, else the key)
	Group   string   // dlq-consumer-group
	Since   time.Time
	Until   time.Time // dlq-failed-at in [Since, Until)
}

// ErrUnknownReason is returned (wrapped) for a Filter reason that is not one of Reasons.
var ErrUnknownReason = errors.New("unknown reason")

// Validate rejects unknown reasons and an empty time range.
func (f Filter) Validate() error {
	for _, r := range f.Reasons {
		if !ValidReason(r) {
			return fmt.Errorf("dlq filter: %w %q (want one of %v)", ErrUnknownReason, r, Reasons())
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return fmt.Errorf("dlq filter: since %s is not before until %s",
			f.Since.Format(time.RFC3339), f.Until.Format(time.RFC3339))
	}
	return nil
}

// Match reports whether e passes the filter.
func (f Filter) Match(e *Entry) bool {
	if len(f.Codes) > 0 && !slices.Contains(f.Codes, e.Code) {
		return false
	}
	if len(f.Reasons) > 0 && !slices.Contains(f.Reasons, e.Reason) {
		return false
	}
	if f.Account != "" && e.Account() != f.Account {
		return false
	}
	if f.Group != "" && e.ConsumerGroup != f.Group {
		return false
	}
	if !f.Since.IsZero() && e.FailedAt.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && !e.FailedAt.Before(f.Until) {
		return false
	}
	return true
}

// tools holds the connections of one List or Replay run.
type tools struct {
	cfg    ToolConfig
	rt     kafka.RoundTripper
	own    *kafka.Transport
	client *kafka.Client
}

func openTools(cfg ToolConfig) (*tools, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	t := &tools{cfg: cfg, rt: cfg.Transport}
	if t.rt == nil {
		t.own = newTransport(cfg.DialTimeout)
		t.rt = t.own
	}
	t.client = &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: t.rt, Timeout: 15 * time.Second}
	return t, nil
}

func (t *tools) close() {
	if t.own != nil {
		t.own.CloseIdleConnections()
	}
}

// scan is one pass over the DLQ topic and the ledger.
type scan struct {
	entries     []Entry // the well-formed DLQ records that matched, in (partition, offset) order
	scanned     int     // records read, malformed ones included
	malformed   int
	duplicates  int // letters for an original record already seen (a retried DLQ write)
	filteredOut int
	// ledgerMalformed counts ledger records that could not be read and were skipped.
	ledgerMalformed int
}

// originalKey identifies the event record a letter is about. A DLQ write retried after a lost
// acknowledgement leaves two letters with the same one.
type originalKey struct {
	topic     string
	partition int
	offset    int64
}

// read loads the DLQ records matching f up to the current end, marking those the ledger says
// were replayed. Only matches are kept, so memory follows the selection, not the topic (plus one
// small key per record to collapse duplicate letters). Of several letters for one original record
// the first is kept; it counts as replayed when any of them was.
func (t *tools) read(ctx context.Context, f Filter) (*scan, error) {
	ti, err := topicPartitions(ctx, t.client, t.cfg.DLQTopic)
	if err != nil {
		return nil, fmt.Errorf("dlq: %w", err)
	}
	ledger, badLedger, err := t.readLedger(ctx)
	if err != nil {
		return nil, err
	}
	s := &scan{entries: []Entry{}, ledgerMalformed: badLedger}
	first := map[originalKey]int{} // index in s.entries of the kept letter, -1 when filtered out
	err = readTopic(ctx, t.client, t.cfg.DLQTopic, ti, func(m kafka.Message) error {
		s.scanned++
		e, err := Parse(m)
		if err != nil {
			if t.cfg.SkipMalformed {
				s.malformed++
				t.cfg.Logger.Warn("skipping a record that is not a chatgroupd DLQ record", zap.Error(err))
				return nil
			}
			return fmt.Errorf("dlq: %s: %w", t.cfg.DLQTopic, err)
		}
		if le, ok := ledger[Coordinate(t.cfg.DLQTopic, e.Partition, e.Offset)]; ok && le.matches(e) {
			e.Replayed, e.ReplayedAt = true, le.ReplayedAt
		}
		k := originalKey{e.OriginalTopic, e.OriginalPartition, e.OriginalOffset}
		if i, dup := first[k]; dup {
			s.duplicates++
			if i >= 0 {
				kept := &s.entries[i]
				kept.Duplicates++
				if e.Replayed && !kept.Replayed {
					kept.Replayed, kept.ReplayedAt = true, e.ReplayedAt
				}
			}
			return nil
		}
		if !f.Match(e) {
			first[k] = -1
			s.filteredOut++
			return nil
		}
		first[k] = len(s.entries)
		s.entries = append(s.entries, *e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dlq: read %s: %w", t.cfg.DLQTopic, err)
	}
	return s, nil
}

// Listing is what List found, with the counts an operator needs to trust it.
type Listing struct {
	Entries    []Entry
	Scanned    int // DLQ records read
	Malformed  int // skipped: not chatgroupd DLQ records (SkipMalformed)
	Duplicates int // letters collapsed into an earlier one for the same original record
	// LedgerMalformed counts replay-ledger records that could not be read and were skipped: the
	// letters they were about show as not replayed.
	LedgerMalformed int
	FilteredOut     int
}

// Scan is List with the counts: records read, malformed, duplicate letters and unreadable
// ledger records.
func Scan(ctx context.Context, cfg ToolConfig, f Filter) (Listing, error) {
	if err := f.Validate(); err != nil {
		return Listing{}, err
	}
	t, err := openTools(cfg)
	if err != nil {
		return Listing{}, err
	}
	defer t.close()
	s, err := t.read(ctx, f)
	if err != nil {
		return Listing{}, err
	}
	return Listing{Entries: s.entries, Scanned: s.scanned, Malformed: s.malformed, Duplicates: s.duplicates,
		LedgerMalformed: s.ledgerMalformed, FilteredOut: s.filteredOut}, nil
}

// List returns the DLQ records matching f, read from the start of the DLQ topic to its end as of
// the call, in (partition, offset) order, each marked with whether it was already replayed.
// Letters duplicated by a retried DLQ write appear once (Entry.Duplicates counts the others).
// A record without our headers is an error wrapping ErrNotDLQRecord, unless cfg.SkipMalformed
// (then it is logged and skipped).
func List(ctx context.Context, cfg ToolConfig, f Filter) ([]Entry, error) {
	l, err := Scan(ctx, cfg, f)
	if err != nil {
		return nil, err
	}
	return l.Entries, nil
}

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

// Summary reports what Replay did (or, with DryRun, would do). Before the writes (the Plan
// callback) Replayed counts the records to replay.
type Summary struct {
	DryRun bool `json:"dry_run"`
	// Source is the DLQ topic read; Target the topic replays go to.
	Source           string `json:"dlq_topic"`
	Target           string `json:"topic"`
	TargetPartitions int    `json:"topic_partitions"`
	Partitioner      string `json:"partitioner"`

	Scanned         int `json:"scanned"`          // DLQ records read
	Malformed       int `json:"malformed"`        // skipped: not a chatgroupd DLQ record
	Duplicates      int `json:"duplicates"`       // skipped: another letter for an original record already counted
	LedgerMalformed int `json:"ledger_malformed"` // unreadable replay-ledger records skipped
	FilteredOut     int `json:"filtered_out"`     // did not match the filter
	Matched         int `json:"matched"`          // matched the filter
	// OtherTopic counts matching letters whose dlq-original-topic is not Target, by topic.
	OtherTopic      int            `json:"other_topic"`
	OtherTopics     map[string]int `json:"other_topics,omitempty"`
	Replayed        int            `json:"replayed"`         // produced to the main topic and acknowledged (dry run, plan: would be)
	AlreadyReplayed int            `json:"already_replayed"` // skipped: in the ledger (use Again)
	OverMax         int            `json:"over_max"`         // skipped: dlq-replay-count >= MaxReplays
	OverLimit       int            `json:"over_limit"`       // skipped: past Limit
	// Truncated counts letters skipped because they lack the event (dlq-truncated); the event is
	// at TruncatedRecords' dlq-original-* coordinates while the event topic still holds it.
	Truncated        int      `json:"truncated"`
	TruncatedRecords []string `json:"truncated_records,omitempty"`
	// ToOriginalPartition counts replays (planned) to their dlq-original-partition; ByPartitioner
	// those placed by Partitioner instead, FallbackReasons saying why (reason → count).
	ToOriginalPartition int            `json:"to_original_partition"`
	ByPartitioner       int            `json:"by_partitioner"`
	FallbackReasons     map[string]int `json:"fallback_reasons,omitempty"`
	OverMaxRecords      []string       `json:"over_max_records,omitempty"`
	// ReplayedRecords names the DLQ records replayed (or that would be, in a dry run).
	ReplayedRecords []string `json:"replayed_records,omitempty"`
}

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

// count adds r to the placement counts of s.
func (s *Summary) count(r route) {
	if r.fallback == "" {
		s.ToOriginalPartition++
		return
	}
	s.ByPartitioner++
	if s.FallbackReasons == nil {
		s.FallbackReasons = map[string]int{}
	}
	s.FallbackReasons[r.fallback]++
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
	if err := opts.Filter.Validate(); err != nil {
		return sum, err
	}
	if opts.Limit < 0 {
		return sum, errors.New("dlq: negative limit")
	}
	if opts.MaxReplays < 0 {
		return sum, errors.New("dlq: negative max replays")
	}
	if opts.MaxReplays == 0 {
		opts.MaxReplays = DefaultMaxReplays
	}
	if opts.Partitioner == "" {
		opts.Partitioner = event.DefaultPartitioner
	}
	if err := opts.Partitioner.Validate(); err != nil {
		return sum, fmt.Errorf("dlq: %w", err)
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

	sum.Matched = len(s.entries)
	var todo []route
	for i := range s.entries {
		e := &s.entries[i]
		if e.OriginalTopic != t.cfg.Topic {
			sum.OtherTopic++
			if sum.OtherTopics == nil {
				sum.OtherTopics = map[string]int{}
			}
			sum.OtherTopics[e.OriginalTopic]++
		}
		switch {
		case e.Truncated != "":
			// The DLQ topic refused the full letter: the event's value is not in it, and a replay
			// would only come back as invalid.
			sum.Truncated++
			sum.TruncatedRecords = append(sum.TruncatedRecords, Coordinate(t.cfg.DLQTopic, e.Partition, e.Offset))
		case e.Replayed && !opts.Again:
			sum.AlreadyReplayed++
		case e.ReplayCount >= opts.MaxReplays:
			sum.OverMax++
			sum.OverMaxRecords = append(sum.OverMaxRecords, Coordinate(t.cfg.DLQTopic, e.Partition, e.Offset))
		case opts.Limit > 0 && len(todo) >= opts.Limit:
			sum.OverLimit++
		default:
			p, why := placement(e, t.cfg.Topic, len(tti.partitions), opts.Partitioner)
			todo = append(todo, route{e: e, partition: p, fallback: why})
		}
	}
	plan := sum
	for _, r := range todo {
		plan.count(r)
	}
	plan.Replayed = len(todo)
	for _, r := range todo {
		plan.ReplayedRecords = append(plan.ReplayedRecords, Coordinate(t.cfg.DLQTopic, r.e.Partition, r.e.Offset))
	}
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
	if err := t.ensureLedger(ctx); err != nil {
		return sum, err
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
		batch := todo[start:min(start+replayBatch, len(todo))]
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
			return sum, err
		}
		if werr != nil {
			return sum, fmt.Errorf("dlq: replay to %s: %d of %d records in this batch not acknowledged: %w",
				t.cfg.Topic, len(batch)-len(acked), len(batch), firstWriteError(werr))
		}
	}
	return sum, nil
}

// OtherTopicsText renders OtherTopics as `"a" (3), "b" (1)`, sorted by topic: the refusal's
// error and the printed plan name them the same way.
func (s Summary) OtherTopicsText() string {
	topics := make([]string, 0, len(s.OtherTopics))
	for k := range s.OtherTopics {
		topics = append(topics, k)
	}
	slices.Sort(topics)
	parts := make([]string, len(topics))
	for i, k := range topics {
		parts[i] = fmt.Sprintf("%q (%d)", k, s.OtherTopics[k])
	}
	return strings.Join(parts, ", ")
}

// ledgerEntry is the value of a ledger record, keyed by the DLQ coordinate.
type ledgerEntry struct {
	ReplayedAt  time.Time `json:"replayed_at"`
	ReplayCount int       `json:"replay_count"` // the replay-count header the replay carried
	Topic       string    `json:"topic"`        // where it was replayed to
	EventID     string    `json:"event_id,omitempty"`
	// FailedAt identifies the DLQ record beyond its coordinate: if the DLQ topic is ever
	// recreated, old ledger entries must not hide new records at the same offsets.
	FailedAt time.Time `json:"dlq_failed_at"`
	Host     string    `json:"host,omitempty"`
}

func (le *ledgerEntry) matches(e *Entry) bool { return le.FailedAt.Equal(e.FailedAt) }

// maxLedgerWarnings bounds the log lines about unreadable ledger records; the count says the rest.
const maxLedgerWarnings = 5

// readLedger returns the newest ledger entry per DLQ coordinate and how many ledger records it
// skipped as unreadable. A missing ledger topic means nothing was replayed yet. One bad record
// (written by hand, by another tool, or cut short) must not stop every list and replay: it is
// skipped, counted and logged, and the letter it was about shows as not replayed until a replay
// writes a good entry (a replay with an unchanged replay-count is dropped by the consumer's
// dedupe).
func (t *tools) readLedger(ctx context.Context) (map[string]*ledgerEntry, int, error) {
	out := map[string]*ledgerEntry{}
	ti, err := topicPartitions(ctx, t.client, t.cfg.LedgerTopic)
	if errors.Is(err, ErrTopicNotFound) {
		return out, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("dlq: ledger: %w", err)
	}
	bad := 0
	err = readTopic(ctx, t.client, t.cfg.LedgerTopic, ti, func(m kafka.Message) error {
		if m.Value == nil { // a tombstone forgets the replay
			delete(out, string(m.Key))
			return nil
		}
		le, err := parseLedgerEntry(m)
		if err != nil {
			if bad++; bad <= maxLedgerWarnings {
				t.cfg.Logger.Warn("dlq: skipping an unreadable replay-ledger record", zap.String("topic", t.cfg.LedgerTopic),
					zap.Int("partition", m.Partition), zap.Int64("offset", m.Offset), zap.Error(err))
			}
			return nil
		}
		out[string(m.Key)] = le
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("dlq: read ledger %s: %w", t.cfg.LedgerTopic, err)
	}
	return out, bad, nil
}

// parseLedgerEntry reads one ledger record: a key naming a DLQ record and a JSON value with the
// DLQ record's failed-at time.
func parseLedgerEntry(m kafka.Message) (*ledgerEntry, error) {
	if len(m.Key) == 0 {
		return nil, errors.New("no key")
	}
	var le ledgerEntry
	if err := json.Unmarshal(m.Value, &le); err != nil {
		return nil, fmt.Errorf("value: %w", err)
	}
	if le.FailedAt.IsZero() {
		return nil, errors.New("value: no dlq_failed_at")
	}
	return &le, nil
}

// ensureLedger creates the compacted ledger topic when missing, with the DLQ topic's replication.
func (t *tools) ensureLedger(ctx context.Context) error {
	_, err := topicPartitions(ctx, t.client, t.cfg.LedgerTopic)
	if err == nil {
		return nil
	}
	if !errors.Is(err, ErrTopicNotFound) {
		return fmt.Errorf("dlq: ledger: %w", err)
	}
	dti, err := topicPartitions(ctx, t.client, t.cfg.DLQTopic)
	if err != nil {
		return fmt.Errorf("dlq: %w", err)
	}
	res, err := t.client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: t.cfg.LedgerTopic, NumPartitions: 1, ReplicationFactor: max(dti.replication, 1),
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: "compact"}},
	}}})
	if err != nil {
		return fmt.Errorf("dlq: create ledger topic %s: %w", t.cfg.LedgerTopic, err)
	}
	if err := res.Errors[t.cfg.LedgerTopic]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("dlq: create ledger topic %s: %w", t.cfg.LedgerTopic, err)
	}
	t.cfg.Logger.Info("created the replay ledger topic", zap.String("topic", t.cfg.LedgerTopic),
		zap.Int("replication", max(dti.replication, 1)))
	// A new topic needs a leader before it takes writes.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := topicPartitions(ctx, t.client, t.cfg.LedgerTopic); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("dlq: ledger topic %s not ready: %w", t.cfg.LedgerTopic, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (t *tools) writeLedger(ctx context.Context, w *kafka.Writer, acked []*Entry) error {
	if len(acked) == 0 {
		return nil
	}
	host, _ := os.Hostname()
	now := t.cfg.Now().UTC()
	msgs := make([]kafka.Message, len(acked))
	for i, e := range acked {
		v, err := json.Marshal(ledgerEntry{
			ReplayedAt: now, ReplayCount: e.ReplayCount + 1, Topic: t.cfg.Topic,
			EventID: e.EventID, FailedAt: e.FailedAt, Host: host,
		})
		if err != nil {
			return fmt.Errorf("dlq: ledger entry: %w", err)
		}
		msgs[i] = kafka.Message{Key: []byte(Coordinate(t.cfg.DLQTopic, e.Partition, e.Offset)), Value: v}
	}
	// The replays are already acknowledged: an interrupt (Ctrl-C) must not keep their ledger
	// entries from being written, so only a timeout bounds this write.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		// The replays are in the main topic; without their ledger entries a rerun replays them
		// again with the same replay-count, which the consumer's dedupe drops.
		return fmt.Errorf("dlq: %d records were replayed but their ledger entries in %s were not written "+
			"(a rerun replays them again; the consumer drops the duplicates): %w",
			len(acked), t.cfg.LedgerTopic, firstWriteError(err))
	}
	return nil
}
