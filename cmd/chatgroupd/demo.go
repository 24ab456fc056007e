package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/httpserve"
	"github.com/chatgroupd/chatgroupd/internal/kafkaconn"
	"github.com/chatgroupd/chatgroupd/internal/loadgen"
	"github.com/chatgroupd/chatgroupd/internal/logging"
	"github.com/chatgroupd/chatgroupd/metrics"
	"github.com/chatgroupd/chatgroupd/ratelimit"
)

// demoFlags shape a demo run. The defaults exercise every path: duplicates, invalid records, an
// account over the 20-group quota, out-of-order seqs and transient API faults.
type demoFlags struct {
	events        int
	forever       bool
	produceRate   float64
	partitions    int
	rateLimit     float64
	latency       time.Duration
	jitter        time.Duration
	faultRate     float64
	metricsAddr   string
	timeout       time.Duration
	logLevel      string
	seed          uint64
	gen           loadgen.Config
	reorderWindow time.Duration
}

const demoAppID = 1400000000

// demoRateLimit is the create calls per second the demo's simulator enforces and its budget's
// default: the simulator's default, which states the documented quota (im.RateLimitPerAPI) on
// its own.
const demoRateLimit = imsim.DefaultRateLimit

// demoWindowTolerance is the highest one-second count of create calls the demo accepts from its
// in-process simulator: 5% over the demoRateLimit (see summary).
const demoWindowTolerance = demoRateLimit * 105 / 100

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
	intFlag(fs, &f.events, "count", 3000, 1, 10000000, "events to produce")
	boolFlag(fs, &f.forever, "forever", false, "keep producing at --produce-rate until interrupted")
	floatFlag(fs, &f.produceRate, "produce-rate", 0, 0, 100000, "events/s produced (0: the whole --count up front, a backlog); --forever defaults to 150")
	intFlag(fs, &f.partitions, "partitions", 6, 1, 1000, "partitions of the event topic")
	floatFlag(fs, &f.rateLimit, "rate-limit", demoRateLimit, 1, 1000, "create calls/s budget (the simulator enforces 200/s)")
	durationFlag(fs, &f.latency, "latency", 20*time.Millisecond, 0, 10*time.Second, "simulated API latency")
	durationFlag(fs, &f.jitter, "jitter", 20*time.Millisecond, 0, 10*time.Second, "extra uniform random API latency")
	floatFlag(fs, &f.faultRate, "fault-rate", 0.03, 0, 0.5, "share of API calls that fail transiently (50004, HTTP 502, applied-then-50005)")
	intFlag(fs, &f.gen.Accounts, "accounts", 50, 1, 100000, "accounts active at once")
	floatFlag(fs, &f.gen.DuplicateRate, "duplicate-rate", 0.03, 0, 0.5, "share of records that re-send an earlier event")
	floatFlag(fs, &f.gen.InvalidRate, "invalid-rate", 0.02, 0, 0.5, "share of records that break the event contract")
	floatFlag(fs, &f.gen.SwapRate, "swap-rate", 0.05, 0, 0.5, "share of events emitted after their successor")
	intFlag(fs, &f.gen.OverQuotaAccounts, "over-quota-accounts", 1, 0, 100000, "accounts that go past the 20-group quota (51010)")
	durationFlag(fs, &f.reorderWindow, "reorder-window", 200*time.Millisecond, time.Millisecond, time.Minute, "seq reorder window")
	stringFlag(fs, &f.metricsAddr, "metrics-addr", "127.0.0.1:0", hostPort, "listen address of /metrics, /healthz, /readyz")
	durationFlag(fs, &f.timeout, "timeout", 3*time.Minute, time.Second, 24*time.Hour, "give up when the pipeline hasn't drained by then")
	stringFlag(fs, &f.logLevel, "log-level", "error", oneOf, "service log level (logs go to stderr)", logLevels()...)
	seedFlag(fs, &f.seed, "random seed (0: time-based)")
	return fs
}

func runDemo(ctx context.Context, args []string, getenv env, stdout, stderr io.Writer) error {
	d, err := newDemo(args, getenv, stdout, stderr)
	if err != nil {
		return err
	}
	return d.run(ctx)
}

// newDemo checks the flags and prepares a run.
func newDemo(args []string, getenv env, stdout, stderr io.Writer) (*demo, error) {
	var f demoFlags
	fs := newDemoFlags(&f)
	if err := parseFlags(fs, args, getenv, stdout, demoHelp()); err != nil {
		return nil, err
	}
	if f.gen.OverQuotaAccounts > f.gen.Accounts {
		return nil, usageError("demo", fmt.Errorf("--over-quota-accounts %d: at most --accounts (%d)", f.gen.OverQuotaAccounts, f.gen.Accounts))
	}
	if f.forever && f.produceRate == 0 {
		f.produceRate = 150
	}
	if f.seed == 0 {
		f.seed = uint64(time.Now().UnixNano())
	}
	f.gen.Seed = f.seed
	gen, err := loadgen.New(f.gen)
	if err != nil {
		return nil, err
	}
	key := randomKey()
	log, err := logging.New(f.logLevel, "console", stderr, key)
	if err != nil {
		return nil, err
	}
	return &demo{flags: f, gen: gen, out: stdout, tty: isTerminal(stdout), log: log, key: key, getenv: getenv}, nil
}

type demo struct {
	flags demoFlags
	gen   *loadgen.Generator
	out   io.Writer
	tty   bool
	log   *zap.Logger
	key   string // the simulator's secret key, redacted from the log
	// getenv reads COLUMNS when the terminal's size can't be asked.
	getenv env

	reg     *prometheus.Registry
	sim     *imsim.Server
	brokers []string
	// metricsAddr is where this run serves /metrics.
	metricsAddr string
	start       time.Time

	calls   *callLog
	events  eventTimes
	samples []progressSample // written by watch, read by summary after it
	report  demoReport

	mu       sync.Mutex // guards what the producer shares with the watcher
	produced int
	expect   loadgen.Expect
}

// progress returns what has been produced so far and what a correct pipeline does with it.
func (d *demo) progress() (int, loadgen.Expect) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.produced, d.expect
}

const demoTopic = defaultTopic

func (d *demo) run(ctx context.Context) error {
	f := d.flags
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(f.partitions), demoTopic, demoTopic+".dlq"))
	if err != nil {
		return fmt.Errorf("demo: embedded kafka: %w", err)
	}
	defer cluster.Close()
	d.brokers = cluster.ListenAddrs()

	key := d.key
	d.sim, err = imsim.New(imsim.Config{
		SDKAppID: demoAppID, SecretKey: key, RateLimit: demoRateLimit, Seed: f.seed,
		Faults: imsim.Faults{
			Latency: f.latency, Jitter: f.jitter,
			ErrorRates:        map[int]float64{im.CodeInternal: f.faultRate / 2},
			HTTP502Rate:       f.faultRate / 4,
			ApplyThenFailRate: f.faultRate / 4,
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
	metricsLn, err := net.Listen("tcp", f.metricsAddr)
	if err != nil {
		simLn.Close()
		return fmt.Errorf("demo: metrics listener: %w", err)
	}

	conn, err := kafkaconn.New(kafkaconn.Config{Brokers: d.brokers})
	if err != nil {
		return err
	}
	d.reg = prometheus.NewRegistry()
	m := metrics.New(d.reg, version, true)
	sf := serviceFlags{
		topic: demoTopic, group: "chatgroupd-demo", imEndpoint: "http://" + simLn.Addr().String(),
		imTimeout: im.DefaultTimeout, sdkAppID: demoAppID, admin: im.DefaultAdmin, rateLimit: f.rateLimit,
		reorderWindow: f.reorderWindow, retryBudget: time.Hour, lateArrivalMax: ratelimit.DefaultLateArrivalMax,
		shutdownTimeout: 10 * time.Second, commitInterval: 500 * time.Millisecond, maxInFlight: 256, dedupeWindow: 100000, inProcessAPI: true,
	}
	svc, err := newService(serviceConfig{flags: sf, conn: conn, secretKey: key, log: d.log, metrics: m, gatherer: d.reg, metricsListener: metricsLn})
	if err != nil {
		return err
	}

	d.metricsAddr = metricsLn.Addr().String()
	fmt.Fprintf(d.out, "chatgroupd demo: embedded Kafka %s (%d partitions), IM simulator %s (%v±%v latency, %.0f%% transient faults), metrics http://%s/metrics\n",
		d.brokers[0], f.partitions, sf.imEndpoint, f.latency, f.jitter, f.faultRate*100, metricsLn.Addr())

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

// produce writes the generated stream: all at once, or at --produce-rate (forever, or until
// --count), publishing progress to the watcher after each acknowledged write.
func (d *demo) produce(ctx context.Context) error {
	w := eventWriter(d.brokers, demoTopic, nil)
	defer w.Close()
	_, _, err := produceStream(ctx, w, d.gen, d.flags.events, d.flags.forever, d.flags.produceRate,
		func(produced int, e loadgen.Expect, batch []kafka.Message) {
			d.events.add(batch)
			d.mu.Lock()
			d.produced, d.expect = produced, e
			d.mu.Unlock()
		})
	return err
}

// counts is a snapshot of the service's own counters.
type counts struct {
	consumed  float64
	outcomes  map[string]float64
	dlq       map[string]float64 // "reason code"
	creates   float64
	processed float64
}

func (d *demo) snapshot() counts {
	c := counts{outcomes: map[string]float64{}, dlq: map[string]float64{}}
	mfs, err := d.reg.Gather()
	if err != nil {
		return c
	}
	label := func(m *dto.Metric, name string) string {
		for _, l := range m.GetLabel() {
			if l.GetName() == name {
				return l.GetValue()
			}
		}
		return ""
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "chatgroupd_events_consumed_total":
				c.consumed += m.GetCounter().GetValue()
			case "chatgroupd_events_processed_total":
				c.outcomes[label(m, "outcome")] += m.GetCounter().GetValue()
				c.processed += m.GetCounter().GetValue()
			case "chatgroupd_dlq_records_total":
				c.dlq[label(m, "reason")+" "+label(m, "code")] += m.GetCounter().GetValue()
			case "chatgroupd_api_requests_total":
				if label(m, "api") == im.APICreate {
					c.creates += m.GetCounter().GetValue()
				}
			}
		}
	}
	return c
}

// watch prints progress until every produced record has ended (drained), the run is
// interrupted, or --timeout passes.
func (d *demo) watch(ctx, svcCtx context.Context, produceDone <-chan error) (drained bool, err error) {
	// Sample chatgroupd's counters every 100ms (the summary's timings come from these), print
	// every 200ms on a terminal, every 2s otherwise.
	const sampleEvery = 100 * time.Millisecond
	printEvery := 20
	if d.tty {
		printEvery = 2
	}
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	ticks := 0
	deadline := time.NewTimer(d.flags.timeout)
	defer deadline.Stop()
	producing := true
	defer func() {
		if d.tty {
			fmt.Fprintln(d.out)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return false, nil // interrupted: summarize what happened
		case <-svcCtx.Done():
			return false, nil // a component failed; Wait reports it
		case <-deadline.C:
			if d.flags.forever {
				deadline.Reset(d.flags.timeout)
				continue
			}
			return false, fmt.Errorf("demo: not drained after %s", d.flags.timeout)
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

func (d *demo) printProgress(produced int, c counts) {
	el := time.Since(d.start).Seconds()
	p := progressFigures{
		elapsed: el, produced: produced, consumed: c.consumed, ended: c.processed,
		applied: c.outcomes[metrics.OutcomeApplied], duplicates: c.outcomes[metrics.OutcomeDuplicate],
		deadLettered: c.outcomes[metrics.OutcomeInvalid] + c.outcomes[metrics.OutcomeRejected] + c.outcomes[metrics.OutcomePartial] + c.outcomes[metrics.OutcomeExhausted],
		rate:         c.creates / max(el, 0.001),
	}
	if d.tty {
		// One redraw is one terminal line: cut to the width (read again each time, so a resized
		// window is followed), or the terminal wraps it and every redraw scrolls a new line.
		fmt.Fprintf(d.out, "\r%s\x1b[K", fitProgress(terminalWidth(d.out, d.getenv), p))
		return
	}
	fmt.Fprintln(d.out, p.full(0))
}

// progressFigures is one progress report.
type progressFigures struct {
	elapsed                                            float64
	produced                                           int
	consumed, ended, applied, duplicates, deadLettered float64
	rate                                               float64
}

func (p progressFigures) bar(width int) string {
	if width <= 0 {
		return ""
	}
	done := 0
	if p.produced > 0 {
		done = int(float64(width) * min(p.ended/float64(p.produced), 1))
	}
	return "[" + strings.Repeat("#", done) + strings.Repeat(".", width-done) + "] "
}

func (p progressFigures) full(bar int) string {
	return p.bar(bar) + fmt.Sprintf("%5.1fs  produced %d  consumed %.0f  ended %.0f  applied %.0f  duplicates %.0f  dead-lettered %.0f  create calls %.0f/s",
		p.elapsed, p.produced, p.consumed, p.ended, p.applied, p.duplicates, p.deadLettered, p.rate)
}

// fitProgress returns the longest form of p that fits a terminal width columns wide, leaving the
// last column free (writing it makes some terminals wrap). Every form is ASCII: bytes are columns.
func fitProgress(width int, p progressFigures) string {
	forms := []string{
		p.full(24),
		p.bar(16) + fmt.Sprintf("%5.1fs  ended %.0f/%d  applied %.0f  dup %.0f  dlq %.0f  %.0f calls/s",
			p.elapsed, p.ended, p.produced, p.applied, p.duplicates, p.deadLettered, p.rate),
		p.bar(10) + fmt.Sprintf("%5.1fs ended %.0f/%d %.0f/s", p.elapsed, p.ended, p.produced, p.rate),
		fmt.Sprintf("%.0fs %.0f/%d", p.elapsed, p.ended, p.produced),
	}
	for _, f := range forms {
		if len(f) <= width-1 {
			return f
		}
	}
	last := forms[len(forms)-1]
	return last[:max(0, min(len(last), width-1))]
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

// countDLQ sums the DLQ topic's end offsets: how many dead letters Kafka acknowledged.
func (d *demo) countDLQ() int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(d.brokers...)}
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for p := 0; p < d.flags.partitions; p++ {
		req.Topics[demoTopic+".dlq"] = append(req.Topics[demoTopic+".dlq"], kafka.LastOffsetOf(p))
	}
	resp, err := client.ListOffsets(ctx, req)
	if err != nil {
		return -1
	}
	var n int64
	for _, po := range resp.Topics[demoTopic+".dlq"] {
		if po.Error != nil {
			return -1
		}
		n += po.LastOffset
	}
	return n
}

// summary prints the table and checks the run's invariants; a broken invariant is exit status 2.
func (d *demo) summary(elapsed time.Duration, drained bool, dlqCount int64) error {
	produced, want := d.progress()
	c := d.snapshot()
	st := d.sim.Stats()
	create := st.APIs[im.APICreate]
	deadLettered := c.outcomes[metrics.OutcomeInvalid] + c.outcomes[metrics.OutcomeRejected] + c.outcomes[metrics.OutcomePartial] + c.outcomes[metrics.OutcomeExhausted]

	tw := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nSUMMARY\t\t")
	row := func(k string, v any, note string) { fmt.Fprintf(tw, "  %s\t%v\t%s\n", k, v, note) }
	row("events produced", produced, fmt.Sprintf("(%d valid, %d duplicates, %d invalid, %d over quota, %d swapped pairs)", want.Valid, want.Duplicates, want.Invalid, want.OverQuota, want.Swapped))
	row("applied", c.outcomes[metrics.OutcomeApplied], "")
	row("duplicates dropped", c.outcomes[metrics.OutcomeDuplicate], "")
	row("dead-lettered", deadLettered, fmt.Sprintf("(%d records on the DLQ topic)", dlqCount))
	keys := make([]string, 0, len(c.dlq))
	for k := range c.dlq {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		reason, code, _ := strings.Cut(k, " ")
		row("  reason="+reason, c.dlq[k], "code "+code)
	}
	r := buildReport(d.samples, d.flags.rateLimit, elapsed)
	r.latencies = d.events.latencies(d.calls.snapshot())
	d.report = r
	row("create calls", r.creates, fmt.Sprintf("(the simulator answered %d)", create.Total))
	row("start-up delay", fmtDuration(r.startup), "(start to the first create call: group join, assignment, the limiter's first second)")
	if r.backlogged {
		row("rate while backlogged", fmt.Sprintf("%.1f/s", r.rate), fmt.Sprintf("(%.0f calls in %.1fs, %.1f%% of the %.0f/s budget)",
			r.windowCalls, (r.windowEnd-r.windowStart).Seconds(), 100*r.rate/d.flags.rateLimit, d.flags.rateLimit))
		row("tail", fmtDuration(r.tail), "(backlog gone to the last record ended: retries and the last accounts' serial events)")
	} else {
		row("rate while backlogged", "-", "(no backlog: the producer, not the budget, set the pace)")
	}
	row("highest calls in any 1s window", create.MaxWindow, fmt.Sprintf("(limit %d)", demoRateLimit))
	row("rate-limited by the API (60007)", create.RateLimited, "")
	row("groups created", st.GroupsCreated, "")
	row("duplicate creates", st.DuplicateCreates, "(must be 0)")
	if n := len(r.latencies); n > 0 {
		row("end-to-end latency p50", fmtDuration(quantile(r.latencies, 0.5)), fmt.Sprintf("(occurred_at → created at the API, %d groups; includes the backlog's wait)", n))
		row("end-to-end latency p99", fmtDuration(quantile(r.latencies, 0.99)), fmt.Sprintf("(max %s)", fmtDuration(r.latencies[n-1])))
	}
	tw.Flush()

	var broken []string
	check := func(ok bool, format string, args ...any) {
		if !ok {
			broken = append(broken, fmt.Sprintf(format, args...))
		}
	}
	if !d.flags.forever {
		check(drained, "pipeline did not drain: %.0f of %d records ended", c.processed, produced)
		check(c.outcomes[metrics.OutcomeApplied] == float64(want.Valid), "applied %.0f, want %d", c.outcomes[metrics.OutcomeApplied], want.Valid)
		check(c.outcomes[metrics.OutcomeDuplicate] == float64(want.Duplicates), "duplicates %.0f, want %d", c.outcomes[metrics.OutcomeDuplicate], want.Duplicates)
		check(c.outcomes[metrics.OutcomeInvalid] == float64(want.Invalid), "invalid %.0f, want %d", c.outcomes[metrics.OutcomeInvalid], want.Invalid)
		check(c.dlq["rejected 51010"] == float64(want.OverQuota), "rejected with 51010: %.0f, want %d", c.dlq["rejected 51010"], want.OverQuota)
		check(deadLettered == float64(want.Invalid+want.OverQuota), "dead-lettered %.0f, want %d (the invalid and over-quota records, nothing else)", deadLettered, want.Invalid+want.OverQuota)
		check(st.GroupsCreated == want.Valid, "simulator holds %d created groups, want %d", st.GroupsCreated, want.Valid)
	}
	check(c.processed <= float64(produced), "%.0f records ended but only %d produced", c.processed, produced)
	check(float64(dlqCount) == deadLettered, "%d records on the DLQ topic, %.0f dead-lettered", dlqCount, deadLettered)
	check(st.DuplicateCreates == 0, "%d duplicate creates", st.DuplicateCreates)
	// The simulator counts arrivals in this same process: when the machine is starved (the race
	// detector, parallel tests) requests the limiter spaced out are read late and counted
	// together. The dispatcher's own tests hold the strict bound; here only an overshoot that
	// no scheduling stall explains — the signature of a limiter not doing its job — fails the run.
	check(create.MaxWindow <= demoWindowTolerance, "a one-second window saw %d create calls (limit %d)", create.MaxWindow, demoRateLimit)
	if create.MaxWindow > demoRateLimit && create.MaxWindow <= demoWindowTolerance {
		fmt.Fprintf(d.out, "\nnote: the simulator counted %d calls in one second: it shares this process's CPU, and late-read requests bunch up under load.\n", create.MaxWindow)
	}
	if len(broken) > 0 {
		fmt.Fprintln(d.out, "\nINVARIANTS BROKEN:")
		for _, b := range broken {
			fmt.Fprintln(d.out, "  -", b)
		}
		return &exitError{code: 2, err: fmt.Errorf("demo: %d invariants broken", len(broken))}
	}
	fmt.Fprintln(d.out, "\nOK: nothing lost — every record applied, dead-lettered or dropped as a duplicate; no group created twice; the rate limit held.")
	d.printNext()
	return nil
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

// printNext says what to look at after a run.
func (d *demo) printNext() {
	fmt.Fprintf(d.out, `
Next:
  chatgroupd demo --forever          keeps producing (150/s) until Ctrl-C; while it runs:
    curl -s http://%s/metrics | grep ^chatgroupd_
    chatgroupd dlq list --brokers %s --group chatgroupd-demo
  (this run's broker and metrics addresses; --metrics-addr 127.0.0.1:9090 fixes the latter)
`, d.metricsAddr, strings.Join(d.brokers, ","))
}

func fmtDuration(d time.Duration) string {
	if d >= time.Second {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Millisecond).String()
}
