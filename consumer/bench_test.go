package consumer

import (
	"context"
	"fmt"
	"hash/maphash"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
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
// With sample set, a sampler forces a GC every 500ms and records the peak live heap.
func runBacklog(b *testing.B, n int, sample bool, edit func(*Config)) (time.Duration, uint64, uint64) {
	d, base, peak, _ := runBacklogCPU(b, n, sample, edit)
	return d, base, peak
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runBacklogCPU is runBacklog that also returns the CPU time the process spent consuming.
func runBacklogCPU(b *testing.B, n int, sample bool, edit func(*Config)) (time.Duration, uint64, uint64, time.Duration) {
	b.Helper()
	k := benchCluster(b)
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
		if !sample {
			return
		}
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopSample:
				return
			case <-t.C:
				var m runtime.MemStats
				runtime.GC()
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
	cpu0 := cpuTime()
	go func() { done <- c.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Minute)
	for disp.n.Load() < int64(n) {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d applied", disp.n.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
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
	return elapsed, base, peak.Load(), cpu
}

// BenchmarkConsumerThroughput consumes a 200k-event backlog over 4 partitions and 10k accounts
// with a zero-latency dispatcher: the consumer's own ceiling (events/s). On a shared machine the
// wall-clock rate understates it, so it also reports the CPU time per event (the embedded
// broker's share included) and the rate two idle cores would reach at that cost.
func BenchmarkConsumerThroughput(b *testing.B) {
	const n = 200_000
	var total, cpu time.Duration
	for i := 0; i < b.N; i++ {
		d, _, _, c := runBacklogCPU(b, n, false, nil)
		total += d
		cpu += c
	}
	perEvent := cpu.Seconds() / float64(n*b.N)
	b.ReportMetric(float64(n*b.N)/total.Seconds(), "events/s")
	b.ReportMetric(perEvent*1e6, "cpu-µs/event")
	b.ReportMetric(2/perEvent, "events/s@2-idle-cores")
}

// BenchmarkBacklogMemory consumes 200k- and 1M-event backlogs and reports the peak live heap
// above what the embedded broker already holds (sampled after forced GCs): it depends on
// MaxBuffered, the partition count and the dedupe window, not on the backlog.
func BenchmarkBacklogMemory(b *testing.B) {
	for _, n := range []int{200_000, 1_000_000} {
		b.Run(fmt.Sprintf("backlog=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				d, base, peak := runBacklog(b, n, true, func(c *Config) { c.DedupeWindow = dedupeWindowForBench() })
				b.ReportMetric(float64(n)/d.Seconds(), "events/s")
				b.ReportMetric(float64(peak-min(base, peak))/(1<<20), "peak-live-MiB")
				if rss := peakRSS(); rss > 0 {
					// Whole process, embedded broker included unless CHATGROUPD_TEST_BROKERS is set.
					b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MiB")
				}
			}
		})
	}
}

// BenchmarkMemoryPerEvent reports the bytes one buffered event (fetched, queued, not ended; the
// ~170-byte record value included), one in-flight event (plus its runner goroutine) and one
// remembered dedupe id cost.
func BenchmarkMemoryPerEvent(b *testing.B) {
	const n = 20000
	b.ReportAllocs()
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = evMsg(fmt.Sprintf("ev-%d", i), fmt.Sprintf("account-%d", i%1000), 0)
		msgs[i].Offset = int64(i)
	}
	measure := func(n int, fill func()) float64 {
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		fill()
		runtime.GC()
		runtime.ReadMemStats(&m1)
		return float64(int64(m1.HeapAlloc+m1.StackInuse)-int64(m0.HeapAlloc+m0.StackInuse)) / float64(n)
	}
	for i := 0; i < b.N; i++ {
		disp := newFakeDispatcher(b)
		disp.block = make(chan struct{})
		c, err := New(Config{Brokers: []string{"127.0.0.1:1"}, Topic: "t", GroupID: "g", Dispatcher: disp,
			DeadLetterer: &fakeDL{}, MaxInFlight: n, MaxBuffered: 2 * n})
		if err != nil {
			b.Fatal(err)
		}
		newPart := func(e *engine, h int64) *part {
			p := &part{win: newWindow(n), accounts: map[string]*account{}, pending: map[uint64]*rec{},
				space: make(chan struct{}, 1), tr: newTracker(0), hz: horizon{committed: h}, inherited: 0}
			e.parts[0] = p
			return p
		}
		ctx, cancel := context.WithCancel(context.Background())
		// Buffered: the horizon is 0, so every record waits in its account's queue.
		e := newEngine(c, ctx)
		p := newPart(e, 0)
		buffered := measure(n, func() {
			for _, m := range msgs {
				e.ingest(ctx, p, m)
			}
		})
		// In flight: one account per record, all dispatched and blocked in the dispatcher. As
		// many as the metadata bound lets run out of order in one partition (see pressured).
		const nf = 200
		e2 := newEngine(c, ctx)
		p2 := newPart(e2, int64(n))
		inflight := measure(nf, func() {
			for j, m := range msgs[:nf] {
				m.Key = []byte(fmt.Sprint("solo-", j))
				m.Value = evMsg(fmt.Sprintf("ev-%d", j), fmt.Sprintf("solo-%d", j), 0).Value
				e2.ingest(ctx, p2, m)
			}
			for disp.n.Load() < nf {
				time.Sleep(time.Millisecond)
			}
		})
		cancel()
		e2.runners.Wait()
		w := newWindow(n)
		h := hasher{seed: maphash.MakeSeed()}
		keys := make([]uint64, n)
		for j := range keys {
			keys[j] = h.id(fmt.Sprint("ev-", j), 0)
		}
		remembered := measure(n, func() {
			for j, k := range keys {
				w.add(k, uint64(j%1000+1), int64(j+1))
			}
		})
		b.ReportMetric(buffered, "B/buffered-event")
		b.ReportMetric(inflight, "B/inflight-event")
		b.ReportMetric(remembered, "B/remembered-id")
		runtime.KeepAlive(e)
		runtime.KeepAlive(w)
	}
}

// BenchmarkReadBack measures what a newly assigned partition costs before its first live record:
// re-reading DedupeWindow (100k) records before the committed offset into the dedupe window.
func BenchmarkReadBack(b *testing.B) {
	const n = 100_000
	k := kafkatest.New(b)
	topic := kafkatest.UniqueName("rb")
	k.CreateTopic(b, topic, 1)
	produceBacklog(b, k, topic, n, 10000)
	disp := newFakeDispatcher(b)
	disp.noLog = true
	cfg := Config{Brokers: k.Brokers, Topic: topic, GroupID: kafkatest.UniqueName("g"), Dispatcher: disp,
		DeadLetterer: &fakeDL{}, Logger: zap.NewNop(), SessionTimeout: 6 * time.Second, RebalanceTimeout: 4 * time.Second}
	run := func(until int64) time.Duration {
		c, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- c.Run(ctx) }()
		for disp.n.Load() < until {
			time.Sleep(time.Millisecond)
		}
		d := time.Since(start)
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		return d
	}
	run(n)
	b.ResetTimer()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		k.Produce(b, topic, evMsg(fmt.Sprint("new-", i), "someone", 0))
		total += run(int64(n + i + 1))
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/assignment")
	b.ReportMetric(float64(n*b.N)/total.Seconds(), "readback-records/s")
}

// benchCluster is the embedded cluster, or the real broker named by CHATGROUPD_TEST_BROKERS.
func benchCluster(b *testing.B) *kafkatest.Cluster {
	if os.Getenv(kafkatest.EnvBrokers) != "" {
		return kafkatest.Real(b)
	}
	return kafkatest.New(b)
}

// peakRSS is the process's peak resident set (VmHWM) in bytes, or 0 when unknown.
func peakRSS() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// dedupeWindowForBench lets BenchmarkBacklogMemory run with another window
// (CHATGROUPD_BENCH_DEDUPE=n) to separate the window's share of the heap from the rest.
func dedupeWindowForBench() int {
	n, _ := strconv.Atoi(os.Getenv("CHATGROUPD_BENCH_DEDUPE"))
	return n
}
