// Package demo runs the whole chatgroupd pipeline on one machine — an embedded Kafka broker, the
// IM simulator with transient faults, a generated load with every kind of record, and the
// service between them — shows its progress, and checks what came out against what went in.
// `chatgroupd demo` is its command; the service itself is built by the caller (NewService).
package demo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/httpserve"
	"github.com/chatgroupd/chatgroupd/internal/loadgen"
	"github.com/chatgroupd/chatgroupd/metrics"
)

const (
	appID = 1400000000
	// Topic is the demo's event topic; its dead letters go to Topic+".dlq".
	Topic = "chat.contact-groups"
	// Group is the service's consumer group in the demo.
	Group = "chatgroupd-demo"
)

// Service is the chatgroupd service: Run consumes until ctx ends.
type Service interface {
	Run(ctx context.Context) error
}

// ServiceConfig is the service a demo runs: `chatgroupd run` with these settings and its defaults
// otherwise. The demo's simulator shares the process (InProcessAPI).
type ServiceConfig struct {
	Brokers       []string
	Topic, Group  string
	IMEndpoint    string // the simulator's base URL
	SDKAppID      int64
	SecretKey     string
	RateLimit     float64
	ReorderWindow time.Duration
	// RetryBudget is long: the demo's faults are transient, so nothing should run out of retries.
	RetryBudget     time.Duration
	ShutdownTimeout time.Duration
	CommitInterval  time.Duration
	MaxInFlight     int
	DedupeWindow    int
	// InProcessAPI says the API shares this process: a starved process delays the simulator's
	// count of the service's calls, so the limiter widens its window after timer stalls.
	InProcessAPI    bool
	Log             *zap.Logger
	Metrics         *metrics.Metrics
	Gatherer        prometheus.Gatherer
	MetricsListener net.Listener
}

// Result is what a run saw: the summary's figures, read off chatgroupd's own counters, and the
// simulator's own account of the API calls they are checked against.
type Result struct {
	Report Report
	// Calls is every API call the simulator answered, in the order the answers were written.
	Calls []Call
	// Sim is the simulator's statistics at the end.
	Sim imsim.Stats
	// Start is when the service and the producer started; Report's durations count from it.
	Start   time.Time
	Brokers []string
}

// InvariantsError is a run that broke the demo's invariants: something lost, a group created
// twice or the rate limit overrun. The summary printed each.
type InvariantsError struct {
	Broken []string
}

func (e *InvariantsError) Error() string {
	return fmt.Sprintf("demo: %d invariants broken", len(e.Broken))
}

// Run runs a demo, prints its progress and summary to cfg.Out, and returns what it saw. An
// interrupted run (ctx ended) still summarizes; a run whose summary breaks an invariant returns
// an *InvariantsError.
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	gen, err := loadgen.New(cfg.Load)
	if err != nil {
		return Result{}, err
	}
	r := &run{cfg: cfg, gen: gen}
	err = r.run(ctx)
	res := Result{Report: r.report, Start: r.start, Brokers: r.brokers}
	if r.calls != nil {
		res.Calls = r.calls.snapshot()
	}
	if r.sim != nil {
		res.Sim = r.sim.Stats()
	}
	return res, err
}

// run is one demo run.
type run struct {
	cfg Config
	gen *loadgen.Generator

	metrics *metrics.Metrics
	sim     *imsim.Server
	brokers []string
	// metricsAddr is where this run serves /metrics.
	metricsAddr string
	start       time.Time

	calls   *callLog
	events  eventTimes
	samples []progressSample // written by watch, read by summary after it
	report  Report

	mu       sync.Mutex // guards what the producer shares with the watcher
	produced int
	expect   loadgen.Expect
}

// progress returns what has been produced so far and what a correct pipeline does with it.
func (d *run) progress() (int, loadgen.Expect) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.produced, d.expect
}

func (d *run) run(ctx context.Context) error {
	f := d.cfg
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(f.Partitions), Topic, Topic+".dlq"))
	if err != nil {
		return fmt.Errorf("demo: embedded kafka: %w", err)
	}
	defer cluster.Close()
	d.brokers = cluster.ListenAddrs()

	d.sim, err = imsim.New(imsim.Config{
		SDKAppID: appID, SecretKey: f.SecretKey, RateLimit: DefaultRateLimit, Seed: f.Seed,
		Faults: imsim.Faults{
			Latency: f.Latency, Jitter: f.Jitter,
			ErrorRates:        map[int]float64{im.CodeInternal: f.FaultRate / 2},
			HTTP502Rate:       f.FaultRate / 4,
			ApplyThenFailRate: f.FaultRate / 4,
		},
	})
	if err != nil {
		return err
	}
	defer d.sim.Close()
	simLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("demo: simulator listener: %w", err)
	}
	metricsLn, err := net.Listen("tcp", f.MetricsAddr)
	if err != nil {
		simLn.Close()
		return fmt.Errorf("demo: metrics listener: %w", err)
	}

	reg := prometheus.NewRegistry()
	d.metrics = metrics.New(reg, f.Version, true)
	sc := ServiceConfig{
		Brokers: d.brokers, Topic: Topic, Group: Group, IMEndpoint: "http://" + simLn.Addr().String(),
		SDKAppID: appID, SecretKey: f.SecretKey, RateLimit: f.RateLimit, ReorderWindow: f.ReorderWindow,
		RetryBudget: time.Hour, ShutdownTimeout: 10 * time.Second, CommitInterval: 500 * time.Millisecond,
		MaxInFlight: 256, DedupeWindow: 100000, InProcessAPI: true,
		Log: f.Log, Metrics: d.metrics, Gatherer: reg, MetricsListener: metricsLn,
	}
	svc, err := f.NewService(sc)
	if err != nil {
		return err
	}

	d.metricsAddr = metricsLn.Addr().String()
	fmt.Fprintf(f.Out, "chatgroupd demo: embedded Kafka %s (%d partitions), IM simulator %s (%v±%v latency, %.0f%% transient faults), metrics http://%s/metrics\n",
		d.brokers[0], f.Partitions, sc.IMEndpoint, f.Latency, f.Jitter, f.FaultRate*100, metricsLn.Addr())

	svcCtx, stopSvc := context.WithCancel(ctx)
	defer stopSvc()
	g, gctx := errgroup.WithContext(svcCtx)
	// The simulator is served behind the demo's call log: its own account of what reached the
	// API, against which the summary's figures are checked.
	d.calls = &callLog{next: d.sim}
	g.Go(func() error {
		srv := &http.Server{Handler: d.calls, ReadHeaderTimeout: 5 * time.Second}
		return httpserve.Serve(gctx, srv, simLn, 5*time.Second, d.sim.Close)
	})
	g.Go(func() error { return svc.Run(gctx) })
	d.start = time.Now()
	produceDone := make(chan error, 1)
	g.Go(func() error {
		err := d.produce(gctx)
		produceDone <- err
		return err
	})

	drained, waitErr := d.watch(ctx, gctx, produceDone)
	elapsed := time.Since(d.start) // up to the drain, not the shutdown
	stopSvc()
	runErr := g.Wait()
	if errors.Is(runErr, context.Canceled) {
		runErr = nil
	}
	if waitErr != nil {
		return waitErr
	}
	if runErr != nil {
		return fmt.Errorf("demo: %w", runErr)
	}
	dlqCount := d.countDLQ()
	return d.summary(elapsed, drained, dlqCount)
}

// produce writes the generated stream: all at once, or at ProduceRate (forever, or until
// Events), publishing progress to the watcher after each acknowledged write.
func (d *run) produce(ctx context.Context) error {
	w := loadgen.Writer(d.brokers, Topic, nil)
	defer w.Close()
	_, _, err := loadgen.Produce(ctx, w, d.gen, d.cfg.Events, d.cfg.Forever, d.cfg.ProduceRate,
		func(produced int, e loadgen.Expect, batch []kafka.Message) {
			d.events.add(batch)
			d.mu.Lock()
			d.produced, d.expect = produced, e
			d.mu.Unlock()
		})
	return err
}

// watch prints progress until every produced record has ended (drained), the run is
// interrupted, or Timeout passes.
func (d *run) watch(ctx, svcCtx context.Context, produceDone <-chan error) (drained bool, err error) {
	// Sample chatgroupd's counters every 100ms (the summary's timings come from these), print
	// every 200ms on a terminal, every 2s otherwise.
	const sampleEvery = 100 * time.Millisecond
	printEvery := 20
	if d.cfg.TTY {
		printEvery = 2
	}
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	ticks := 0
	deadline := time.NewTimer(d.cfg.Timeout)
	defer deadline.Stop()
	producing := true
	defer func() {
		if d.cfg.TTY {
			fmt.Fprintln(d.cfg.Out)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return false, nil // interrupted: summarize what happened
		case <-svcCtx.Done():
			return false, nil // a component failed; Wait reports it
		case <-deadline.C:
			if d.cfg.Forever {
				deadline.Reset(d.cfg.Timeout)
				continue
			}
			return false, fmt.Errorf("demo: not drained after %s", d.cfg.Timeout)
		case err := <-produceDone:
			if err != nil {
				return false, err
			}
			producing = false
			produceDone = nil
		case <-tick.C:
		}
		produced, _ := d.progress()
		c := d.snapshot()
		d.samples = append(d.samples, progressSample{at: time.Since(d.start), produced: produced, ended: c.processed, creates: c.creates})
		done := !producing && c.processed >= float64(produced)
		if ticks%printEvery == 0 || done {
			d.printProgress(produced, c)
		}
		ticks++
		if done {
			return true, nil
		}
	}
}

// countDLQ sums the DLQ topic's end offsets: how many dead letters Kafka acknowledged.
func (d *run) countDLQ() int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(d.brokers...)}
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for p := 0; p < d.cfg.Partitions; p++ {
		req.Topics[Topic+".dlq"] = append(req.Topics[Topic+".dlq"], kafka.LastOffsetOf(p))
	}
	resp, err := client.ListOffsets(ctx, req)
	if err != nil {
		return -1
	}
	var n int64
	for _, po := range resp.Topics[Topic+".dlq"] {
		if po.Error != nil {
			return -1
		}
		n += po.LastOffset
	}
	return n
}
