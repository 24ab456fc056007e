package consumer

import (
	"context"
	"errors"
	"hash/maphash"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
)

// Consumer reads the event topic as a member of a consumer group and drives every record to an
// end. Create it with New and run it with Run.
type Consumer struct {
	cfg    Config
	client *kafka.Client
	hash   hasher
	ready  atomic.Bool
	// crash, for tests, ends generations like a killed process: no drain, no final commit.
	crash bool
	// vanish, for tests, with crash: nor does Run leave the group, as a killed process doesn't.
	vanish bool

	// kept holds, per partition, the dedupe window and the final commit of the last generation.
	// When the next generation gets the partition back with that very commit, nobody else has
	// moved it, and the window replaces the read-back: rebalances cost no history re-read.
	// Only the Run goroutine's generations touch it, one at a time.
	kept map[int]keptPart
	// route counts records the configured partitioner would not put where they are.
	route routeCheck

	keys *keyGuard
	dlqH *dlqHealth
}

type keptPart struct {
	w    int64
	meta string
	win  *window
	// drained: the generation that kept it ended with no call in flight (none abandoned).
	drained bool
}

// New applies cfg's defaults, checks it and returns a Consumer; it does not connect until Run.
func New(cfg Config) (*Consumer, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Metrics.EventsMisrouted.WithLabelValues(cfg.Topic) // exposed at 0 from the start: it should stay there
	return &Consumer{
		cfg:    cfg,
		client: &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: cfg.Transport, Timeout: 10 * time.Second},
		hash:   hasher{seed: maphash.MakeSeed()},
		kept:   map[int]keptPart{},
		keys:   newKeyGuard(&cfg),
		dlqH:   newDLQHealth(cfg.Metrics),
	}, nil
}

// Ready reports whether the consumer is a member of the group with a current generation.
func (c *Consumer) Ready() bool { return c.ready.Load() }

// DeadLetterHealth returns nil, or while some partition waits on a dead letter the DLQ topic
// does not accept (deleted, ACL changed, brokers refusing), an error naming the partitions, since
// when and the last failure. It clears by itself once the letters are written.
func (c *Consumer) DeadLetterHealth() error { return c.dlqH.err() }

// Run consumes until ctx is cancelled, then stops fetching, lets in-flight events finish within
// ShutdownTimeout, commits, leaves the group (unless Config.StayOnShutdown) and returns nil. It returns an error only when the
// group can't be set up at all, or ErrFenced when another process took over this member's
// instance id (it does not leave the group then: the group is the other process's now).
func (c *Consumer) Run(ctx context.Context) error {
	cfg := &c.cfg
	log := cfg.Logger
	m := newMember(cfg, c.heartbeat())
	var runErr error
	for ctx.Err() == nil {
		g, err := m.join(ctx)
		if err != nil {
			if errors.Is(err, ErrFenced) {
				runErr = err
			}
			break
		}
		c.runGeneration(ctx, g)
		g.stop()
		if cause := context.Cause(g.ctx); errors.Is(cause, ErrFenced) {
			runErr = cause
			break
		}
	}
	c.ready.Store(false)
	switch {
	case runErr != nil:
		log.Error("consumer fenced: another member joined with this instance id; stopping",
			zap.String("group", cfg.GroupID), zap.String("instance_id", cfg.InstanceID), zap.Error(runErr))
		return runErr
	case c.vanish:
	case cfg.StayOnShutdown:
		log.Info("consumer group: staying a member until the session timeout, for a restart with this instance id",
			zap.String("group", cfg.GroupID), zap.String("instance_id", cfg.InstanceID), zap.Duration("session_timeout", cfg.SessionTimeout))
	default:
		// Leaving hands the partitions over at once, also for a static member (by its instance
		// id): a graceful stop is a scale-down or a rollout, not a restart to wait for.
		if err := m.leave(context.WithoutCancel(ctx)); err != nil {
			log.Warn("consumer group: leave failed; the coordinator will evict this member after the session timeout",
				zap.String("group", cfg.GroupID), zap.Error(err))
		}
	}
	log.Info("consumer stopped", zap.String("group", cfg.GroupID))
	return nil
}

// heartbeat is the member's heartbeat interval: HeartbeatInterval, at most a third of the session.
func (c *Consumer) heartbeat() time.Duration {
	return min(c.cfg.HeartbeatInterval, c.cfg.SessionTimeout/3)
}

// leaseLen is how long a confirmation of membership lets the member start new requests: it is
// evicted a session after its last heartbeat, which may be a heartbeat before the confirmation,
// and a second is kept as margin (the bound of a revoked generation's drain, for the same reason).
// Every accepted heartbeat of the member (see member.heartbeat) and every accepted commit renew it.
func (c *Consumer) leaseLen() time.Duration {
	return max(100*time.Millisecond, c.cfg.SessionTimeout-c.heartbeat()-time.Second)
}

// revokeDrain bounds the wait for requests in flight once a generation ended. The member stops
// heartbeating then (kafka-go heartbeats only within a generation), so the coordinator evicts it
// SessionTimeout after its last heartbeat, which may be a heartbeat before we learn of the end;
// it also evicts a member that does not rejoin within RebalanceTimeout. Evicted, its partitions
// go to the next owner while its calls still run: two calls of one account at once, and a final
// commit refused. A second is left for that commit.
func (c *Consumer) revokeDrain() time.Duration {
	cfg := &c.cfg
	hb := c.heartbeat()
	d := min(cfg.ShutdownTimeout, cfg.RebalanceTimeout/2, cfg.RebalanceTimeout-hb-time.Second)
	if !cfg.TestLegacyDrain {
		d = min(d, cfg.SessionTimeout-hb-time.Second)
	}
	return max(100*time.Millisecond, d)
}

// sleepCtx waits d and reports true, or false as soon as ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
