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
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/chatgroupd/chatgroupd/budget"
	"github.com/chatgroupd/chatgroupd/consumer"
	"github.com/chatgroupd/chatgroupd/dispatcher"
	"github.com/chatgroupd/chatgroupd/dlq"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/internal/instancelock"
	"github.com/chatgroupd/chatgroupd/internal/kafkaconn"
	"github.com/chatgroupd/chatgroupd/metrics"
	"github.com/chatgroupd/chatgroupd/ratelimit"
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
// plus the metrics/health server. Run joins them with one errgroup. With --retry-lane or
// --fleet-budget at auto, the consumer and dispatcher are built in Run once the modes are
// chosen (they depend on them), while /healthz, /readyz and /metrics already answer.
type service struct {
	mu sync.Mutex
	// pipe is nil until the modes are chosen; then set once.
	pipe *pipeline
	// choosing is /readyz's answer while the modes are being chosen.
	choosing error

	cfg         serviceConfig
	client      *im.Client
	partitioner event.Partitioner
	legacyDrain bool
	// wholeBudget is the whole-budget test break (see testBreak).
	wholeBudget bool
	// dropPart is the drop-partition test break (see testBreak).
	dropPart  bool
	resolver  *modeResolver // nil when no flag is auto
	fallbacks []*unusable   // what auto fell back on, watched by Run

	// blindLifecycle is the blind-lifecycle test break (see testBreak).
	blindLifecycle bool
	// unstatedEnds is the unstated-ends test break (see testBreak).
	unstatedEnds bool
	// ungatedWrites is the ungated-writes test break (see testBreak).
	ungatedWrites bool
	// ungatedLane is the ungated-lane test break (see testBreak).
	ungatedLane bool
	// noPreload is the no-preload test break (see testBreak).
	noPreload bool

	dlq  *dlq.Writer
	http *metrics.Server
	ln   net.Listener
	log  *zap.Logger
	// brokers explains, on /readyz and in the log, a consumer kept out of its group by
	// unreachable brokers.
	brokers *brokerWatch
}

// pipeline is what depends on the chosen modes.
type pipeline struct {
	consumer   *consumer.Consumer
	dispatcher *dispatcher.Dispatcher
	fleet      *budget.Runner // nil in static mode
	// lock is this replica's --instance-lock-dir lock, nil without one: held while the service
	// runs, so a successor with the same instance id takes over our budget only once we are gone.
	lock *instancelock.Lock
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
	if f.fleetBudget != fleetStatic && f.fleetBudget != fleetKafka && f.fleetBudget != modeAuto {
		return nil, fmt.Errorf("--fleet-budget %q: want %s, %s or %s", f.fleetBudget, modeAuto, fleetStatic, fleetKafka)
	}
	f.retryLane = cmp.Or(f.retryLane, laneOff)
	if f.retryLane != laneOff && f.retryLane != laneOn && f.retryLane != modeAuto {
		return nil, fmt.Errorf("--retry-lane %q: want %s, %s or %s", f.retryLane, modeAuto, laneOn, laneOff)
	}
	if f.fleetBudget == modeAuto && f.rateLimit < 1 {
		// The budget topic deals in whole calls per second; below one, only static shares work.
		cfg.log.Info("--fleet-budget=auto: static, since --rate-limit is below one call per second", zap.Float64("rate_limit", f.rateLimit))
		f.fleetBudget = fleetStatic
	}
	cfg.flags = f
	dw, err := dlq.NewWriter(dlq.Config{
		Brokers: cfg.conn.Brokers, Topic: f.dlq(), GroupID: f.group, Transport: cfg.conn.Transport,
		Logger: cfg.log, Metrics: cfg.metrics,
	})
	if err != nil {
		return nil, err
	}
	brk, err := testBreak(f.testBreak)
	if err != nil {
		dw.Close()
		return nil, err
	}
	legacyDrain := brk == breakLegacyDrain
	if brk != "" {
		cfg.log.Warn("TEST BREAK ACTIVE: "+breakWarning(brk), zap.String("env", envTestBreak), zap.String("value", f.testBreak))
	}
	s := &service{cfg: cfg, client: client, partitioner: partitioner, legacyDrain: legacyDrain,
		wholeBudget: brk == breakWholeBudget, dropPart: brk == breakDropPart,
		blindLifecycle: brk == breakBlindLifecycle, unstatedEnds: brk == breakUnstatedEnds, ungatedWrites: brk == breakUngatedWrites, ungatedLane: brk == breakUngatedLane,
		noPreload: brk == breakNoPreload, dlq: dw, ln: cfg.metricsListener, log: cfg.log}
	if f.retryLane == modeAuto || f.fleetBudget == modeAuto || f.retryLane == laneOn || f.fleetBudget == fleetKafka {
		s.resolver = &modeResolver{
			adm:        &kafka.Client{Addr: kafka.TCP(cfg.conn.Brokers...), Transport: cfg.conn.Transport, Timeout: 10 * time.Second},
			eventTopic: f.topic, log: cfg.log, metrics: cfg.metrics, minBackoff: time.Second, maxBackoff: 30 * time.Second,
			onRetry: func(err error) { s.mu.Lock(); s.choosing = err; s.mu.Unlock() },
		}
	}
	if f.retryLane != modeAuto && f.fleetBudget != modeAuto {
		// The modes are given: build now, so a bad configuration fails before anything runs.
		if err := s.build(f); err != nil {
			dw.Close()
			return nil, err
		}
	}
	if s.resolver != nil {
		s.choosing = errors.New("checking the topics of --retry-lane and --fleet-budget")
	}
	s.brokers = &brokerWatch{
		conn: cfg.conn, timeout: cmp.Or(f.kafka.dialTimeout, kafkaconn.DefaultDialTimeout), member: s.member, log: cfg.log,
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

// build makes the mode-dependent part of the pipeline for f, whose modes are chosen (never
// auto), and exports the modes.
func (s *service) build(f serviceFlags) error {
	cfg := s.cfg
	for _, mode := range []string{laneOn, laneOff} {
		v := 0.0
		if mode == f.retryLane {
			v = 1
		}
		cfg.metrics.RetryLaneMode.WithLabelValues(mode).Set(v)
	}
	lateArrivalMax := f.lateArrivalMax
	if lateArrivalMax <= 0 {
		lateArrivalMax = ratelimit.LateArrivalOff // the flag's 0 is "off"; the Config's 0 is DefaultLateArrivalMax
	}
	disp, err := dispatcher.New(dispatcher.Config{
		// --rate-limit sizes the get, update and delete budgets too: each API has its own quota,
		// all of the documented same size (dispatcher.DefaultRateLimit).
		API: s.client, RateLimit: f.rateLimit, GetRateLimit: f.rateLimit, UpdateRateLimit: f.rateLimit,
		DeleteRateLimit: f.rateLimit, RetryBudget: f.retryBudget,
		ProbeAccount: f.admin, DuplicateNames: f.duplicateNames, DuplicateCode: f.duplicateCode,
		// Only the demo runs the API in this process, where its stalls delay the server's count.
		Limiter:     ratelimit.Config{LateArrivalMax: lateArrivalMax, WidenOnStall: f.inProcessAPI},
		FleetBudget: f.fleetBudget == fleetKafka, Logger: cfg.log, Metrics: cfg.metrics,
	})
	if err != nil {
		return err
	}
	var sink budget.Sink = disp
	if s.noPreload {
		sink = noPreload{disp}
	}
	fleet, lock, err := newFleetBudget(f, cfg, sink, disp)
	if err != nil {
		return err
	}
	var share consumer.ShareSetter = disp
	if s.wholeBudget {
		share = wholeBudget{disp}
	}
	var dispatch consumer.Dispatcher = disp
	if s.blindLifecycle {
		dispatch = blindLifecycle{disp}
	}
	cons, err := consumer.New(consumer.Config{
		Brokers: cfg.conn.Brokers, Topic: f.topic, GroupID: f.group,
		Dialer: cfg.conn.Dialer, Transport: cfg.conn.Transport,
		Dispatcher: dispatch, DeadLetterer: s.dlq, Share: share, Partitioner: s.partitioner,
		MaxInFlight: f.maxInFlight, ReorderWindow: f.reorderWindow, CommitInterval: f.commitInterval,
		DedupeWindow: f.dedupeWindow, ShutdownTimeout: f.shutdownTimeout, KeyMismatch: f.keyMismatch,
		SessionTimeout: f.sessionTimeout, RebalanceTimeout: f.rebalanceTime, InstanceID: f.instanceID, StayOnShutdown: !f.leaveOnShutdown, TestLegacyDrain: s.legacyDrain, TestDropPartition: s.dropPart, TestUnstatedEnds: s.unstatedEnds, TestUngatedWrites: s.ungatedWrites, TestUngatedLane: s.ungatedLane,
		RetryLane: f.retryLane == laneOn, LaneTopic: f.laneTopic, AccountStallLimit: f.accountStallLimit,
		HandoverSkew: handoverSkew(f.handoverSkew),
		// A request of the previous owner runs at most one IM timeout (see consumer.Config).
		UncertainHold: f.imTimeout + time.Second,
		Logger:        cfg.log, Metrics: cfg.metrics,
	})
	if err != nil {
		if lock != nil {
			lock.Close()
		}
		return err
	}
	s.mu.Lock()
	s.pipe = &pipeline{consumer: cons, dispatcher: disp, fleet: fleet, lock: lock}
	s.mu.Unlock()
	return nil
}

// pipeline returns the mode-dependent part, nil while the modes are being chosen.
func (s *service) pipeline() *pipeline {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pipe
}

// member tells the broker watch whether the consumer is in its group.
func (s *service) member() bool {
	p := s.pipeline()
	return p != nil && p.consumer.Ready()
}

// needs returns the topics of the features whose mode is auto or required.
func (s *service) needs(f serviceFlags) (lane, fleet topicNeed) {
	lane = topicNeed{feature: featureLane, flag: "--retry-lane=" + f.retryLane, topic: cmp.Or(f.laneTopic, f.topic+".retry"), samePartitions: true}
	fleet = topicNeed{feature: featureBudget, flag: "--fleet-budget=" + f.fleetBudget, topic: f.topic + ".budget",
		configs: budgetTopicConfigs}
	return lane, fleet
}

// chooseModes turns auto (and checks on, kafka) into the mode this replica runs, creating the
// topics it may. Auto falls back only on a definite answer (see checkTopic).
func (s *service) chooseModes(ctx context.Context) (serviceFlags, error) {
	f := s.cfg.flags
	lane, fleet := s.needs(f)
	var err error
	var u *unusable
	if f.retryLane == modeAuto || f.retryLane == laneOn {
		if f.retryLane, u, err = s.resolver.resolve(ctx, lane, f.retryLane, laneOn, laneOff); err != nil {
			return f, err
		}
		if u != nil {
			s.fallbacks = append(s.fallbacks, u)
		}
	}
	if f.fleetBudget == modeAuto || f.fleetBudget == fleetKafka {
		if f.fleetBudget, u, err = s.resolver.resolve(ctx, fleet, f.fleetBudget, fleetKafka, fleetStatic); err != nil {
			return f, err
		}
		if u != nil {
			s.fallbacks = append(s.fallbacks, u)
		}
	}
	s.log.Info("modes chosen", zap.String("retry_lane", f.retryLane), zap.String("fleet_budget", f.fleetBudget))
	s.mu.Lock()
	s.choosing = nil
	s.mu.Unlock()
	return f, nil
}

// Values of --fleet-budget.
const (
	fleetStatic = "static"
	fleetKafka  = "kafka"
)

// newFleetBudget returns the budget runner of --fleet-budget=kafka (nil for static), steering
// sink and reading src (the dispatcher), with the instance lock it holds if any, and exports the
// mode.
func newFleetBudget(f serviceFlags, cfg serviceConfig, sink budget.Sink, src budget.Source) (*budget.Runner, *instancelock.Lock, error) {
	for _, mode := range []string{fleetStatic, fleetKafka} {
		v := 0.0
		if mode == f.fleetBudget {
			v = 1
		}
		cfg.metrics.FleetBudgetMode.WithLabelValues(mode).Set(v)
	}
	if f.fleetBudget != fleetKafka {
		return nil, nil, nil
	}
	host, _ := os.Hostname()
	member := fmt.Sprintf("%s-%08x", cmp.Or(host, "chatgroupd"), rand.Uint32())
	lock, prev := lockInstance(f, member, cfg.log)
	// Read after the lock was taken: every call of prev was made before.
	bc := budget.Config{Member: member, Budget: int(math.Floor(f.rateLimit + 1e-9)), Succeeds: prev, SucceedsAt: time.Now()}
	r, err := budget.NewRunner(budget.KafkaConfig{
		Brokers: cfg.conn.Brokers, Topic: f.topic + ".budget", ReplicationOf: f.topic,
		Dialer: cfg.conn.Dialer, Transport: cfg.conn.Transport, Logger: cfg.log, Metrics: cfg.metrics,
	}, bc, sink, src)
	if err != nil && lock != nil {
		lock.Close()
		lock = nil
	}
	return r, lock, err
}

// lockInstance takes this replica's lock in --instance-lock-dir (nil, "" when off or not had)
// and returns the budget member of the process that held it last, which, being dead, may be
// succeeded at once. Without the lock the replica runs as without the flag: its predecessor's
// budget share expires with the budget TTL.
func lockInstance(f serviceFlags, member string, log *zap.Logger) (*instancelock.Lock, string) {
	if f.instanceLockDir == "" || f.instanceID == "" {
		return nil, ""
	}
	lock, prev, err := instancelock.Acquire(f.instanceLockDir, f.instanceID, member)
	switch {
	case errors.Is(err, instancelock.ErrHeld):
		log.Warn("another process still holds this instance id's lock (alive, maybe frozen): no budget takeover",
			zap.String("instance_id", f.instanceID), zap.Error(err))
		return nil, ""
	case err != nil:
		log.Error("instance lock not taken: no budget takeover", zap.String("instance_id", f.instanceID), zap.Error(err))
		return nil, ""
	}
	log.Info("instance lock taken", zap.String("path", lock.Path()), zap.String("member", member),
		zap.String("previous_member", prev))
	return lock, prev
}

// errNotInGroup is the /readyz answer before the first generation and between generations.
var errNotInGroup = errors.New("not a member of the consumer group")

// ready is /readyz: in the group, the API accepts our credentials, and dead letters can be
// written (else their partitions are stuck).
func (s *service) ready() error {
	s.mu.Lock()
	p, choosing := s.pipe, s.choosing
	s.mu.Unlock()
	if choosing != nil {
		return choosing
	}
	if p == nil {
		// The modes are chosen and the pipeline is being built: not in the group yet. (A nil
		// dereference here panicked the handler and /readyz answered with a closed connection.)
		return errNotInGroup
	}
	if !p.consumer.Ready() {
		if err := s.brokers.err(); err != nil {
			return fmt.Errorf("%w: %w", errNotInGroup, err)
		}
		return errNotInGroup
	}
	if err := p.consumer.DeadLetterHealth(); err != nil {
		return err
	}
	if err := p.dispatcher.Ready(); err != nil {
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
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	g, gctx := errgroup.WithContext(runCtx)
	// The consumer owns the shutdown order: when ctx ends (or another component fails) it drains,
	// commits and leaves the group; only then do the dispatcher's prober and the HTTP server stop,
	// so /metrics and /readyz stay up while the consumer drains.
	tail, cancelTail := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelTail()
	g.Go(func() error { return s.brokers.run(gctx) })
	g.Go(func() error {
		if s.ln != nil {
			return s.http.Serve(tail, s.ln)
		}
		return s.http.Run(tail)
	})
	p := s.pipeline()
	if p == nil || s.resolver != nil {
		// Modes at auto are chosen here, with /readyz answering; required ones (on, kafka) are
		// checked, and their topics created when missing.
		f, err := s.chooseModes(gctx)
		if err == nil && p == nil {
			err = s.build(f)
		}
		if err != nil {
			stop()
			cancelTail()
			if werr := g.Wait(); werr != nil && !errors.Is(werr, context.Canceled) {
				err = werr // e.g. the metrics port in use: the cause, not the choice it cut short
			} else if ctx.Err() != nil {
				return nil
			}
			s.log.Error("chatgroupd stopped", zap.Error(err))
			return err
		}
		p = s.pipeline()
		if len(s.fallbacks) > 0 {
			g.Go(func() error {
				return s.resolver.watch(gctx, s.fallbacks, watchInterval(s.cfg.flags.accountStallLimit))
			})
		}
	}
	if p.lock != nil {
		// After every component has stopped, the budget runner's leave included.
		defer p.lock.Close()
	}
	g.Go(func() error {
		defer cancelTail()
		return p.consumer.Run(gctx)
	})
	g.Go(func() error { return p.dispatcher.Run(tail) })
	if p.fleet != nil {
		// Until the consumer has drained: then it says it leaves and lingers while its last
		// calls age out, within the shutdown time the operator gave (--shutdown-timeout from
		// the signal), so its budget flows to the others as fast as is safe.
		exit, cancelExit := afterShutdown(ctx, s.cfg.flags.shutdownTimeout)
		defer cancelExit()
		g.Go(func() error { return p.fleet.Run(tail, exit) })
	}
	err := g.Wait()
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		err = nil
	}
	s.log.Info("chatgroupd stopped", zap.Error(err))
	return err
}

// afterShutdown returns a context that ends d after ctx does, or when cancel is called: how
// long a process asked to stop may still take.
func afterShutdown(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	exit, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-exit.Done():
		}
	})
	return exit, func() {
		stop()
		cancel()
	}
}

// envTestBreak names the hidden switch a chaos suite sets to run a deliberately broken variant.
const envTestBreak = "CHATGROUPD_TEST_BREAK"

// Variants CHATGROUPD_TEST_BREAK selects.
const (
	breakLegacyDrain = "legacy-drain"   // the revoke drain bounded by the rebalance timeout only
	breakWholeBudget = "whole-budget"   // every replica uses the whole rate budget, as if alone
	breakDropPart    = "drop-partition" // a group leader leaves the topic's last partition unassigned

	breakBlindLifecycle = "blind-lifecycle" // uncertain and replayed lifecycle events skip the existence check
	breakUnstatedEnds   = "unstated-ends"   // an account's next record does not wait for its previous end to be committed
	breakUngatedWrites  = "ungated-writes"  // a record is written before a commit lists it as possibly written
	breakUngatedLane    = "ungated-lane"    // a lane copy is written before a commit states its main record ended
	breakNoPreload      = "no-preload"      // a budget successor does not count its dead predecessor's calls as its own
)

// breakWarning is what a replica running variant brk logs at start.
func breakWarning(brk string) string {
	switch brk {
	case breakLegacyDrain:
		return "revoke drain bound by the rebalance timeout only; this process can run two calls of one account at once"
	case breakWholeBudget:
		return "this replica takes the whole rate budget whatever it owns; the fleet crosses the budget"
	case breakDropPart:
		return "as group leader this replica leaves the last partition unassigned; its records are never consumed"
	case breakBlindLifecycle:
		return "uncertain and replayed lifecycle events are sent without looking the user's groups up first; an event the previous owner applied is applied again"
	case breakUnstatedEnds:
		return "an account's next event is sent before a commit states its previous one ended; a successor's look-up can see a later event's effect"
	case breakUngatedWrites:
		return "events are sent before a commit lists them as possibly sent; after a crash the successor takes some as never sent and applies them again"
	case breakUngatedLane:
		return "a parked account's lane copies are sent before a commit states their main-topic records ended; after a crash the successor takes such a record as never sent and applies it again"
	case breakNoPreload:
		return "a fleet-budget successor ends its dead predecessor's entry without counting that predecessor's calls in its own window; the fleet can cross the budget in the second after a crash"
	}
	return brk
}

// testBreak checks CHATGROUPD_TEST_BREAK and returns the variant it selects ("" for none).
// Anything unknown is an error, so a typo never passes for a test of the checker.
func testBreak(v string) (string, error) {
	switch v {
	case "", breakLegacyDrain, breakWholeBudget, breakDropPart, breakBlindLifecycle, breakUnstatedEnds, breakUngatedWrites, breakUngatedLane, breakNoPreload:
		return v, nil
	}
	return "", fmt.Errorf("%s=%q: unknown test break (known: %s, %s, %s, %s, %s, %s, %s, %s)", envTestBreak, v,
		breakLegacyDrain, breakWholeBudget, breakDropPart, breakBlindLifecycle, breakUnstatedEnds, breakUngatedWrites, breakUngatedLane, breakNoPreload)
}

// wholeBudget is the whole-budget test break: the replica's share ignores the partitions of the
// others, which is what the chaos suite's budget check must catch.
type wholeBudget struct{ d *dispatcher.Dispatcher }

func (w wholeBudget) SetPartitions(ids []int, _ int) { w.d.SetPartitions(ids, 0) }

// noPreload is the no-preload test break: the budget member's sink ignores Preload, so a
// successor (budget.Config.Succeeds) still names its dead predecessor and ends its entry in every
// ledger, but the calls that predecessor may still have in the window hold no room in its
// limiter. What the chaos suite's budget check must catch in the second after a crash.
type noPreload struct{ *dispatcher.Dispatcher }

// Preload counts nothing.
func (noPreload) Preload(int, time.Time) {}

// blindLifecycle is the blind-lifecycle test break: it hands the dispatcher every lifecycle
// event (rename, add, remove, delete) as if it were new, so an uncertain or replayed one is sent
// without the look-up that finds it already applied. The chaos suite's lifecycle checker must
// catch what follows after a SIGKILL or a rebalance (renames and deletes of groups that are
// gone dead-lettered, effects applied twice).
type blindLifecycle struct{ d *dispatcher.Dispatcher }

func (b blindLifecycle) Dispatch(ctx context.Context, t dispatcher.Task) (dispatcher.Outcome, error) {
	if t.Event != nil && t.Event.EventType != event.TypeContactGroupCreated {
		t.Uncertain, t.ReplayCount = false, 0
	}
	return b.d.Dispatch(ctx, t)
}

// handoverSkew maps the flag onto consumer.Config.HandoverSkew, whose zero means the default:
// the flag's 0 is no margin at all.
func handoverSkew(d time.Duration) time.Duration {
	if d == 0 {
		return time.Nanosecond
	}
	return d
}
