package dlq

import (
	"context"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
)

// partitionCountTTL is how long the Writer trusts a topic's partition count (kafka-go's transport
// adds its own metadata cache, 6s by default). Partitions are added rarely and by hand; a count a
// minute old costs at most a needless original-partition replay or fallback, which the plan shows.
const partitionCountTTL = time.Minute

// partitionCounts remembers each original topic's partition count for dlq-original-partition-count.
type partitionCounts struct {
	// lookup asks the cluster for a topic's partition count.
	lookup func(ctx context.Context, topic string) (int, error)
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
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: rt, Timeout: 5 * time.Second}
	lookup := func(ctx context.Context, topic string) (int, error) {
		ti, err := topicPartitions(ctx, client, topic)
		return len(ti.partitions), err
	}
	return &partitionCounts{lookup: lookup, log: log, now: now, counts: map[string]countAt{}}
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
	n, err := p.lookup(ctx, topic)
	if err != nil {
		p.log.Warn("dlq: cannot read the original topic's partition count; the letter goes without it",
			zap.String("topic", topic), zap.Error(err))
		return c.n
	}
	p.mu.Lock()
	p.counts[topic] = countAt{n: n, at: p.now()}
	p.mu.Unlock()
	return n
}
