// Package naive is the consumer loop a team writes first, kept as a benchmark peer: kafka-go
// group readers, one goroutine per partition handling one event at a time, a shared rate.Limiter
// and plain retries with backoff. It is honest about its ceiling: partitions ÷ API latency.
package naive

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/chatgroupd/chatgroupd/bench/peer"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
)

// creator is the one IM call the loop makes.
type creator interface {
	CreateContactGroup(ctx context.Context, req *im.CreateRequest) (*im.CreateResponse, error)
}

// deadLetterer takes the records the loop gives up on.
type deadLetterer interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// Run consumes until ctx is cancelled. It starts one group reader per partition of the topic, so
// that the group hands each goroutine (about) one partition.
func Run(ctx context.Context, cfg peer.Config, log *zap.Logger) error {
	if log == nil {
		log = zap.NewNop()
	}
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("naive: %w", err)
	}
	client, err := peer.NewClient(cfg, log)
	if err != nil {
		return fmt.Errorf("naive: %w", err)
	}
	parts, err := partitions(ctx, cfg.Brokers[0], cfg.Topic)
	if err != nil {
		return fmt.Errorf("naive: %w", err)
	}
	dlq := &kafka.Writer{Addr: kafka.TCP(cfg.Brokers...), Topic: cfg.DLQTopic, Balancer: &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: 5 * time.Millisecond}
	defer dlq.Close()
	w := &worker{cfg: cfg, api: client, dlq: dlq, lim: newLimiter(cfg.RateLimit), log: log}
	g, ctx := errgroup.WithContext(ctx)
	for i := 0; i < parts; i++ {
		g.Go(func() error {
			r := kafka.NewReader(kafka.ReaderConfig{
				Brokers: cfg.Brokers, GroupID: cfg.Group, Topic: cfg.Topic,
				MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 250 * time.Millisecond,
				CommitInterval: time.Second, StartOffset: kafka.FirstOffset,
			})
			defer r.Close()
			return w.consume(ctx, r)
		})
	}
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("naive: %w", err)
	}
	return nil
}

func newLimiter(limit float64) *rate.Limiter {
	if limit >= peer.Unlimited {
		return rate.NewLimiter(rate.Inf, 1)
	}
	return rate.NewLimiter(rate.Limit(limit), 1)
}

func partitions(ctx context.Context, broker, topic string) (int, error) {
	conn, err := kafka.DialContext(ctx, "tcp", broker)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ps, err := conn.ReadPartitions(topic)
	if err != nil {
		return 0, err
	}
	if len(ps) == 0 {
		return 0, fmt.Errorf("topic %s has no partitions", topic)
	}
	return len(ps), nil
}

// reader is the part of *kafka.Reader the loop uses.
type reader interface {
	FetchMessage(ctx context.Context) (kafka.Message, error)
	CommitMessages(ctx context.Context, msgs ...kafka.Message) error
}

type worker struct {
	cfg   peer.Config
	api   creator
	dlq   deadLetterer
	lim   *rate.Limiter
	log   *zap.Logger
	sleep func(ctx context.Context, d time.Duration) error
}

// consume is the loop: fetch, handle, commit, one record at a time.
func (w *worker) consume(ctx context.Context, r reader) error {
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("fetch: %w", err)
		}
		if err := w.handle(ctx, m); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := r.CommitMessages(ctx, m); err != nil && ctx.Err() == nil {
			return fmt.Errorf("commit: %w", err)
		}
	}
}

// handle applies one record, retrying transient failures; what still fails goes to the DLQ.
func (w *worker) handle(ctx context.Context, m kafka.Message) error {
	ev, err := event.Parse(m.Value)
	if err != nil {
		return w.deadLetter(ctx, m, "invalid", 0, err)
	}
	req := peer.CreateRequest(ev)
	for attempt := 1; ; attempt++ {
		if err := w.lim.Wait(ctx); err != nil {
			return err
		}
		_, err := w.api.CreateContactGroup(ctx, req)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !peer.Retryable(err) || attempt > w.cfg.MaxRetries {
			return w.deadLetter(ctx, m, "rejected", attempt, err)
		}
		if err := w.wait(ctx, w.cfg.BackoffFor(attempt)); err != nil {
			return err
		}
	}
}

func (w *worker) wait(ctx context.Context, d time.Duration) error {
	if w.sleep != nil {
		return w.sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (w *worker) deadLetter(ctx context.Context, m kafka.Message, reason string, attempts int, cause error) error {
	w.log.Warn("naive: dead-lettering", zap.String("reason", reason), zap.Int("partition", m.Partition),
		zap.Int64("offset", m.Offset), zap.Error(cause))
	headers := append(m.Headers[:len(m.Headers):len(m.Headers)],
		kafka.Header{Key: "dlq-reason", Value: []byte(reason)},
		kafka.Header{Key: "dlq-error-info", Value: []byte(cause.Error())},
		kafka.Header{Key: "dlq-attempts", Value: []byte(strconv.Itoa(attempts))},
	)
	if err := w.dlq.WriteMessages(ctx, kafka.Message{Key: m.Key, Value: m.Value, Headers: headers}); err != nil {
		return fmt.Errorf("dead-letter: %w", err)
	}
	return nil
}
