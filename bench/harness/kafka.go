package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
	"github.com/chatgroupd/chatgroupd/internal/loadgen"
)

// Broker is the Kafka every run uses: an embedded kfake cluster in this process, or the real
// brokers of CHATGROUPD_TEST_BROKERS.
type Broker struct {
	Addrs []string
	fake  *kfake.Cluster
}

// StartBroker starts kfake on loopback, or returns the real brokers when
// CHATGROUPD_TEST_BROKERS is set (getenv nil means os.Getenv).
func StartBroker(getenv func(string) string) (*Broker, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if b := getenv(kafkatest.EnvBrokers); b != "" {
		return &Broker{Addrs: strings.Split(b, ",")}, nil
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1)) // kfake listens on 127.0.0.1 only
	if err != nil {
		return nil, fmt.Errorf("kfake: %w", err)
	}
	return &Broker{Addrs: c.ListenAddrs(), fake: c}, nil
}

// Kind names the broker for the report.
func (b *Broker) Kind() string {
	if b.fake != nil {
		return "embedded kfake"
	}
	return "real Kafka (" + strings.Join(b.Addrs, ",") + ")"
}

// Close stops the embedded cluster; a real one is left alone.
func (b *Broker) Close() {
	if b.fake != nil {
		b.fake.Close()
	}
}

// CreateTopic creates topic with partitions and waits for leaders.
func (b *Broker) CreateTopic(ctx context.Context, topic string, partitions int) error {
	return kafkatest.CreateTopic(ctx, b.Addrs, topic, partitions)
}

// DeleteTopics drops topics a run no longer needs, so a long session does not pile up memory
// in the embedded broker. Errors are returned but are not fatal to the caller.
func (b *Broker) DeleteTopics(ctx context.Context, topics ...string) error {
	c := &kafka.Client{Addr: kafka.TCP(b.Addrs...), Timeout: 10 * time.Second}
	resp, err := c.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: topics})
	if err != nil {
		return fmt.Errorf("delete topics: %w", err)
	}
	var errs []error
	for t, e := range resp.Errors {
		if e != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", t, e))
		}
	}
	return errors.Join(errs...)
}

// EndOffsets sums the end offsets of the first n partitions of topic: how many records it holds.
func (b *Broker) EndOffsets(ctx context.Context, topic string, n int) (int64, error) {
	c := &kafka.Client{Addr: kafka.TCP(b.Addrs...), Timeout: 5 * time.Second}
	reqs := make([]kafka.OffsetRequest, n)
	for i := range reqs {
		reqs[i] = kafka.LastOffsetOf(i)
	}
	resp, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return 0, fmt.Errorf("list offsets: %w", err)
	}
	var sum int64
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			return 0, fmt.Errorf("list offsets %s/%d: %w", topic, p.Partition, p.Error)
		}
		sum += p.LastOffset
	}
	return sum, nil
}

// producer writes generated events to a topic in batches.
type producer struct {
	w   *kafka.Writer
	gen *loadgen.Generator
}

func (b *Broker) newProducer(topic string, gen *loadgen.Generator) *producer {
	w := (&kafkatest.Cluster{Brokers: b.Addrs}).Writer(topic)
	w.BatchSize = 5000
	w.BatchBytes = 16 << 20
	return &producer{w: w, gen: gen}
}

// produce writes n more events and returns the records written, in order.
func (p *producer) produce(ctx context.Context, n int, keep bool) ([]loadgen.Record, error) {
	const batch = 5000
	var kept []loadgen.Record
	msgs := make([]kafka.Message, 0, min(n, batch))
	for done := 0; done < n; {
		msgs = msgs[:0]
		for i := 0; i < batch && done+i < n; i++ {
			r := p.gen.Next()
			if keep {
				kept = append(kept, r)
			}
			msgs = append(msgs, kafka.Message{Key: r.Key, Value: r.Value})
		}
		if err := p.w.WriteMessages(ctx, msgs...); err != nil {
			return nil, fmt.Errorf("produce: %w", err)
		}
		done += len(msgs)
	}
	return kept, nil
}

func (p *producer) Close() error { return p.w.Close() }
