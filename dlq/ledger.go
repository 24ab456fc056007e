package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
)

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
