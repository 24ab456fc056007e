package dlq

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// Defaults of Config and ToolConfig.
const (
	// DefaultDialTimeout bounds connecting to a broker, so an unreachable cluster fails in seconds.
	DefaultDialTimeout = 5 * time.Second
	// DefaultWriteTimeout bounds one produce request.
	DefaultWriteTimeout = 10 * time.Second
)

// Config configures a Writer. Brokers, Topic and GroupID are required; zero values of the other
// fields take the defaults documented on them.
type Config struct {
	Brokers []string
	Topic   string // the DLQ topic
	GroupID string // written to dlq-consumer-group
	// Transport carries TLS and SASL settings; nil means plaintext with DialTimeout.
	Transport kafka.RoundTripper
	// DialTimeout bounds connecting to a broker when Transport is nil (DefaultDialTimeout).
	DialTimeout time.Duration
	// WriteTimeout bounds one produce request (DefaultWriteTimeout).
	WriteTimeout time.Duration
	Logger       *zap.Logger      // default zap.NewNop()
	Metrics      *metrics.Metrics // default metrics.NewNop()
	// Now stamps dlq-failed-at (default time.Now).
	Now func() time.Time
}

// setDefaults fills the zero fields that have a default.
func (c *Config) setDefaults() {
	c.DialTimeout = cmp.Or(c.DialTimeout, DefaultDialTimeout)
	c.WriteTimeout = cmp.Or(c.WriteTimeout, DefaultWriteTimeout)
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewNop()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports every problem of c, defaults applied, joined, each naming its field.
func (c Config) Validate() error {
	c.setDefaults()
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("brokers: no brokers"))
	}
	if c.Topic == "" {
		errs = append(errs, errors.New("topic: no DLQ topic"))
	}
	if c.GroupID == "" {
		errs = append(errs, errors.New("group id: no consumer group id"))
	}
	if c.DialTimeout < 0 {
		errs = append(errs, fmt.Errorf("dial timeout: negative timeout %v", c.DialTimeout))
	}
	if c.WriteTimeout < 0 {
		errs = append(errs, fmt.Errorf("write timeout: negative timeout %v", c.WriteTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dlq config: %w", err)
	}
	return nil
}

// Writer writes dead-letter records. It implements consumer.DeadLetterer and is safe for
// concurrent use: concurrent calls share produce requests.
type Writer struct {
	cfg Config
	w   *kafka.Writer
	own *kafka.Transport // the transport we created and must close, nil when given one
	// closed is set by Close. After it the write fails at once (kafka-go's io.ErrClosedPipe),
	// and DeadLetter must not look a partition count up first: that would open a connection
	// pool, with its goroutines, on the transport Close released, and nothing would close it.
	closed atomic.Bool
	log    *zap.Logger
	m      *metrics.Metrics
	now    func() time.Time
	// counts fills dlq-original-partition-count.
	counts *partitionCounts
}

// NewWriter applies cfg's defaults, validates it and returns a Writer. It does not contact
// Kafka; Check does.
func NewWriter(cfg Config) (*Writer, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	w := &Writer{cfg: cfg, log: cfg.Logger, m: cfg.Metrics, now: cfg.Now}
	rt := cfg.Transport
	if rt == nil {
		w.own = newTransport(cfg.DialTimeout)
		rt = w.own
	}
	w.w = newProducer(cfg.Brokers, cfg.Topic, rt, cfg.WriteTimeout)
	w.counts = newPartitionCounts(cfg.Brokers, rt, w.log, w.now)
	return w, nil
}

// newProducer is the one producer shape the package uses. The kafka-go defaults are unsafe here:
// acks=all so a record counts only once replicated, Murmur2 so the key (the account) picks the
// partition like Java clients do, and a tiny batch timeout so a synchronous write takes
// milliseconds, not the default second.
func newProducer(brokers []string, topic string, rt kafka.RoundTripper, writeTimeout time.Duration) *kafka.Writer {
	if writeTimeout <= 0 {
		writeTimeout = DefaultWriteTimeout
	}
	return &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		Balancer:     &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 2 * time.Millisecond,
		BatchSize:    500,
		// A dead letter may carry a 1 MiB value plus headers: leave the size check to the broker's
		// max.message.bytes instead of kafka-go's 1 MiB default, which would reject it client-side.
		BatchBytes:   16 << 20,
		MaxAttempts:  3,
		WriteTimeout: writeTimeout,
		Transport:    rt,
	}
}

// newTransport is the plaintext transport used when the caller gave none. The dial timeout makes an
// unreachable broker fail in seconds.
func newTransport(dialTimeout time.Duration) *kafka.Transport {
	if dialTimeout <= 0 {
		dialTimeout = DefaultDialTimeout
	}
	return &kafka.Transport{DialTimeout: dialTimeout, ClientID: "chatgroupd-dlq"}
}

// Check verifies that the DLQ topic exists, so the service can refuse to start rather than fail
// on its first dead letter.
func (w *Writer) Check(ctx context.Context) error {
	c := &kafka.Client{Addr: kafka.TCP(w.cfg.Brokers...), Transport: w.w.Transport, Timeout: 10 * time.Second}
	if _, err := topicPartitions(ctx, c, w.cfg.Topic); err != nil {
		return fmt.Errorf("dlq: %w", err)
	}
	return nil
}

// DeadLetter writes the DLQ record for rec and returns nil only once Kafka acknowledged it with
// acks=all. On error nothing may be assumed written; the caller retries and must not commit past
// rec meanwhile. A retried write may duplicate the record: the dlq-original-* coordinate is the
// dedupe key.
//
// When the DLQ topic refuses the letter as too large (a record near the event topic's size limit
// plus the dlq-* headers, or a DLQ topic with a smaller max.message.bytes), it is written again
// without the value, then if need be without the original key, headers and dlq-result, with a
// dlq-truncated header saying so: a retry at full size could never succeed and would hold the
// partition forever. Every refused write counts in chatgroupd_dlq_write_failures_total{reason}.
func (w *Writer) DeadLetter(ctx context.Context, rec kafka.Message, l Letter) error {
	if l.OriginalPartitions == 0 && !w.closed.Load() {
		l.OriginalPartitions = w.counts.get(ctx, rec.Topic)
	}
	now := w.now()
	var err error
	for k := keepAll; k <= dropAll; k++ {
		err = w.w.WriteMessages(ctx, record(rec, l, w.cfg.GroupID, now, k))
		if err == nil {
			if k > keepAll {
				w.m.DLQTruncated.Inc()
			}
			break
		}
		err = firstWriteError(err)
		w.m.DLQWriteFailures.WithLabelValues(failureReason(err)).Inc()
		if !tooLarge(err) || ctx.Err() != nil {
			break
		}
		w.log.Warn("dead letter too large for the DLQ topic; writing it truncated",
			zap.String("topic", rec.Topic), zap.Int("partition", rec.Partition), zap.Int64("offset", rec.Offset),
			zap.Int("value_bytes", len(rec.Value)), zap.String("dlq_topic", w.cfg.Topic), zap.Error(err))
	}
	if err != nil {
		return fmt.Errorf("dlq: write %s/%d/%d to %s: %w", rec.Topic, rec.Partition, rec.Offset, w.cfg.Topic, err)
	}
	code := FormatCode(l.Code)
	w.m.DLQRecords.WithLabelValues(l.Reason, code, eventTypeLabel(event.PeekType(rec.Value))).Inc()
	w.log.Warn("dead-lettered",
		zap.String("topic", rec.Topic),
		zap.Int("partition", rec.Partition),
		zap.Int64("offset", rec.Offset),
		zap.String("reason", l.Reason),
		zap.Int("code", l.Code),
		zap.String("info", bound(l.Info, 512)),
		zap.Int("attempts", l.Attempts),
		zap.String("event_id", bound(l.EventID, maxIDBytes)),
		zap.String("account", bound(l.FromAccount, maxIDBytes)),
		zap.Int("replay_count", l.ReplayCount),
		zap.String("dlq_topic", w.cfg.Topic),
	)
	return nil
}

// tooLarge reports whether err says the letter exceeds a size limit: the broker's
// (MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE) or kafka-go's own batch limit.
func tooLarge(err error) bool {
	var mtl kafka.MessageTooLargeError
	return errors.Is(err, kafka.MessageSizeTooLarge) || errors.Is(err, kafka.RecordListTooLarge) || errors.As(err, &mtl)
}

// failureReason is the reason label of chatgroupd_dlq_write_failures_total for err.
func failureReason(err error) string {
	var ne net.Error
	switch {
	case tooLarge(err):
		return metrics.DLQFailTooLarge
	case errors.Is(err, kafka.UnknownTopicOrPartition), errors.Is(err, kafka.InvalidTopic):
		return metrics.DLQFailTopicMissing
	case errors.Is(err, kafka.TopicAuthorizationFailed), errors.Is(err, kafka.ClusterAuthorizationFailed),
		errors.Is(err, kafka.SASLAuthenticationFailed):
		return metrics.DLQFailDenied
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, kafka.RequestTimedOut),
		errors.As(err, &ne) && ne.Timeout():
		return metrics.DLQFailTimeout
	}
	return metrics.DLQFailOther
}

// Close flushes nothing (writes are synchronous) and releases connections.
func (w *Writer) Close() error {
	w.closed.Store(true)
	err := w.w.Close()
	if w.own != nil {
		w.own.CloseIdleConnections()
	}
	if err != nil {
		return fmt.Errorf("dlq: close: %w", err)
	}
	return nil
}

// firstWriteError unwraps kafka-go's per-message WriteErrors for a one-message write, so the
// caller sees the broker error itself.
func firstWriteError(err error) error {
	var we kafka.WriteErrors
	if errors.As(err, &we) {
		for _, e := range we {
			if e != nil {
				return e
			}
		}
	}
	return err
}
