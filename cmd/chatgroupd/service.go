package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/chatgroupd/chatgroupd/budget"
	"github.com/chatgroupd/chatgroupd/consumer"
	"github.com/chatgroupd/chatgroupd/dispatcher"
	"github.com/chatgroupd/chatgroupd/dlq"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/internal/kafkaconn"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// serviceConfig is everything the pipeline needs, already validated by the caller's flags.
type serviceConfig struct {
	flags     serviceFlags
	conn      *kafkaconn.Conn
	secretKey string
	log       *zap.Logger
	metrics   *metrics.Metrics
	gatherer  prometheus.Gatherer
	// metricsListener, when set, replaces listening on flags.metricsAddr (demo, tests).
	metricsListener net.Listener
}

// service is the running pipeline:
//
//	Kafka ─▶ consumer ─▶ dispatcher ─▶ IM client ─▶ IM API
//	            └────────▶ dlq.Writer ─▶ DLQ topic
//
// plus the metrics/health server. Run joins them with one errgroup.
type service struct {
	consumer   *consumer.Consumer
	dispatcher *dispatcher.Dispatcher
	dlq        *dlq.Writer
	fleet      *budget.Runner // nil in static mode
	http       *metrics.Server
	ln         net.Listener
	log        *zap.Logger
	// brokers explains, on /readyz and in the log, a consumer kept out of its group by
	// unreachable brokers.
	brokers *brokerWatch
}

func newService(cfg serviceConfig) (*service, error) {
	f := cfg.flags
	partitioner, err := event.ParsePartitioner(f.partitioner)
	if err != nil {
		return nil, fmt.Errorf("--partitioner: %w", err)
	}
	client, err := im.New(im.Config{
		SDKAppID: f.sdkAppID, Admin: f.admin, SecretKey: cfg.secretKey,
		Region: f.imRegion, BaseURL: f.imEndpoint, Timeout: f.imTimeout,
		Observer: newAPIObserver(cfg.metrics), Logger: cfg.log,
	})
	if err != nil {
		return nil, err
	}
	f.fleetBudget = cmp.Or(f.fleetBudget, fleetStatic)
	if f.fleetBudget != fleetStatic && f.fleetBudget != fleetKafka {
		return nil, fmt.Errorf("--fleet-budget %q: want %s or %s", f.fleetBudget, fleetStatic, fleetKafka)
	}
	lateArrivalMax := f.lateArrivalMax
	if lateArrivalMax <= 0 {
		lateArrivalMax = -1 // the flag's 0 is "off"; the Config's 0 is "default"
	}
	disp, err := dispatcher.New(dispatcher.Config{
		API: client, RateLimit: f.rateLimit, GetRateLimit: f.rateLimit, RetryBudget: f.retryBudget,
		LateArrivalMax: lateArrivalMax, ProbeAccount: f.admin, WidenOnStall: f.inProcessAPI,
		DuplicateNames: f.duplicateNames, DuplicateCode: f.duplicateCode,
		FleetBudget: f.fleetBudget == fleetKafka, Logger: cfg.log, Metrics: cfg.metrics,
	})
	if err != nil {
		return nil, err
	}
	fleet, err := newFleetBudget(f, cfg, disp)
	if err != nil {
		return nil, err
	}
	dw, err := dlq.NewWriter(dlq.Config{
		Brokers: cfg.conn.Brokers, Topic: f.dlq(), GroupID: f.group, Transport: cfg.conn.Transport,
		Logger: cfg.log, Metrics: cfg.metrics,
	})
	if err != nil {
		return nil, err
	}
	legacyDrain, err := testBreak(f.testBreak)
	if err != nil {
		dw.Close()
		return nil, err
	}
	if legacyDrain {
		cfg.log.Warn("TEST BREAK ACTIVE: revoke drain bound by the rebalance timeout only; this process can run two calls of one account at once",
			zap.String("env", envTestBreak), zap.String("value", f.testBreak))
	}
	cons, err := consumer.New(consumer.Config{
		Brokers: cfg.conn.Brokers, Topic: f.topic, GroupID: f.group,
		Dialer: cfg.conn.Dialer, Transport: cfg.conn.Transport,
		Dispatcher: disp, DeadLetterer: dw, Share: disp, Partitioner: partitioner,
		MaxInFlight: f.maxInFlight, ReorderWindow: f.reorderWindow, CommitInterval: f.commitInterval,
		DedupeWindow: f.dedupeWindow, ShutdownTimeout: f.shutdownTimeout, KeyMismatch: f.keyMismatch,
		SessionTimeout: f.sessionTimeout, RebalanceTimeout: f.rebalanceTime, TestLegacyDrain: legacyDrain,
		RetryLane: f.retryLane == "on", LaneTopic: f.laneTopic, AccountStallLimit: f.accountStallLimit,
		// A request of the previous owner runs at most one IM timeout (see consumer.Config).
		UncertainHold: f.imTimeout + time.Second,
		Logger:        cfg.log, Metrics: cfg.metrics,
	})
	if err != nil {
		dw.Close()
		return nil, err
	}
	s := &service{consumer: cons, dispatcher: disp, dlq: dw, fleet: fleet, ln: cfg.metricsListener, log: cfg.log}
	s.brokers = &brokerWatch{
		conn: cfg.conn, timeout: cmp.Or(f.kafka.dialTimeout, 10*time.Second), member: cons.Ready, log: cfg.log,
		minBackoff: time.Second, maxBackoff: 30 * time.Second,
	}
	// chatgroupd_ready is computed on each scrape from the same check /readyz uses, so the
	// alert on the gauge and the probe can never disagree.
	gather := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		if s.ready() == nil {
			cfg.metrics.Ready.Set(1)
		} else {
			cfg.metrics.Ready.Set(0)
		}
		return cfg.gatherer.Gather()
	})
	s.http = metrics.NewServer(f.metricsAddr, gather, s.ready, cfg.log)
	return s, nil
}

// Values of --fleet-budget.
const (
	fleetStatic = "static"
	fleetKafka  = "kafka"
)

// newFleetBudget returns the budget runner of --fleet-budget=kafka (nil for static) and
// exports the mode.
func newFleetBudget(f serviceFlags, cfg serviceConfig, disp *dispatcher.Dispatcher) (*budget.Runner, error) {
	for _, mode := range []string{fleetStatic, fleetKafka} {
		v := 0.0
		if mode == f.fleetBudget {
			v = 1
		}
		cfg.metrics.FleetBudgetMode.WithLabelValues(mode).Set(v)
	}
	if f.fleetBudget != fleetKafka {
		return nil, nil
	}
	host, _ := os.Hostname()
	member := fmt.Sprintf("%s-%08x", cmp.Or(host, "chatgroupd"), rand.Uint32())
	return budget.NewRunner(budget.KafkaConfig{
		Brokers: cfg.conn.Brokers, Topic: f.topic + ".budget", ReplicationOf: f.topic,
		Dialer: cfg.conn.Dialer, Transport: cfg.conn.Transport, Logger: cfg.log, Metrics: cfg.metrics,
	}, budget.Config{Member: member, Budget: int(math.Floor(f.rateLimit + 1e-9))}, disp, disp)
}

// errNotInGroup is the /readyz answer before the first generation and between generations.
var errNotInGroup = errors.New("not a member of the consumer group")

// ready is /readyz: in the group, the API accepts our credentials, and dead letters can be
// written (else their partitions are stuck).
func (s *service) ready() error {
	if !s.consumer.Ready() {
		if err := s.brokers.err(); err != nil {
			return fmt.Errorf("%w: %w", errNotInGroup, err)
		}
		return errNotInGroup
	}
	if err := s.consumer.DeadLetterHealth(); err != nil {
		return err
	}
	if err := s.dispatcher.Ready(); err != nil {
		return fmt.Errorf("im api: %w", err)
	}
	return nil
}

// Run runs every component until ctx ends or one of them fails, then shuts the rest down.
// The consumer finishes in-flight work, commits and leaves the group before Run returns.
func (s *service) Run(ctx context.Context) error {
	defer s.dlq.Close()
	if err := s.dlq.Check(ctx); err != nil {
		// Not fatal: the consumer blocks on the first dead letter until the topic is writable,
		// which is the contract; but say so now rather than at the first failure.
		s.log.Error("dead-letter topic not usable yet; dead letters will wait for it", zap.Error(err))
	}
	g, gctx := errgroup.WithContext(ctx)
	// The consumer owns the shutdown order: when ctx ends (or another component fails) it drains,
	// commits and leaves the group; only then do the dispatcher's prober and the HTTP server stop,
	// so /metrics and /readyz stay up while the consumer drains.
	tail, cancelTail := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelTail()
	g.Go(func() error {
		defer cancelTail()
		return s.consumer.Run(gctx)
	})
	g.Go(func() error { return s.dispatcher.Run(tail) })
	if s.fleet != nil {
		// Until the consumer has drained: then it says it leaves, and its budget is free at once.
		g.Go(func() error { return s.fleet.Run(tail) })
	}
	g.Go(func() error { return s.brokers.run(gctx) })
	g.Go(func() error {
		if s.ln != nil {
			return s.http.Serve(tail, s.ln)
		}
		return s.http.Run(tail)
	})
	err := g.Wait()
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		err = nil
	}
	s.log.Info("chatgroupd stopped", zap.Error(err))
	return err
}

// envTestBreak names the hidden switch a chaos suite sets to run a deliberately broken variant.
const envTestBreak = "CHATGROUPD_TEST_BREAK"

// testBreak maps CHATGROUPD_TEST_BREAK to the variant it selects: "legacy-drain" restores the
// revoke drain bounded by the rebalance timeout only. Anything else non-empty is an error, so a
// typo never passes for a test of the checker.
func testBreak(v string) (legacyDrain bool, err error) {
	switch v {
	case "":
		return false, nil
	case "legacy-drain":
		return true, nil
	}
	return false, fmt.Errorf("%s=%q: unknown test break (known: legacy-drain)", envTestBreak, v)
}
