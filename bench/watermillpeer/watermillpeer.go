// Package watermillpeer is the benchmark's framework peer: a Watermill router on the Kafka
// (Sarama) subscriber with the Throttle, Retry, Deduplicator and PoisonQueue middlewares, calling
// the same IM client. It is what a team picking an off-the-shelf event router would run.
package watermillpeer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/bench/peer"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
)

// DedupeWindow is how long the Deduplicator remembers an event id.
const DedupeWindow = 10 * time.Minute

// errPermanent marks handler errors that retrying cannot fix; they go to the poison queue at once.
var errPermanent = errors.New("permanent")

// creator is the one IM call the handler makes.
type creator interface {
	CreateContactGroup(ctx context.Context, req *im.CreateRequest) (*im.CreateResponse, error)
}

// Run consumes until ctx is cancelled.
func Run(ctx context.Context, cfg peer.Config, log *zap.Logger) error {
	if log == nil {
		log = zap.NewNop()
	}
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("watermill peer: %w", err)
	}
	client, err := peer.NewClient(cfg, log)
	if err != nil {
		return fmt.Errorf("watermill peer: %w", err)
	}
	wlog := zapAdapter{log}
	sc := kafka.DefaultSaramaSubscriberConfig()
	sc.Version = sarama.V2_8_0_0
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{
		Brokers: cfg.Brokers, Unmarshaler: kafka.DefaultMarshaler{}, OverwriteSaramaConfig: sc, ConsumerGroup: cfg.Group,
	}, wlog)
	if err != nil {
		return fmt.Errorf("watermill peer: subscriber: %w", err)
	}
	pc := kafka.DefaultSaramaSyncPublisherConfig()
	pc.Version = sarama.V2_8_0_0
	pc.Producer.RequiredAcks = sarama.WaitForAll
	pub, err := kafka.NewPublisher(kafka.PublisherConfig{
		Brokers: cfg.Brokers, Marshaler: kafka.DefaultMarshaler{}, OverwriteSaramaConfig: pc,
	}, wlog)
	if err != nil {
		sub.Close()
		return fmt.Errorf("watermill peer: publisher: %w", err)
	}
	defer pub.Close()
	router, err := NewRouter(cfg, client, sub, pub, log)
	if err != nil {
		sub.Close()
		return err
	}
	if err := router.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("watermill peer: %w", err)
	}
	return nil
}

// NewRouter wires the handler and its middlewares onto sub. Order, outermost first: PoisonQueue
// (whatever still fails is published to the DLQ topic and acked), Deduplicator (by event_id),
// Retry (transient failures, exponential backoff), Throttle (every attempt, retries included,
// waits for its tick, so the budget covers retries). Throttle is left out when the rate limit is
// at or above peer.Unlimited.
func NewRouter(cfg peer.Config, api creator, sub message.Subscriber, pub message.Publisher, log *zap.Logger) (*message.Router, error) {
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: 20 * time.Second}, zapAdapter{log})
	if err != nil {
		return nil, fmt.Errorf("watermill peer: router: %w", err)
	}
	poison, err := middleware.PoisonQueue(pub, cfg.DLQTopic)
	if err != nil {
		return nil, fmt.Errorf("watermill peer: poison queue: %w", err)
	}
	repo, err := middleware.NewMapExpiringKeyRepository(DedupeWindow)
	if err != nil {
		return nil, fmt.Errorf("watermill peer: dedupe repository: %w", err)
	}
	dedup := &middleware.Deduplicator{KeyFactory: eventID, Repository: repo, Timeout: time.Second}
	retry := middleware.Retry{
		MaxRetries: cfg.MaxRetries, InitialInterval: cfg.Backoff, MaxInterval: cfg.MaxBackoff, Multiplier: 2,
		RandomizationFactor: 0.2,
		ShouldRetry:         func(p middleware.RetryParams) bool { return !errors.Is(p.Err, errPermanent) },
	}
	mws := []message.HandlerMiddleware{poison, dedup.Middleware, retry.Middleware}
	if cfg.RateLimit < peer.Unlimited {
		mws = append(mws, middleware.NewThrottle(int64(cfg.RateLimit), time.Second).Middleware)
	}
	r.AddMiddleware(mws...)
	h := &handler{api: api, log: log}
	r.AddConsumerHandler("create_contact_group", cfg.Topic, sub, h.handle)
	return r, nil
}

// eventID keys the Deduplicator on the event's id; an unparsable record gets a key of its own
// (its whole value) so that it still reaches the handler and the poison queue.
func eventID(m *message.Message) (string, error) {
	var v struct {
		EventID string `json:"event_id"`
	}
	if err := json.Unmarshal(m.Payload, &v); err != nil || v.EventID == "" {
		return "raw:" + string(m.Payload), nil
	}
	return v.EventID, nil
}

type handler struct {
	api creator
	log *zap.Logger
}

func (h *handler) handle(m *message.Message) error {
	ev, err := event.Parse(m.Payload)
	if err != nil {
		return fmt.Errorf("%w: %w", errPermanent, err)
	}
	_, err = h.api.CreateContactGroup(m.Context(), peer.CreateRequest(ev))
	if err != nil && !peer.Retryable(err) {
		h.log.Warn("watermill peer: rejected", zap.String("event_id", ev.EventID), zap.Error(err))
		return fmt.Errorf("%w: %w", errPermanent, err)
	}
	return err
}
