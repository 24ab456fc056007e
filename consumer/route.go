package consumer

import (
	"sync/atomic"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
)

// routeCheck counts records that sit in another partition than the producers' partitioner gives
// their key. Such records come from a producer with another partitioner (librdkafka's default
// CRC32, Sarama's FNV-1a, kafka-go's round robin): their account's order across partitions is not
// kept, and a replay placed by the configured partitioner would leave the account's partition.
type routeCheck struct {
	// partitions is the topic's partition count of the current generation, 0 before the first.
	partitions atomic.Int64
	logged     atomic.Bool // the first misrouted record is logged, the rest only counted
}

// check counts m when its partition is not the one cfg.Partitioner gives its key. A record
// without a key has no partition of its own and is not checked.
func (r *routeCheck) check(cfg *Config, m kafka.Message) {
	n := int(r.partitions.Load())
	if n <= 0 || len(m.Key) == 0 {
		return
	}
	want := cfg.Partitioner.Partition(m.Key, n)
	if want == m.Partition {
		return
	}
	cfg.Metrics.EventsMisrouted.WithLabelValues(m.Topic).Inc()
	if r.logged.CompareAndSwap(false, true) {
		cfg.Logger.Warn("record in another partition than its key hashes to: check the producer's partitioner "+
			"(this is logged once; chatgroupd_events_misrouted_total counts them all)",
			zap.String("topic", m.Topic), zap.Int("partition", m.Partition), zap.Int64("offset", m.Offset),
			zap.Int("key_partition", want), zap.String("partitioner", string(cfg.Partitioner)))
	}
}
