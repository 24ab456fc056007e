package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
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
	filteredOut int
}

// read loads the DLQ records matching f up to the current end, marking those the ledger says
// were replayed. Only matches are kept, so memory follows the selection, not the topic.
func (t *tools) read(ctx context.Context, f Filter) (*scan, error) {
	ti, err := topicPartitions(ctx, t.client, t.cfg.DLQTopic)
	if err != nil {
		return nil, fmt.Errorf("dlq: %w", err)
	}
	ledger, err := t.readLedger(ctx)
	if err != nil {
		return nil, err
	}
	s := &scan{entries: []Entry{}}
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
		if !f.Match(e) {
			s.filteredOut++
			return nil
		}
		if le, ok := ledger[Coordinate(t.cfg.DLQTopic, e.Partition, e.Offset)]; ok && le.matches(e) {
			e.Replayed, e.ReplayedAt = true, le.ReplayedAt
		}
		s.entries = append(s.entries, *e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dlq: read %s: %w", t.cfg.DLQTopic, err)
	}
	return s, nil
}

// List returns the DLQ records matching f, read from the start of the DLQ topic to its end as of
// the call, in (partition, offset) order, each marked with whether it was already replayed.
// A record without our headers is an error wrapping ErrNotDLQRecord, unless cfg.SkipMalformed
// (then it is logged and skipped).
func List(ctx context.Context, cfg ToolConfig, f Filter) ([]Entry, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	t, err := openTools(cfg)
	if err != nil {
		return nil, err
	}
	defer t.close()
	s, err := t.read(ctx, f)
	if err != nil {
		return nil, err
	}
	return s.entries, nil
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
}

// Summary reports what Replay did (or, with DryRun, would do).
type Summary struct {
	DryRun          bool     `json:"dry_run"`
	Scanned         int      `json:"scanned"`          // DLQ records read
	Malformed       int      `json:"malformed"`        // skipped: not a chatgroupd DLQ record
	FilteredOut     int      `json:"filtered_out"`     // did not match the filter
	Matched         int      `json:"matched"`          // matched the filter
	Replayed        int      `json:"replayed"`         // produced to the main topic and acknowledged (dry run: would be)
	AlreadyReplayed int      `json:"already_replayed"` // skipped: in the ledger (use Again)
	OverMax         int      `json:"over_max"`         // skipped: dlq-replay-count >= MaxReplays
	OverLimit       int      `json:"over_limit"`       // skipped: past Limit
	Truncated       int      `json:"truncated"`        // skipped: the letter lacks the value (dlq-truncated)
	OverMaxRecords  []string `json:"over_max_records,omitempty"`
	// ReplayedRecords names the DLQ records replayed (or that would be, in a dry run).
	ReplayedRecords []string `json:"replayed_records,omitempty"`
}

// replayBatch bounds how many replays are in flight before their ledger entries are written, so
// an interrupted run leaves at most this many replays without a ledger entry (their duplicates
// are dropped by the consumer's dedupe on event_id and replay-count).
const replayBatch = 200

// Replay re-produces the DLQ records matching opts to the main topic with their key, value and
// original headers, replay-count = dlq-replay-count+1 and replay-of = the DLQ coordinate. Each
// replay is recorded in the compacted ledger topic only after the main topic acknowledged it, so
// running the same Replay twice replays nothing the second time, from any machine. On error the
// Summary says what was done before it.
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
	t, err := openTools(cfg)
	if err != nil {
		return sum, err
	}
	defer t.close()
	if cfg.Topic == "" {
		return sum, errors.New("dlq config: no topic to replay to")
	}
	// Check the target before reading anything, so a typo fails fast and changes nothing.
	if _, err := topicPartitions(ctx, t.client, t.cfg.Topic); err != nil {
		return sum, fmt.Errorf("dlq: replay target: %w", err)
	}
	s, err := t.read(ctx, opts.Filter)
	if err != nil {
		return sum, err
	}
	sum.Scanned, sum.Malformed, sum.FilteredOut = s.scanned, s.malformed, s.filteredOut

	sum.Matched = len(s.entries)
	var todo []*Entry
	for i := range s.entries {
		e := &s.entries[i]
		switch {
		case e.Truncated != "":
			sum.Truncated++ // replaying a record without its value would only dead-letter it again
		case e.Replayed && !opts.Again:
			sum.AlreadyReplayed++
		case e.ReplayCount >= opts.MaxReplays:
			sum.OverMax++
			sum.OverMaxRecords = append(sum.OverMaxRecords, Coordinate(t.cfg.DLQTopic, e.Partition, e.Offset))
		case opts.Limit > 0 && len(todo) >= opts.Limit:
			sum.OverLimit++
		default:
			todo = append(todo, e)
		}
	}
	if opts.DryRun {
		for _, e := range todo {
			sum.ReplayedRecords = append(sum.ReplayedRecords, Coordinate(t.cfg.DLQTopic, e.Partition, e.Offset))
		}
		sum.Replayed = len(todo)
		return sum, nil
	}
	if len(todo) == 0 {
		return sum, nil
	}
	if err := t.ensureLedger(ctx); err != nil {
		return sum, err
	}
	target := newProducer(t.cfg.Brokers, t.cfg.Topic, t.rt, 0)
	defer target.Close()
	led := newProducer(t.cfg.Brokers, t.cfg.LedgerTopic, t.rt, 0)
	defer led.Close()

	// Records are taken in (partition, offset) order and the DLQ is keyed by account, so one
	// account's replays reach the main topic in the order they were dead-lettered.
	for start := 0; start < len(todo); start += replayBatch {
		batch := todo[start:min(start+replayBatch, len(todo))]
		msgs := make([]kafka.Message, len(batch))
		for i, e := range batch {
			msgs[i] = ReplayMessage(e, t.cfg.DLQTopic)
		}
		werr := target.WriteMessages(ctx, msgs...)
		acked := make([]*Entry, 0, len(batch))
		var we kafka.WriteErrors
		switch {
		case werr == nil:
			acked = batch
		case errors.As(werr, &we) && len(we) == len(batch):
			for i, e := range batch {
				if we[i] == nil {
					acked = append(acked, e)
				}
			}
		}
		for _, e := range acked {
			sum.Replayed++
			sum.ReplayedRecords = append(sum.ReplayedRecords, Coordinate(t.cfg.DLQTopic, e.Partition, e.Offset))
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

// readLedger returns the newest ledger entry per DLQ coordinate. A missing ledger topic means
// nothing was replayed yet.
func (t *tools) readLedger(ctx context.Context) (map[string]*ledgerEntry, error) {
	out := map[string]*ledgerEntry{}
	ti, err := topicPartitions(ctx, t.client, t.cfg.LedgerTopic)
	if errors.Is(err, ErrTopicNotFound) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dlq: ledger: %w", err)
	}
	err = readTopic(ctx, t.client, t.cfg.LedgerTopic, ti, func(m kafka.Message) error {
		if m.Value == nil { // a tombstone forgets the replay
			delete(out, string(m.Key))
			return nil
		}
		var le ledgerEntry
		if err := json.Unmarshal(m.Value, &le); err != nil {
			return fmt.Errorf("ledger record %d/%d: %w", m.Partition, m.Offset, err)
		}
		out[string(m.Key)] = &le
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dlq: read ledger %s: %w", t.cfg.LedgerTopic, err)
	}
	return out, nil
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
