// Package kafkatest starts Kafka brokers for tests: an embedded kfake cluster by default, or the
// real broker named by CHATGROUPD_TEST_BROKERS. It also has small produce and read helpers built
// on kafka-go, the client chatgroupd itself uses.
package kafkatest

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

// EnvBrokers names a real broker list for integration tests.
const EnvBrokers = "CHATGROUPD_TEST_BROKERS"

// Cluster is a broker the test may use.
type Cluster struct {
	Brokers []string
	// Fake is the embedded cluster, nil when running against a real broker.
	Fake *kfake.Cluster
}

// New starts an embedded kfake cluster (closed with the test), or returns the real brokers from
// CHATGROUPD_TEST_BROKERS when real is true and the variable is set.
func New(t testing.TB, opts ...kfake.Opt) *Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return &Cluster{Brokers: c.ListenAddrs(), Fake: c}
}

// Real returns the real broker list, skipping the test when CHATGROUPD_TEST_BROKERS is unset.
func Real(t testing.TB) *Cluster {
	t.Helper()
	b := os.Getenv(EnvBrokers)
	if b == "" {
		t.Skipf("%s not set: no real Kafka broker", EnvBrokers)
	}
	return &Cluster{Brokers: strings.Split(b, ",")}
}

var topicSeq atomic.Int64

// UniqueName returns a topic or group name unique within this process run.
func UniqueName(prefix string) string {
	return prefix + "-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36) + "-" + strconv.FormatInt(topicSeq.Add(1), 10)
}

// CreateTopic creates topic with the given partitions (replication 1) and waits until it has
// leaders. Extra configs such as cleanup.policy=compact may be passed as key/value pairs.
func (c *Cluster) CreateTopic(t testing.TB, topic string, partitions int, configs ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := CreateTopic(ctx, c.Brokers, topic, partitions, configs...); err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
}

// CreateTopic is the non-test form of Cluster.CreateTopic.
func CreateTopic(ctx context.Context, brokers []string, topic string, partitions int, configs ...string) error {
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	var entries []kafka.ConfigEntry
	for i := 0; i+1 < len(configs); i += 2 {
		entries = append(entries, kafka.ConfigEntry{ConfigName: configs[i], ConfigValue: configs[i+1]})
	}
	resp, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic, NumPartitions: partitions, ReplicationFactor: 1, ConfigEntries: entries,
	}}})
	if err != nil {
		return err
	}
	if err := resp.Errors[topic]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return err
	}
	for {
		md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		if err == nil && len(md.Topics) == 1 && md.Topics[0].Error == nil && len(md.Topics[0].Partitions) == partitions {
			ok := true
			for _, p := range md.Topics[0].Partitions {
				if p.Leader.Host == "" {
					ok = false
				}
			}
			if ok {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Writer returns a synchronous, key-hashing, acks=all writer for topic.
func (c *Cluster) Writer(topic string) *kafka.Writer {
	return &kafka.Writer{
		Addr:         kafka.TCP(c.Brokers...),
		Topic:        topic,
		Balancer:     &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 2 * time.Millisecond,
		BatchSize:    1000,
	}
}

// Produce writes msgs to topic and fails the test on error.
func (c *Cluster) Produce(t testing.TB, topic string, msgs ...kafka.Message) {
	t.Helper()
	w := c.Writer(topic)
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("produce to %s: %v", topic, err)
	}
}

// ReadAll reads every record of every partition of topic, from the start to the end as of the
// call, and returns them partition by partition in offset order.
func (c *Cluster) ReadAll(t testing.TB, topic string) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	msgs, err := ReadAll(ctx, c.Brokers, topic)
	if err != nil {
		t.Fatalf("read %s: %v", topic, err)
	}
	return msgs
}

// ReadAll is the non-test form of Cluster.ReadAll.
func ReadAll(ctx context.Context, brokers []string, topic string) ([]kafka.Message, error) {
	conn, err := kafka.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		return nil, err
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		return nil, err
	}
	var out []kafka.Message
	for _, p := range parts {
		lc, err := kafka.DialLeader(ctx, "tcp", net.JoinHostPort(p.Leader.Host, strconv.Itoa(p.Leader.Port)), topic, p.ID)
		if err != nil {
			return nil, err
		}
		first, last, err := lc.ReadOffsets()
		lc.Close()
		if err != nil {
			return nil, err
		}
		if last <= first {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p.ID, MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond})
		if err := r.SetOffset(first); err != nil {
			r.Close()
			return nil, err
		}
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				return nil, err
			}
			out = append(out, m)
			if m.Offset >= last-1 {
				break
			}
		}
		r.Close()
	}
	return out, nil
}

// GroupLag is group's committed-to-end distance summed over topic's partitions 0..partitions-1;
// a partition without a commit counts all its records.
func GroupLag(ctx context.Context, cl *kafka.Client, group, topic string, partitions int) (int64, error) {
	reqs := make([]kafka.OffsetRequest, partitions)
	ids := make([]int, partitions)
	for p := range ids {
		ids[p] = p
		reqs[p] = kafka.LastOffsetOf(p)
	}
	lo, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return 0, err
	}
	of, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: ids}})
	if err != nil {
		return 0, err
	}
	if of.Error != nil {
		return 0, of.Error
	}
	committed := map[int]int64{}
	for _, p := range of.Topics[topic] {
		if p.Error != nil {
			return 0, p.Error
		}
		committed[p.Partition] = max(p.CommittedOffset, 0)
	}
	var sum int64
	for _, p := range lo.Topics[topic] {
		if p.Error != nil {
			return 0, p.Error
		}
		sum += p.LastOffset - committed[p.Partition]
	}
	return sum, nil
}
