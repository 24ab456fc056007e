package main

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/internal/kafkaconn"
)

// brokerWatch says why the service is not in its consumer group when the reason is the brokers:
// while the consumer is not a member, it dials them (reach) with exponential backoff, logs one
// line per attempt naming each broker and its error, and keeps the last error for /readyz.
type brokerWatch struct {
	conn    *kafkaconn.Conn
	timeout time.Duration
	member  func() bool
	log     *zap.Logger
	// minBackoff and maxBackoff bound the wait between attempts while the brokers stay
	// unreachable.
	minBackoff, maxBackoff time.Duration

	mu   sync.Mutex
	last error
}

// err is the last reach error, nil when the brokers answered (or nobody asked yet).
func (w *brokerWatch) err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

func (w *brokerWatch) set(err error) {
	w.mu.Lock()
	w.last = err
	w.mu.Unlock()
}

// run watches until ctx ends.
func (w *brokerWatch) run(ctx context.Context) error {
	k := kafkaFlags{dialTimeout: w.timeout}
	backoff := w.minBackoff
	for {
		wait := w.minBackoff
		if !w.member() {
			err := k.reach(ctx, w.conn)
			if ctx.Err() != nil {
				return nil
			}
			w.set(err)
			if err != nil {
				w.log.Warn("kafka unreachable; the consumer keeps retrying", zap.Duration("next_check", backoff), zap.Error(err))
				wait = backoff
				backoff = min(2*backoff, w.maxBackoff)
			} else {
				backoff = w.minBackoff
			}
		} else {
			w.set(nil)
			backoff = w.minBackoff
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}
