package event

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/segmentio/kafka-go"
)

// Known values of the Java client's partitioner (Utils.toPositive(Utils.murmur2(key)) % n), so
// our murmur2 is checked against Kafka itself, not only against another Go port.
func TestMurmur2JavaVectors(t *testing.T) {
	for _, c := range []struct {
		key  string
		hash int32 // Utils.murmur2, signed as Java returns it
	}{
		{"21", -973932308},
		{"foobar", -790332482},
		{"a-little-bit-long-string", -985981536},
		{"a-little-bit-longer-string", -1486304829},
		{"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971},
		{"abc", 479470107},
	} {
		if got := int32(murmur2([]byte(c.key))); got != c.hash {
			t.Errorf("murmur2(%q) = %d, want %d", c.key, got, c.hash)
		}
	}
}

// Every partitioner agrees with the kafka-go balancer that implements the same client's
// algorithm, over many keys (lengths 1-40 hit every murmur2 tail) and partition counts.
func TestPartitionMatchesClientBalancers(t *testing.T) {
	balancers := map[Partitioner]kafka.Balancer{
		PartitionerMurmur2: kafka.Murmur2Balancer{},
		PartitionerCRC32:   kafka.CRC32Balancer{},
		PartitionerFNV1a:   &kafka.Hash{},
	}
	for _, p := range Partitioners() {
		b := balancers[p]
		for n := 1; n <= 13; n++ {
			parts := make([]int, n)
			for i := range parts {
				parts[i] = i
			}
			for i := range 2000 {
				key := []byte(fmt.Sprintf("user%d-%s", i, string(make([]byte, i%37))))
				if got, want := p.Partition(key, n), b.Balance(kafka.Message{Key: key}, parts...); got != want {
					t.Fatalf("%s: key %q over %d partitions: %d, the client's balancer says %d", p, key, n, got, want)
				}
			}
		}
		if got := p.Balancer(); fmt.Sprintf("%T", got) != fmt.Sprintf("%T", b) && fmt.Sprintf("%T", got) != fmt.Sprintf("*%T", b) {
			t.Errorf("%s.Balancer() is %T, want %T", p, got, b)
		}
	}
}

// The three partitioners do disagree, which is why the choice matters: a fixed key set where
// murmur2 and crc32 put some account in different partitions.
func TestPartitionersDiffer(t *testing.T) {
	differ := 0
	for i := range 100 {
		k := []byte("account-" + strconv.Itoa(i))
		if PartitionerMurmur2.Partition(k, 6) != PartitionerCRC32.Partition(k, 6) {
			differ++
		}
	}
	if differ < 50 {
		t.Fatalf("murmur2 and crc32 differ on %d of 100 keys", differ)
	}
}

func TestParsePartitioner(t *testing.T) {
	for in, want := range map[string]Partitioner{"": PartitionerMurmur2, "murmur2": PartitionerMurmur2, "CRC32": PartitionerCRC32, " fnv1a ": PartitionerFNV1a} {
		got, err := ParsePartitioner(in)
		if err != nil || got != want {
			t.Errorf("ParsePartitioner(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"murmur3", "random", "consistent_random"} {
		if _, err := ParsePartitioner(bad); err == nil {
			t.Errorf("ParsePartitioner(%q) accepted", bad)
		}
	}
}

func TestNewWriterUsesDefaultPartitioner(t *testing.T) {
	w := NewWriter("t", "localhost:9092")
	if _, ok := w.Balancer.(*kafka.Murmur2Balancer); !ok || w.RequiredAcks != kafka.RequireAll {
		t.Fatalf("NewWriter balancer %T acks %v, want murmur2 and acks=all", w.Balancer, w.RequiredAcks)
	}
}
