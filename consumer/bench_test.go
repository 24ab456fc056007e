package consumer

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
)

// produceBacklog writes n events for accounts accounts to a new topic, in large batches.
func produceBacklog(b *testing.B, k *kafkatest.Cluster, topic string, n, accounts int) {
	b.Helper()
	w := k.Writer(topic)
	w.BatchSize = 5000
	w.BatchBytes = 16 << 20
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	batch := make([]kafka.Message, 0, 20000)
	for i := 0; i < n; i++ {
		a := i % accounts
		batch = append(batch, evMsg(fmt.Sprintf("ev-%d", i), fmt.Sprintf("account-%d", a), int64(i/accounts+1)))
		if len(batch) == cap(batch) || i == n-1 {
			if err := w.WriteMessages(ctx, batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
}

// runBacklog consumes a backlog of n events with a zero-latency dispatcher and returns the
// elapsed time from Run to the last event applied, and the peak Go heap seen meanwhile.
func runBacklog(b *testing.B, n int, edit func(*Config)) (time.Duration, uint64, uint64) {
	b.Helper()
	k := kafkatest.New(b)
	topic := kafkatest.UniqueName("bench")
	k.CreateTopic(b, topic, 4)
	produceBacklog(b, k, topic, n, 10000)
	disp := newFakeDispatcher(b)
	disp.noLog = true
	cfg := Config{Brokers: k.Brokers, Topic: topic, GroupID: kafkatest.UniqueName("g"), Dispatcher: disp,
		DeadLetterer: &fakeDL{}, Logger: zap.NewNop(), SessionTimeout: 6 * time.Second, RebalanceTimeout: 4 * time.Second}
	if edit != nil {
		edit(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	stopSample := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopSample:
				return
			case <-t.C:
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				if m.HeapAlloc > peak.Load() {
					peak.Store(m.HeapAlloc)
				}
			}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b.ResetTimer()
	start := time.Now()
	go func() { done <- c.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Minute)
	for disp.n.Load() < int64(n) {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d applied", disp.n.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	close(stopSample)
	<-sampled
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	if got := disp.n.Load(); got != int64(n) {
		b.Fatalf("dispatched %d, want %d", got, n)
	}
	return elapsed, base, peak.Load()
}

// BenchmarkConsumerThroughput consumes a 200k-event backlog over 4 partitions and 10k accounts
// with a zero-latency dispatcher: the consumer's own ceiling (events/s).
func BenchmarkConsumerThroughput(b *testing.B) {
	const n = 200_000
	var total time.Duration
	for i := 0; i < b.N; i++ {
		d, _, _ := runBacklog(b, n, nil)
		total += d
	}
	b.ReportMetric(float64(n*b.N)/total.Seconds(), "events/s")
}

// BenchmarkBacklogMemory consumes a 1M-event backlog and reports the peak Go heap above what the
// embedded broker already holds: bounded by MaxBuffered per partition, not by the backlog.
func BenchmarkBacklogMemory(b *testing.B) {
	const n = 1_000_000
	for i := 0; i < b.N; i++ {
		d, base, peak := runBacklog(b, n, func(c *Config) { c.MaxBuffered = 5000 })
		b.ReportMetric(float64(n)/d.Seconds(), "events/s")
		b.ReportMetric(float64(peak-min(base, peak))/(1<<20), "peak-heap-above-broker-MiB")
	}
}
