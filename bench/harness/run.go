package harness

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
	"github.com/chatgroupd/chatgroupd/internal/loadgen"
)

// Config configures a Runner.
type Config struct {
	Broker   *Broker
	Subjects []Subject
	// OutDir receives one log file per subject run; default a fresh temporary directory.
	OutDir string
	// Seed makes the generated events the same for every subject and every run; default 1.
	Seed uint64
	// Progress receives one line per step; default io.Discard.
	Progress io.Writer
	// SampleEvery is how often the simulator and the subject are sampled; default 100ms.
	SampleEvery time.Duration
	// StopGrace is how long a subject may take to shut down after SIGTERM; default 25s.
	StopGrace time.Duration
	// Simulator, when set, is the command that serves the IM simulator in a process of its own
	// (["bin/chatgroupd", "imsim"]; see startSimProcess); empty runs it inside the harness. The
	// e2e scenario always runs it inside, where each success can be timed as it happens.
	Simulator []string
}

// Validate reports an unusable configuration.
func (c *Config) Validate() error {
	if c.Broker == nil || len(c.Broker.Addrs) == 0 {
		return errors.New("harness: no broker")
	}
	if len(c.Subjects) == 0 {
		return errors.New("harness: no subject")
	}
	for _, s := range c.Subjects {
		if s.Name == "" || len(s.Command) == 0 {
			return fmt.Errorf("harness: subject %q without a name or command", s.Name)
		}
	}
	return nil
}

func (c *Config) defaults() error {
	c.Seed = cmp.Or(c.Seed, 1)
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	c.SampleEvery = cmp.Or(c.SampleEvery, 100*time.Millisecond)
	c.StopGrace = cmp.Or(c.StopGrace, 25*time.Second)
	if c.OutDir == "" {
		d, err := os.MkdirTemp("", "chatgroupd-bench-")
		if err != nil {
			return fmt.Errorf("harness: %w", err)
		}
		c.OutDir = d
	}
	return os.MkdirAll(c.OutDir, 0o755)
}

// Runner runs scenarios against subjects one after another.
type Runner struct {
	cfg      Config
	secret   string
	sdkAppID int64

	mu        sync.Mutex
	flagCache map[string]bool // subject name and flag → the subject takes the flag
}

// NewRunner checks cfg and makes the simulator credentials of this session.
func NewRunner(cfg Config) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("harness: secret: %w", err)
	}
	return &Runner{cfg: cfg, secret: hex.EncodeToString(key), sdkAppID: 1400000000}, nil
}

// OutDir is where the subject logs go.
func (r *Runner) OutDir() string { return r.cfg.OutDir }

func (r *Runner) progress(format string, args ...any) {
	fmt.Fprintf(r.cfg.Progress, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

// Run runs sc against every subject in turn and returns one result per subject. Errors of one
// subject are in its Result; the error return is for failures of the harness itself.
func (r *Runner) Run(ctx context.Context, sc Scenario) ([]Result, error) {
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	var topic string
	var expect loadgen.Expect
	var mixed *mixedBacklog
	if sc.Kind == KindMixed {
		var err error
		if mixed, err = buildMixedBacklog(sc, r.cfg.Seed); err != nil {
			return nil, err
		}
		expect = mixed.expect
		topic = kafkatest.UniqueName("bench-" + sc.Name)
		if err := r.cfg.Broker.CreateTopic(ctx, topic, sc.Partitions); err != nil {
			return nil, fmt.Errorf("harness: %w", err)
		}
		defer r.cfg.Broker.DeleteTopics(context.Background(), topic) //nolint:errcheck // best effort
		if err := r.produceRecords(ctx, topic, mixed.recs); err != nil {
			return nil, err
		}
		r.progress("%s: produced %d events (create %d, update %d, delete %d) after %d folded into the simulator's state",
			sc.Name, len(mixed.recs), mixed.byAPI[im.APICreate], mixed.byAPI[im.APIUpdate], mixed.byAPI[im.APIDelete], sc.Prefill)
	} else if sc.Kind != KindE2E && sc.Kind != KindStuck && sc.Kind != KindFleet {
		// Produced once; every subject reads the same records with a group of its own.
		topic = kafkatest.UniqueName("bench-" + sc.Name)
		if err := r.cfg.Broker.CreateTopic(ctx, topic, sc.Partitions); err != nil {
			return nil, fmt.Errorf("harness: %w", err)
		}
		defer r.cfg.Broker.DeleteTopics(context.Background(), topic) //nolint:errcheck // best effort
		gen, err := r.generator(sc)
		if err != nil {
			return nil, err
		}
		start := time.Now()
		p := r.cfg.Broker.newProducer(topic, gen)
		_, err = p.produce(ctx, sc.Backlog, false)
		p.Close()
		if err != nil {
			return nil, fmt.Errorf("harness: %w", err)
		}
		expect = gen.Expect()
		r.progress("%s: produced %d events in %v", sc.Name, sc.Backlog, time.Since(start).Round(time.Millisecond))
	}
	var out []Result
	for _, subj := range r.cfg.Subjects {
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		if !sc.runsWith(subj) {
			r.progress("%s: %s skipped: it applies creates only, not lifecycle events", sc.Name, subj.Name)
			continue
		}
		r.progress("%s: %s starting", sc.Name, subj.Name)
		res := r.runOne(ctx, sc, subj, topic, expect, mixed)
		r.progress("%s: %s done: %s", sc.Name, subj.Name, res.Summary())
		out = append(out, res)
	}
	return out, nil
}

func (r *Runner) generator(sc Scenario) (*loadgen.Generator, error) {
	g, err := loadgen.New(loadgen.Config{Accounts: sc.Accounts, Seed: r.cfg.Seed, Prefix: "u"})
	if err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	return g, nil
}

// run is the state of one subject's run of one scenario.
type run struct {
	r       *Runner
	sc      Scenario
	subj    Subject
	flags   runFlags
	sim     *sim
	logPath string
	hist    []sample
	res     *Result
}

func (r *Runner) runOne(ctx context.Context, sc Scenario, subj Subject, topic string, expect loadgen.Expect, mixed *mixedBacklog) Result {
	res := Result{Scenario: sc.Name, Kind: sc.Kind, Subject: subj.Name, Limit: sc.RateLimit, Expected: expect.Valid}
	ctx, cancel := context.WithTimeout(ctx, sc.Timeout)
	defer cancel()
	name := sanitize(subj.Name)
	if topic == "" {
		topic = kafkatest.UniqueName("bench-" + sc.Name + "-" + name)
		if err := r.cfg.Broker.CreateTopic(ctx, topic, sc.Partitions); err != nil {
			res.Err = err.Error()
			return res
		}
		defer r.cfg.Broker.DeleteTopics(context.Background(), topic) //nolint:errcheck // best effort
	}
	dlq := topic + "." + name + ".dlq"
	if err := r.cfg.Broker.CreateTopic(ctx, dlq, 1); err != nil {
		res.Err = err.Error()
		return res
	}
	defer r.cfg.Broker.DeleteTopics(context.Background(), dlq) //nolint:errcheck // best effort
	if sc.Kind == KindStuck {
		// The retry lane of --retry-lane=on; the peers never read it.
		lane := topic + ".retry"
		if err := r.cfg.Broker.CreateTopic(ctx, lane, sc.Partitions); err != nil {
			res.Err = err.Error()
			return res
		}
		defer r.cfg.Broker.DeleteTopics(context.Background(), lane) //nolint:errcheck // best effort
	}
	var rec *applyRecorder
	if sc.Kind == KindE2E || sc.Kind == KindStuck {
		rec = newApplyRecorder()
	}
	var fault *accountFault
	if sc.Kind == KindStuck && sc.Fault {
		fault = &accountFault{prefix: stuckPrefix, code: im.CodeInternal}
	}
	simLimit := int(sc.RateLimit)
	if sc.RateLimit >= Unlimited {
		simLimit = 1 << 30
	}
	simCfg := imsim.Config{SDKAppID: r.sdkAppID, SecretKey: r.secret, RateLimit: simLimit,
		Faults: imsim.Faults{Latency: sc.Latency}, Seed: r.cfg.Seed, CallLog: sc.Kind == KindFleet || sc.Kind == KindMixed}
	var stateFile string
	if mixed != nil {
		// One copy per subject: the simulator writes its state back there at shutdown.
		stateFile = filepath.Join(r.cfg.OutDir, sc.Name+"-"+name+"-imsim-state.json")
		if err := os.WriteFile(stateFile, mixed.state, 0o600); err != nil {
			res.Err = fmt.Sprintf("simulator state: %v", err)
			return res
		}
	}
	var s *sim
	var err error
	if len(r.cfg.Simulator) > 0 && rec == nil {
		s, err = startSimProcess(r.cfg.Simulator, simCfg, filepath.Join(r.cfg.OutDir, sc.Name+"-"+name+"-imsim.log"), stateFile)
	} else {
		s, err = startSim(simCfg, rec, fault, stateFile)
	}
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer s.close()
	rn := &run{r: r, sc: sc, subj: subj, sim: s, res: &res,
		logPath: filepath.Join(r.cfg.OutDir, sc.Name+"-"+name+".log"),
		flags: runFlags{Brokers: r.cfg.Broker.Addrs, Topic: topic, Group: kafkatest.UniqueName("bench-" + name),
			DLQTopic: dlq, Endpoint: s.URL, SDKAppID: r.sdkAppID, RateLimit: sc.RateLimit}}
	res.Log = rn.logPath
	var merr error
	switch sc.Kind {
	case KindUtil:
		merr = rn.util(ctx)
	case KindCPU:
		merr = rn.cpu(ctx)
	case KindE2E:
		merr = rn.e2e(ctx, rec)
	case KindBacklog:
		merr = rn.backlog(ctx)
	case KindRestart:
		merr = rn.restart(ctx)
	case KindFleet:
		merr = rn.fleet(ctx)
	case KindStuck:
		merr = rn.stuck(ctx, rec, fault)
	case KindMixed:
		merr = rn.mixed(ctx, mixed.byAPI)
	}
	if merr != nil {
		res.Err = merr.Error()
	}
	last := s.create(context.Background())
	res.Calls, res.Accepted, res.RateLimited, res.MaxWindow = last.Total, last.Accepted, last.RateLimited, last.MaxWindow
	res.Created, res.DuplicateCreates = last.Created, last.DuplicateCreates
	res.OverLimitAt = overLimitTimes(rn.hist, rn.firstCall())
	return res
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, s)
}

// sample is one look at the simulator and the subject.
type sample struct {
	t                  time.Time
	accepted, created  int
	dlq                int64
	cpu                time.Duration
	rss, hwm           int64
	subjectAlive       bool
	duplicateCreates   int
	rateLimited, total int
}

// snap samples the simulator, the DLQ and (when p is running) the subject.
func (rn *run) snap(ctx context.Context, p *proc, withDLQ bool) sample {
	c := rn.sim.create(ctx)
	s := sample{t: time.Now(), accepted: c.Accepted, created: c.Created, duplicateCreates: c.DuplicateCreates,
		rateLimited: c.RateLimited, total: c.Total}
	if p != nil && p.alive() {
		s.subjectAlive = true
		if ls, err := readLive(p.pid()); err == nil {
			s.cpu, s.rss, s.hwm = ls.CPU, ls.RSS, ls.HWM
		}
	}
	if withDLQ {
		if n, err := rn.r.cfg.Broker.EndOffsets(ctx, rn.flags.DLQTopic, 1); err == nil {
			s.dlq = n
		} else if len(rn.hist) > 0 {
			s.dlq = rn.hist[len(rn.hist)-1].dlq
		}
	}
	rn.hist = append(rn.hist, s)
	if s.hwm > rn.res.PeakRSS {
		rn.res.PeakRSS = s.hwm
	}
	return s
}

// errExited means the subject died during the measurement.
var errExited = errors.New("subject exited early (see its log)")

// waitFirstCall waits for the subject's first accepted call and records how long it took to come.
func (rn *run) waitFirstCall(ctx context.Context, p *proc) (sample, error) {
	first, err := rn.poll(ctx, p, false, func(s sample) bool { return s.accepted > 0 })
	if err != nil {
		return first, fmt.Errorf("waiting for the first call: %w", err)
	}
	rn.res.FirstCall = first.t.Sub(p.started)
	return first, nil
}

// poll samples every SampleEvery until done returns true, the subject exits, or ctx ends.
func (rn *run) poll(ctx context.Context, p *proc, withDLQ bool, done func(sample) bool) (sample, error) {
	t := time.NewTicker(rn.r.cfg.SampleEvery)
	defer t.Stop()
	for {
		s := rn.snap(ctx, p, withDLQ)
		if done(s) {
			return s, nil
		}
		if p != nil && !s.subjectAlive {
			return s, errExited
		}
		select {
		case <-ctx.Done():
			return s, fmt.Errorf("time limit: %w", ctx.Err())
		case <-t.C:
		}
	}
}

func (rn *run) start() (*proc, error) {
	return startProc(rn.subj, rn.flags, rn.r.secret, rn.logPath)
}

// finish stops p and records its CPU and memory. Peak RSS is the process's VmHWM read just
// before SIGTERM, not rusage's ru_maxrss: Go starts children with vfork semantics, and Linux
// carries the parent's high-water mark across execve into the child's ru_maxrss, so that
// number would be this harness's (which holds the embedded Kafka) rather than the subject's.
func (rn *run) finish(p *proc) {
	if ls, err := readLive(p.pid()); err == nil && ls.HWM > rn.res.PeakRSS {
		rn.res.PeakRSS = ls.HWM
	}
	rn.res.CleanExit = p.stop(rn.r.cfg.StopGrace)
	rn.res.CPU += p.cpu()
}

// ended is how many events have ended: groups created plus records dead-lettered.
func ended(s sample) int { return s.created + int(s.dlq) }

func (rn *run) util(ctx context.Context) error {
	p, err := rn.start()
	if err != nil {
		return err
	}
	defer rn.finish(p)
	first, err := rn.waitFirstCall(ctx, p)
	if err != nil {
		return err
	}
	a, err := rn.poll(ctx, p, false, func(s sample) bool { return s.t.Sub(first.t) >= rn.sc.Warmup })
	if err != nil {
		return err
	}
	b, err := rn.poll(ctx, p, true, func(s sample) bool {
		return s.t.Sub(a.t) >= rn.sc.Window || ended(s) >= rn.res.Expected
	})
	if err != nil {
		return err
	}
	rn.window(a, b)
	if ended(b) >= rn.res.Expected {
		return errors.New("the backlog ran out before the window ended: raise Backlog")
	}
	return nil
}

// produceRecords writes recs to topic, keyed as the generator keyed them.
func (r *Runner) produceRecords(ctx context.Context, topic string, recs []loadgen.Record) error {
	start := time.Now()
	p := r.cfg.Broker.newProducer(topic, nil)
	defer p.Close()
	for b := range slices.Chunk(recs, 5000) {
		msgs := make([]kafka.Message, len(b))
		for i, rec := range b {
			msgs[i] = kafkaMessage(rec)
		}
		if err := p.w.WriteMessages(ctx, msgs...); err != nil {
			return fmt.Errorf("harness: produce: %w", err)
		}
	}
	r.progress("produced %d records to %s in %v", len(recs), topic, time.Since(start).Round(time.Millisecond))
	return nil
}

// window records the rates between two samples.
func (rn *run) window(a, b sample) {
	dt := b.t.Sub(a.t).Seconds()
	rn.res.Measured = b.t.Sub(a.t)
	rn.res.CallsPerSec = float64(b.accepted-a.accepted) / dt
	rn.res.CreatedPerSec = float64(b.created-a.created) / dt
	if rn.sc.RateLimit < Unlimited {
		rn.res.Utilisation = rn.res.CallsPerSec / rn.sc.RateLimit
	}
}

func (rn *run) cpu(ctx context.Context) error {
	p, err := rn.start()
	if err != nil {
		return err
	}
	defer rn.finish(p)
	done, err := rn.poll(ctx, p, true, func(s sample) bool { return ended(s) >= rn.res.Expected })
	rn.res.Ended = ended(done)
	rn.res.Elapsed = done.t.Sub(p.started)
	rn.res.Complete = err == nil
	if first := rn.firstCall(); !first.IsZero() {
		rn.res.FirstCall = first.Sub(p.started)
		if d := done.t.Sub(first).Seconds(); d > 0 {
			rn.res.CreatedPerSec = float64(done.created) / d
			rn.res.CallsPerSec = float64(done.accepted) / d
		}
	}
	return err
}

// firstCall is the time of the first sample that saw a call.
func (rn *run) firstCall() time.Time {
	for _, s := range rn.hist {
		if s.accepted > 0 {
			return s.t
		}
	}
	return time.Time{}
}

func (rn *run) backlog(ctx context.Context) error {
	p, err := rn.start()
	if err != nil {
		return err
	}
	defer rn.finish(p)
	first, err := rn.waitFirstCall(ctx, p)
	if err != nil {
		return err
	}
	b, err := rn.poll(ctx, p, false, func(s sample) bool { return s.t.Sub(first.t) >= rn.sc.Window })
	rn.window(first, b)
	return err
}

// e2eWarmup events are produced and applied before the measured ones, so the subject has joined
// the group and warmed its connections.
const e2eWarmup = 20

// warmUp starts the subject with a producer that sends one record at a time, produces the
// warm-up events and waits until they are created, so that what follows measures a running
// subject. done stops the subject and closes the producer.
func (rn *run) warmUp(ctx context.Context, gen *loadgen.Generator) (prod *producer, p *proc, done func(), err error) {
	prod = rn.r.cfg.Broker.newProducer(rn.flags.Topic, gen)
	prod.w.BatchSize = 1
	if p, err = rn.start(); err != nil {
		prod.Close()
		return nil, nil, nil, err
	}
	done = func() {
		rn.finish(p)
		prod.Close()
	}
	if _, err := prod.produce(ctx, e2eWarmup, false); err != nil {
		done()
		return nil, nil, nil, err
	}
	if _, err := rn.poll(ctx, p, false, func(s sample) bool { return s.created >= e2eWarmup }); err != nil {
		done()
		return nil, nil, nil, fmt.Errorf("warm-up: %w", err)
	}
	return prod, p, done, nil
}

func (rn *run) e2e(ctx context.Context, rec *applyRecorder) error {
	gen, err := rn.r.generator(rn.sc)
	if err != nil {
		return err
	}
	prod, p, stop, err := rn.warmUp(ctx, gen)
	if err != nil {
		return err
	}
	defer stop()
	total := int(rn.sc.LiveRate * rn.sc.Window.Seconds())
	tick := time.NewTicker(time.Duration(float64(time.Second) / rn.sc.LiveRate))
	defer tick.Stop()
	for i := 0; i < total; i++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		r := gen.Next()
		ev, err := event.Parse(r.Value)
		if err != nil {
			return fmt.Errorf("generated event: %w", err)
		}
		rec.expect(ev.FromAccount, ev.GroupName, ev.OccurredAt)
		if err := prod.w.WriteMessages(ctx, kafkaMessage(r)); err != nil {
			return fmt.Errorf("produce: %w", err)
		}
	}
	rn.res.Expected = gen.Expect().Valid
	produced := time.Now()
	// Done when every live event was applied; or, if some were dead-lettered instead (ended
	// counts those too), once the count of ended events is reached and a grace period passed.
	done, err := rn.poll(ctx, p, true, func(s sample) bool {
		_, _, n := rec.percentiles()
		return n >= total || ended(s) >= rn.res.Expected && s.t.Sub(produced) >= 5*time.Second
	})
	rn.res.Ended = ended(done)
	rn.res.Complete = err == nil
	rn.res.E2EP50, rn.res.E2EP99, rn.res.E2ESamples = rec.percentiles()
	return err
}

// restart measures how long after a SIGKILL at full rate the rate is back, killing the subject
// once it sustained (nearly) the limit, or its own steady rate, for a few seconds.
func (rn *run) restart(ctx context.Context) error {
	p, err := rn.start()
	if err != nil {
		return err
	}
	first, err := rn.waitFirstCall(ctx, p)
	if err != nil {
		rn.finish(p)
		return err
	}
	// Steady state: the rate over 5-8 s after the first call.
	if _, err := rn.poll(ctx, p, false, func(s sample) bool { return s.t.Sub(first.t) >= 8*time.Second }); err != nil {
		rn.finish(p)
		return err
	}
	rn.res.CallsPerSec = trailingRate(rn.hist, len(rn.hist)-1, 3*time.Second, first.t)
	target := 0.95 * min(rn.sc.RateLimit, rn.res.CallsPerSec)
	rn.res.Utilisation = rn.res.CallsPerSec / rn.sc.RateLimit
	killedAt := time.Now()
	p.kill()
	before := rn.snap(ctx, nil, false)
	p2, err := startProc(rn.subj, rn.flags, rn.r.secret, rn.logPath)
	if err != nil {
		return err
	}
	defer rn.finish(p2)
	from := len(rn.hist)
	again, err := rn.poll(ctx, p2, false, func(s sample) bool { return s.accepted > before.accepted })
	if err != nil {
		return fmt.Errorf("waiting for the first call after restart: %w", err)
	}
	rn.res.RestartFirstCall = again.t.Sub(killedAt)
	full, err := rn.poll(ctx, p2, false, func(s sample) bool {
		return trailingRate(rn.hist, len(rn.hist)-1, time.Second, rn.hist[from].t) >= target
	})
	if err != nil {
		return fmt.Errorf("waiting for full rate after restart: %w", err)
	}
	rn.res.RestartToFull = full.t.Sub(killedAt)
	// Let re-delivered events settle, then count what was created twice.
	settle, _ := rn.poll(ctx, p2, false, func(s sample) bool { return s.t.Sub(full.t) >= 3*time.Second })
	rn.res.RestartDuplicates = settle.duplicateCreates - before.duplicateCreates
	return nil
}

// overLimitTimes lists, in seconds since the first call, the samples in which the simulator
// answered calls with 60007 (over its limit); at most 20, to see whether they cluster at start-up.
func overLimitTimes(hist []sample, first time.Time) []float64 {
	var out []float64
	for i := 1; i < len(hist) && len(out) < 20; i++ {
		if hist[i].rateLimited > hist[i-1].rateLimited {
			out = append(out, math.Round(hist[i].t.Sub(first).Seconds()*10)/10)
		}
	}
	return out
}

// trailingRate is the accepted calls/s over the span ending at hist[i] and reaching back at
// least span (but not before notBefore); 0 until such a span exists.
func trailingRate(hist []sample, i int, span time.Duration, notBefore time.Time) float64 {
	end := hist[i]
	for j := i - 1; j >= 0; j-- {
		if hist[j].t.Before(notBefore) {
			return 0
		}
		if d := end.t.Sub(hist[j].t); d >= span {
			return float64(end.accepted-hist[j].accepted) / d.Seconds()
		}
	}
	return 0
}
