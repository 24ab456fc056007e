package consumer

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// Records are counted as misrouted exactly when their partition is not the one the configured
// partitioner gives their key; the first is logged.
func TestRouteCheckCountsMisroutedRecords(t *testing.T) {
	// A key murmur2 and crc32 place differently over 4 partitions.
	key := []byte("a")
	for i := 0; event.PartitionerMurmur2.Partition(key, 4) == event.PartitionerCRC32.Partition(key, 4); i++ {
		key = append(key, 'a')
	}
	m := metrics.New(prometheus.NewRegistry(), "test", false)
	core, logs := observer.New(zap.WarnLevel)
	cfg := Config{Metrics: m, Logger: zap.New(core), Partitioner: event.PartitionerMurmur2}
	var r routeCheck
	rec := func(p int, k []byte) kafka.Message { return kafka.Message{Topic: "ev", Partition: p, Key: k} }
	crcPart, murPart := event.PartitionerCRC32.Partition(key, 4), event.PartitionerMurmur2.Partition(key, 4)

	r.check(&cfg, rec(crcPart, key)) // before a generation the partition count is unknown
	r.partitions.Store(4)
	r.check(&cfg, rec(murPart, key)) // where murmur2 puts it
	r.check(&cfg, rec(crcPart, nil)) // no key: nothing to check
	r.check(&cfg, rec(crcPart, key)) // a CRC32 producer's record
	r.check(&cfg, rec(crcPart, key))
	if got := testutil.ToFloat64(m.EventsMisrouted.WithLabelValues("ev")); got != 2 {
		t.Fatalf("events_misrouted_total{topic=ev} = %v, want 2", got)
	}
	if n := logs.Len(); n != 1 {
		t.Fatalf("%d warnings, want the first misrouted record logged once", n)
	}

	cfg.Partitioner = event.PartitionerCRC32 // the operator names the producers' partitioner
	r.check(&cfg, rec(crcPart, key))
	if got := testutil.ToFloat64(m.EventsMisrouted.WithLabelValues("ev")); got != 2 {
		t.Fatalf("with --partitioner crc32 the CRC32 record counted as misrouted (%v)", got)
	}
}

func TestConfigRejectsUnknownPartitioner(t *testing.T) {
	cfg := Config{Brokers: []string{"b"}, Topic: "t", GroupID: "g", Dispatcher: newFakeDispatcher(t), DeadLetterer: &fakeDL{}, Partitioner: "murmur3"}
	if err := cfg.Validate(); err == nil {
		t.Fatal("unknown partitioner accepted")
	}
}
