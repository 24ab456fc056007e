package dlq

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/segmentio/kafka-go"
)

// ErrTopicNotFound is returned (wrapped) when a topic the tools need does not exist.
var ErrTopicNotFound = errors.New("topic does not exist")

// topicInfo is what the tools need to know about a topic.
type topicInfo struct {
	partitions  []int
	replication int
}

// topicPartitions asks the cluster for topic's partitions. A missing topic is ErrTopicNotFound;
// an unreachable cluster is the dial error, with the brokers named.
func topicPartitions(ctx context.Context, c *kafka.Client, topic string) (topicInfo, error) {
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			// kafka-go's only sign of a TLS/SASL mismatch or a wrong password.
			return topicInfo{}, fmt.Errorf("cannot reach Kafka at %s: the broker closed the connection "+
				"(check the TLS/SASL settings and credentials): %w", c.Addr, err)
		}
		return topicInfo{}, fmt.Errorf("cannot reach Kafka at %s: %w", c.Addr, err)
	}
	for _, t := range md.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil {
			if errors.Is(t.Error, kafka.UnknownTopicOrPartition) {
				return topicInfo{}, fmt.Errorf("%s: %w", topic, ErrTopicNotFound)
			}
			return topicInfo{}, fmt.Errorf("metadata of %s: %w", topic, t.Error)
		}
		ti := topicInfo{}
		for _, p := range t.Partitions {
			ti.partitions = append(ti.partitions, p.ID)
			if len(p.Replicas) > ti.replication {
				ti.replication = len(p.Replicas)
			}
		}
		if len(ti.partitions) == 0 {
			return topicInfo{}, fmt.Errorf("%s: %w", topic, ErrTopicNotFound)
		}
		sort.Ints(ti.partitions)
		return ti, nil
	}
	return topicInfo{}, fmt.Errorf("%s: %w", topic, ErrTopicNotFound)
}

// span is the range of offsets to read from one partition: [first, end).
type span struct {
	partition  int
	first, end int64
}

// endOffsets returns, for every partition of topic, the offsets between its log start and its end
// as of now. Records produced later are not read: a tool run has a fixed scope.
func endOffsets(ctx context.Context, c *kafka.Client, topic string, ti topicInfo) ([]span, error) {
	reqs := make([]kafka.OffsetRequest, 0, 2*len(ti.partitions))
	for _, p := range ti.partitions {
		reqs = append(reqs, kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	res, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	spans := make([]span, 0, len(ti.partitions))
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("list offsets of %s/%d: %w", topic, po.Partition, po.Error)
		}
		spans = append(spans, span{partition: po.Partition, first: po.FirstOffset, end: po.LastOffset})
	}
	if len(spans) != len(ti.partitions) {
		return nil, fmt.Errorf("list offsets of %s: %d of %d partitions answered", topic, len(spans), len(ti.partitions))
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].partition < spans[j].partition })
	return spans, nil
}

// readTopic calls fn with every record of topic between its start and its end as taken at the
// call, partition by partition in offset order. Offsets may have gaps (compaction, transaction
// markers); those are skipped.
func readTopic(ctx context.Context, c *kafka.Client, topic string, ti topicInfo, fn func(kafka.Message) error) error {
	spans, err := endOffsets(ctx, c, topic, ti)
	if err != nil {
		return err
	}
	for _, s := range spans {
		if err := readPartition(ctx, c, topic, s, fn); err != nil {
			return err
		}
	}
	return nil
}

func readPartition(ctx context.Context, c *kafka.Client, topic string, s span, fn func(kafka.Message) error) error {
	off := s.first
	empty := 0
	for off < s.end {
		if err := ctx.Err(); err != nil {
			return err
		}
		res, err := c.Fetch(ctx, &kafka.FetchRequest{
			Topic: topic, Partition: s.partition, Offset: off,
			MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 500 * time.Millisecond,
		})
		if err != nil {
			return fmt.Errorf("fetch %s/%d at %d: %w", topic, s.partition, off, err)
		}
		if res.Error != nil {
			if errors.Is(res.Error, kafka.OffsetOutOfRange) && res.LogStartOffset > off {
				off = res.LogStartOffset // retention removed records while we read
				continue
			}
			return fmt.Errorf("fetch %s/%d at %d: %w", topic, s.partition, off, res.Error)
		}
		progressed := false
		for {
			r, err := res.Records.ReadRecord()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("read %s/%d at %d: %w", topic, s.partition, off, err)
			}
			if r.Offset < off { // a batch may start before the offset asked for
				continue
			}
			if r.Offset >= s.end {
				return nil
			}
			m, err := message(topic, s.partition, r)
			if err != nil {
				return fmt.Errorf("read %s/%d at %d: %w", topic, s.partition, r.Offset, err)
			}
			if err := fn(m); err != nil {
				return err
			}
			off = r.Offset + 1
			progressed = true
		}
		if progressed {
			empty = 0
			continue
		}
		// Nothing at or after off came back although the partition had data up to end when we
		// started: what is left are transaction markers (which kafka-go hides) or records
		// compacted away meanwhile. A second empty answer ends the partition.
		if empty++; empty >= 2 || res.HighWatermark <= off {
			return nil
		}
	}
	return nil
}

func message(topic string, partition int, r *kafka.Record) (kafka.Message, error) {
	m := kafka.Message{Topic: topic, Partition: partition, Offset: r.Offset, Time: r.Time, Headers: r.Headers}
	var err error
	if r.Key != nil {
		if m.Key, err = kafka.ReadAll(r.Key); err != nil {
			return m, err
		}
		if m.Key == nil {
			m.Key = []byte{}
		}
	}
	if r.Value != nil {
		if m.Value, err = kafka.ReadAll(r.Value); err != nil {
			return m, err
		}
		if m.Value == nil {
			m.Value = []byte{}
		}
	}
	return m, nil
}
