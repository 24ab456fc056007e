package event

import (
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// Partitioner names how a producer maps a record key to a partition of the event topic. All of
// one account's events must land in one partition to keep their order, and chatgroupd's replays
// and its misrouting check must use the same mapping as the product app's producer.
type Partitioner string

// The partitioners chatgroupd knows. They differ only for keyed records; each names the client
// settings that produce it.
const (
	// PartitionerMurmur2 is the Java client's default: murmur2(key) & 0x7fffffff mod n. librdkafka
	// "murmur2_random", kafka-go kafka.Murmur2Balancer{} and franz-go's default produce it. It is
	// the partitioner producers should use.
	PartitionerMurmur2 Partitioner = "murmur2"
	// PartitionerCRC32 is librdkafka's default ("consistent_random"): crc32(key) mod n.
	PartitionerCRC32 Partitioner = "crc32"
	// PartitionerFNV1a is Sarama's default hash partitioner: |int32(fnv1a(key)) mod n|.
	PartitionerFNV1a Partitioner = "fnv1a"
)

// DefaultPartitioner is the partitioner the contract asks producers to use.
const DefaultPartitioner = PartitionerMurmur2

// Partitioners lists the known partitioners, default first.
func Partitioners() []Partitioner {
	return []Partitioner{PartitionerMurmur2, PartitionerCRC32, PartitionerFNV1a}
}

// ParsePartitioner reads a partitioner name; "" is the default.
func ParsePartitioner(s string) (Partitioner, error) {
	if s == "" {
		return DefaultPartitioner, nil
	}
	p := Partitioner(strings.ToLower(strings.TrimSpace(s)))
	if err := p.Validate(); err != nil {
		return "", err
	}
	return p, nil
}

// Validate rejects an unknown partitioner name.
func (p Partitioner) Validate() error {
	switch p {
	case PartitionerMurmur2, PartitionerCRC32, PartitionerFNV1a:
		return nil
	}
	return fmt.Errorf("event: unknown partitioner %q (want murmur2, crc32 or fnv1a)", string(p))
}

// Partition returns the partition, in [0, partitions), that p gives key. It panics when
// partitions < 1 or p is unknown: both are programming errors callers rule out first.
func (p Partitioner) Partition(key []byte, partitions int) int {
	if partitions < 1 {
		panic("event: Partition with no partitions")
	}
	n := uint32(partitions)
	switch p {
	case PartitionerMurmur2:
		return int((murmur2(key) & 0x7fffffff) % n)
	case PartitionerCRC32:
		return int(crc32.ChecksumIEEE(key) % n)
	case PartitionerFNV1a:
		h := fnv.New32a()
		h.Write(key)
		// Sarama converts to int32 before the modulo and negates a negative result.
		r := int32(h.Sum32()) % int32(partitions)
		if r < 0 {
			r = -r
		}
		return int(r)
	}
	panic(fmt.Sprintf("event: unknown partitioner %q", string(p)))
}

// Balancer returns the kafka-go balancer that partitions keyed records like p.
func (p Partitioner) Balancer() kafka.Balancer {
	switch p {
	case PartitionerCRC32:
		return &kafka.CRC32Balancer{}
	case PartitionerFNV1a:
		return &kafka.Hash{}
	}
	return &kafka.Murmur2Balancer{}
}

// NewWriter is the producer helper for Go producers using kafka-go: records go to topic,
// partitioned by key with DefaultPartitioner (so they sit where chatgroupd's replays put an
// account's events), and count as written only once every in-sync replica has them. Set Transport
// for TLS or SASL. Key each record with Event.Key.
func NewWriter(topic string, brokers ...string) *kafka.Writer {
	return &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		Balancer:     DefaultPartitioner.Balancer(),
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 2 * time.Millisecond,
	}
}

// murmur2 is the Java client's murmur2 hash (seed 0x9747b28c), which Kafka's default partitioner
// uses.
func murmur2(data []byte) uint32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	length := len(data)
	h := seed ^ uint32(length)
	for i := 0; i+4 <= length; i += 4 {
		k := uint32(data[i]) | uint32(data[i+1])<<8 | uint32(data[i+2])<<16 | uint32(data[i+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	tail := data[length&^3:]
	switch len(tail) {
	case 3:
		h ^= uint32(tail[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(tail[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(tail[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}
