package dlq

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
)

// ToolConfig is what the operator tools (List, Replay) need to reach Kafka. Brokers and Topic
// (or DLQTopic) are required; zero values of the other fields take the defaults documented on them.
type ToolConfig struct {
	Brokers []string
	Topic   string // the main event topic: where Replay produces
	// DLQTopic defaults to Topic + ".dlq".
	DLQTopic string
	// LedgerTopic, the compacted replay ledger, defaults to DLQTopic + ".replays".
	LedgerTopic string
	// Transport carries TLS and SASL settings; nil means plaintext with DialTimeout.
	Transport kafka.RoundTripper
	// DialTimeout bounds connecting to a broker when Transport is nil (DefaultDialTimeout), so
	// an unreachable cluster fails in seconds.
	DialTimeout time.Duration
	// SkipMalformed skips (and counts) DLQ records without our headers instead of failing.
	SkipMalformed bool
	Logger        *zap.Logger      // default zap.NewNop()
	Now           func() time.Time // default time.Now; stamps ledger entries
}

// setDefaults fills the zero fields that have a default. The topics derive only from a topic
// that is set, so a config naming none stays invalid.
func (c *ToolConfig) setDefaults() {
	if c.DLQTopic == "" && c.Topic != "" {
		c.DLQTopic = c.Topic + ".dlq"
	}
	if c.LedgerTopic == "" && c.DLQTopic != "" {
		c.LedgerTopic = c.DLQTopic + ".replays"
	}
	c.DialTimeout = cmp.Or(c.DialTimeout, DefaultDialTimeout)
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports every problem of c, defaults applied, joined, each naming its field. It does
// not contact Kafka.
func (c ToolConfig) Validate() error {
	c.setDefaults()
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("brokers: no brokers"))
	}
	if c.DLQTopic == "" {
		errs = append(errs, errors.New("topic: no topic"))
	}
	if c.DialTimeout < 0 {
		errs = append(errs, fmt.Errorf("dial timeout: negative dial timeout %v", c.DialTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dlq config: %w", err)
	}
	return nil
}

// tools holds the connections of one List or Replay run.
type tools struct {
	cfg    ToolConfig
	rt     kafka.RoundTripper
	own    *kafka.Transport
	client *kafka.Client
}

func openTools(cfg ToolConfig) (*tools, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
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

// count adds r to the placement counts of s.
