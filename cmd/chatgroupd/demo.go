package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/internal/demo"
	"github.com/chatgroupd/chatgroupd/internal/kafkaconn"
	"github.com/chatgroupd/chatgroupd/internal/loadgen"
	"github.com/chatgroupd/chatgroupd/internal/logging"
	"github.com/chatgroupd/chatgroupd/ratelimit"
)

// demoFlags shape a demo run. The defaults exercise every path: duplicates, invalid records, an
// account over the 20-group quota, out-of-order seqs and transient API faults.
type demoFlags struct {
	cfg      demo.Config
	logLevel string
	mix      string
}

// demoHelp is `chatgroupd demo --help` besides the flags.
func demoHelp() help {
	return help{
		usage: "chatgroupd demo [flags]",
		about: `Runs the whole pipeline on this machine: an embedded Kafka broker, the IM simulator (with
transient faults), a load of events with duplicates, invalid records, an account over its
group quota and out-of-order seqs, and the real service between them. Shows progress, then a
summary; exits 0 only when nothing was lost and no group was created twice (2 otherwise).`,
		example: []string{
			"chatgroupd demo",
			"chatgroupd demo --forever --produce-rate 150 --metrics-addr 127.0.0.1:9090",
		},
	}
}

// newDemoFlags declares the flags of `chatgroupd demo`.
func newDemoFlags(f *demoFlags) *flag.FlagSet {
	fs := newFlagSet("demo", nil)
	c := &f.cfg
	intFlag(fs, &c.Events, "count", demo.DefaultEvents, 1, 10000000, "events to produce")
	boolFlag(fs, &c.Forever, "forever", false, "keep producing at --produce-rate until interrupted")
	floatFlag(fs, &c.ProduceRate, "produce-rate", 0, 0, 100000, fmt.Sprintf("events/s produced (0: the whole --count up front, a backlog); --forever defaults to %d", demo.DefaultForeverRate))
	intFlag(fs, &c.Partitions, "partitions", demo.DefaultPartitions, 1, 1000, "partitions of the event topic")
	floatFlag(fs, &c.RateLimit, "rate-limit", demo.DefaultRateLimit, 1, 1000, fmt.Sprintf("create calls/s budget (the simulator enforces %d/s)", demo.DefaultRateLimit))
	durationFlag(fs, &c.Latency, "latency", demo.DefaultLatency, 0, 10*time.Second, "simulated API latency")
	durationFlag(fs, &c.Jitter, "jitter", demo.DefaultJitter, 0, 10*time.Second, "extra uniform random API latency")
	floatFlag(fs, &c.FaultRate, "fault-rate", demo.DefaultFaultRate, 0, demo.MaxFaultRate, "share of API calls that fail transiently (50004, HTTP 502, applied-then-50005)")
	intFlag(fs, &c.Load.Accounts, "accounts", 50, 1, 100000, "accounts active at once")
	floatFlag(fs, &c.Load.DuplicateRate, "duplicate-rate", 0.03, 0, 0.5, "share of records that re-send an earlier event")
	floatFlag(fs, &c.Load.InvalidRate, "invalid-rate", 0.02, 0, 0.5, "share of records that break the event contract")
	floatFlag(fs, &c.Load.SwapRate, "swap-rate", 0.05, 0, 0.5, "share of events emitted after their successor")
	intFlag(fs, &c.Load.OverQuotaAccounts, "over-quota-accounts", 1, 0, 100000, "accounts that go past the 20-group quota (51010)")
	checkedFlag(fs, &f.mix, "mix", "lifecycle", "v1, lifecycle or type=weight,… (created, renamed, contacts_added, contacts_removed, deleted)",
		func(s string) error { _, err := loadgen.ParseMix(s); return err },
		"event types of the load: lifecycle (creates, contacts added and removed, renames, deletes), v1 (creates only) or weights")
	durationFlag(fs, &c.ReorderWindow, "reorder-window", demo.DefaultReorderWindow, time.Millisecond, time.Minute, "seq reorder window")
	stringFlag(fs, &c.MetricsAddr, "metrics-addr", demo.DefaultMetricsAddr, hostPort, "listen address of /metrics, /healthz, /readyz")
	durationFlag(fs, &c.Timeout, "timeout", demo.DefaultTimeout, time.Second, 24*time.Hour, "give up when the pipeline hasn't drained by then")
	stringFlag(fs, &f.logLevel, "log-level", "error", oneOf, "service log level (logs go to stderr)", logLevels()...)
	seedFlag(fs, &c.Seed, "random seed (0: time-based)")
	return fs
}

func runDemo(ctx context.Context, args []string, getenv env, stdout, stderr io.Writer) error {
	cfg, err := newDemoConfig(args, getenv, stdout, stderr)
	if err != nil {
		return err
	}
	_, err = demo.Run(ctx, cfg)
	var broken *demo.InvariantsError
	if errors.As(err, &broken) {
		return &exitError{code: 2, err: err}
	}
	return err
}

// newDemoConfig checks the flags and prepares a run.
func newDemoConfig(args []string, getenv env, stdout, stderr io.Writer) (demo.Config, error) {
	var f demoFlags
	fs := newDemoFlags(&f)
	if err := parseFlags(fs, args, getenv, stdout, demoHelp()); err != nil {
		return demo.Config{}, err
	}
	c := f.cfg
	var err error
	if c.Load.Mix, err = loadgen.ParseMix(f.mix); err != nil {
		return demo.Config{}, usageError("demo", fmt.Errorf("--mix: %w", err))
	}
	if c.Load.OverQuotaAccounts > c.Load.Accounts {
		return demo.Config{}, usageError("demo", fmt.Errorf("--over-quota-accounts %d: at most --accounts (%d)", c.Load.OverQuotaAccounts, c.Load.Accounts))
	}
	c.SecretKey = randomKey()
	log, err := logging.New(f.logLevel, "console", stderr, c.SecretKey)
	if err != nil {
		return demo.Config{}, err
	}
	c.Log, c.Out, c.TTY, c.Version = log, stdout, isTerminal(stdout), version
	c.Width = func() int { return terminalWidth(stdout, getenv) }
	c.NewService = newDemoService
	if err := c.Validate(); err != nil {
		return demo.Config{}, err
	}
	return c, nil
}

// newDemoService is `chatgroupd run` as the demo asks for it.
func newDemoService(sc demo.ServiceConfig) (demo.Service, error) {
	conn, err := kafkaconn.New(kafkaconn.Config{Brokers: sc.Brokers})
	if err != nil {
		return nil, err
	}
	sf := serviceFlags{
		topic: sc.Topic, group: sc.Group, imEndpoint: sc.IMEndpoint,
		imTimeout: im.DefaultTimeout, sdkAppID: sc.SDKAppID, admin: im.DefaultAdmin, rateLimit: sc.RateLimit,
		reorderWindow: sc.ReorderWindow, retryBudget: sc.RetryBudget, lateArrivalMax: ratelimit.DefaultLateArrivalMax,
		shutdownTimeout: sc.ShutdownTimeout, commitInterval: sc.CommitInterval, maxInFlight: sc.MaxInFlight,
		dedupeWindow: sc.DedupeWindow, inProcessAPI: sc.InProcessAPI,
		// As the flag's default: a demo replica has no instance id to come back as.
		leaveOnShutdown: true,
	}
	svc, err := newService(serviceConfig{flags: sf, conn: conn, secretKey: sc.SecretKey, log: sc.Log, metrics: sc.Metrics,
		gatherer: sc.Gatherer, metricsListener: sc.MetricsListener})
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &demoService{svc: svc, conn: conn}, nil
}

// demoService is the demo's service, which owns its Kafka connections: they close when it stops.
type demoService struct {
	svc  *service
	conn *kafkaconn.Conn
}

func (d *demoService) Run(ctx context.Context) error {
	defer d.conn.Close()
	return d.svc.Run(ctx)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func randomKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// terminalWidth is the column count of the terminal w writes to, else $COLUMNS, else 80.
func terminalWidth(w io.Writer, getenv env) int {
	if n := ttyColumns(w); n > 0 {
		return n
	}
	if getenv != nil {
		if n, err := strconv.Atoi(getenv("COLUMNS")); err == nil && n > 0 {
			return n
		}
	}
	return 80
}
