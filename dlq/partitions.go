package dlq

import (
	"context"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
)

// partitionCountTTL is how long the Writer trusts a topic's partition count. Partitions are added
// rarely and by hand; a minute-old count costs at most a fallback at replay (the plan says so).
const partitionCountTTL = time.Minute

// partitionCounts remembers each original topic's partition count for dlq-original-partition-count.
type partitionCounts struct {
	client *kafka.Client
	log    *zap.Logger
	now    func() time.Time

	mu     sync.Mutex
	counts map[string]countAt
}

type countAt struct {
	n  int
	at time.Time
}

func newPartitionCounts(brokers []string, rt kafka.RoundTripper, log *zap.Logger, now func() time.Time) *partitionCounts {
	return &partitionCounts{
		client: &kafka.Client{Addr: kafka.TCP(brokers...), Transport: rt, Timeout: 5 * time.Second},
		log:    log, now: now, counts: map[string]countAt{},
	}
}

// get returns topic's partition count, asking the cluster when the remembered one is older than
// partitionCountTTL. When the cluster does not answer it returns the last count known, else 0:
// the letter then goes without the header rather than waiting, and replay falls back to the
// partitioner for it.
func (p *partitionCounts) get(ctx context.Context, topic string) int {
	if topic == "" {
		return 0
	}
	p.mu.Lock()
	c, ok := p.counts[topic]
	p.mu.Unlock()
	if ok && p.now().Sub(c.at) < partitionCountTTL {
		return c.n
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ti, err := topicPartitions(ctx, p.client, topic)
	if err != nil {
		p.log.Warn("dlq: cannot read the original topic's partition count; the letter goes without it",
			zap.String("topic", topic), zap.Error(err))
		return c.n
	}
	n := len(ti.partitions)
	p.mu.Lock()
	p.counts[topic] = countAt{n: n, at: p.now()}
	p.mu.Unlock()
	return n
}
