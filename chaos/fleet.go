package chaos

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/chatgroupd/chatgroupd/dlq"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
)

// Simulator credentials of a run (a throwaway key, never a real one).
const (
	SDKAppID  = 1400054321
	SecretKey = "9a0c1e7b2f6d4c38a5e1b7d09f3c6a2e4b8d1f7a3c5e9b0d2f4a6c8e1b3d5f70"
)

// Config is one run: a schedule, the binary to run and the broker to run it on.
type Config struct {
	Schedule *Schedule
	// Binary is a built chatgroupd.
	Binary  string
	Brokers []string
	// Fake is the embedded broker when Brokers are its; it makes dlq-down steps possible.
	Fake *kfake.Cluster
	// Dir receives the processes' logs.
	Dir string
	// RateLimit is the fleet's create budget and the simulator's limit; default 200.
	RateLimit  int
	Partitions int // default 8
	// RebalanceTimeout and ShutdownTimeout of the replicas; default 3× and 2× the session.
	RebalanceTimeout time.Duration
	ShutdownTimeout  time.Duration
	ReorderWindow    time.Duration // default 1s, the replicas' default
	// DrainTimeout bounds the wait, after the schedule, for the group to commit to the log end.
	DrainTimeout time.Duration // default 3m
	// Env is added to the replicas' environment (CHATGROUPD_TEST_BREAK=…).
	Env []string
	// LogLevel of the replicas; default info. At debug each replica logs every request it
	// writes to the API ("request written"), which JoinWrites joins with the call log.
	LogLevel string
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
	// StateOf are accounts whose groups the simulator holds at the end are read into
	// Result.State (the lifecycle order test compares them with its model).
	StateOf []string
	// KeepVanished turns evictVanished off: on the embedded broker, members of replicas killed
	// in a join stay until the leader's progress watch rebalances them away (or for good).
	KeepVanished bool
}

// Validate reports a missing binary, broker list or schedule.
func (c Config) Validate() error {
	switch {
	case c.Schedule == nil:
		return errors.New("chaos: no schedule")
	case c.Binary == "":
		return errors.New("chaos: no chatgroupd binary")
	case len(c.Brokers) == 0:
		return errors.New("chaos: no brokers")
	case c.Dir == "":
		return errors.New("chaos: no log directory")
	case c.Schedule.Count(KindDLQDown) > 0 && c.Fake == nil:
		return errors.New("chaos: dlq-down steps need the embedded broker")
	case c.Schedule.triggers(OnCalls) && c.LogLevel != "debug":
		return fmt.Errorf("chaos: steps triggered on %q need the replicas' log level at debug (their writes are logged there only), not %q", OnCalls, c.LogLevel)
	}
	return nil
}

func (c Config) withDefaults() Config {
	s := c.Schedule.SessionTimeout
	c.RateLimit = cmp.Or(c.RateLimit, 200)
	c.Partitions = cmp.Or(c.Partitions, 8)
	c.RebalanceTimeout = cmp.Or(c.RebalanceTimeout, 3*s)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, 2*s)
	c.ReorderWindow = cmp.Or(c.ReorderWindow, time.Second)
	c.DrainTimeout = cmp.Or(c.DrainTimeout, 3*time.Minute)
	c.LogLevel = cmp.Or(c.LogLevel, "info")
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return c
}

// Result is the outcome of a run.
type Result struct {
	Report Report
	// UncleanExits are replicas that did not exit 0 after a SIGTERM.
	UncleanExits []string
	// Drained is false when the group never committed to the log end within DrainTimeout.
	Drained bool
	// JoinStalled is set on the embedded broker when the run did not drain because, after the
	// schedule, no member was ever assigned a partition again while joins kept timing out: the
	// embedded broker restarts its join deadline whenever a member joins or leaves, so members
	// that rejoin faster than that deadline keep a rebalance from ever completing (the same
	// seeds drain on Apache Kafka). Such a run says nothing about chatgroupd.
	JoinStalled bool
	// ExpiredMembers counts the member ids of exited replicas the harness removed from the
	// embedded broker's group a session after the process ended (see evictVanished).
	ExpiredMembers int
	Elapsed        time.Duration
	// Counts of what the schedule did.
	Stops, Kills, Pauses int
	// Triggered counts the stops, kills and pauses with Step.On that met their log event;
	// TriggerMissed those that acted at their deadline instead.
	Triggered, TriggerMissed int
	// Parks and Unparks count the replicas' "account parked" and "account unparked" log lines;
	// LaneRecords the retry lane's records (its markers left out), LaneMarkers its markers
	// (Schedule.RetryLane only).
	Parks, Unparks, LaneRecords, LaneMarkers int
	// Successions counts the replicas' "succeeding the previous member" log lines: fleet-budget
	// members that counted a dead predecessor's calls and ended its entry (Options.Membership
	// static).
	Successions int
	// State is the simulator's groups at the end of the run of each account in Config.StateOf.
	State map[string][]imsim.Group
}

// Err is the run's failure: a violated invariant or an unclean graceful exit.
func (r *Result) Err() error {
	var errs []error
	if err := r.Report.Err(); err != nil {
		errs = append(errs, err)
	}
	if len(r.UncleanExits) > 0 {
		errs = append(errs, fmt.Errorf("unclean exits after SIGTERM: %s", strings.Join(r.UncleanExits, "; ")))
	}
	return errors.Join(errs...)
}

// run is the state of one Run.
type run struct {
	cfg      Config
	topic    string
	dlqTopic string
	group    string
	sim      *proc
	simURL   string
	slots    []*proc
	all      []*proc
	// aliveAtEnd are the replicas still running when the drain ended (before stopAll).
	aliveAtEnd map[string]bool
	// expired are the exited replicas whose members evictVanished has dealt with.
	expired map[string]bool
	// expiredLeaves counts the member ids evictVanished sent a LeaveGroup for.
	expiredLeaves int
	gen           []int
	dlqDown       atomic.Bool
	slow          map[string]bool
	failed        map[string]bool
	// armed are the slots whose triggered step (Step.On) still waits for its log event: closed
	// once it acted. Every later step of the slot waits for it.
	armed                    map[int]chan struct{}
	triggered, triggerMissed atomic.Int32
	writer                   *kafka.Writer
	records                  []Record
	unclean                  []string
	uncleanMu                sync.Mutex
}

// Run starts the simulator and the fleet, plays the schedule, waits for the group to catch up,
// stops everything and checks the invariants. An error means the run itself could not be
// carried out; violations are in the Result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	sched := cfg.Schedule
	name := fmt.Sprintf("chaos-%d-%d", sched.Seed, time.Now().UnixNano()%1e9)
	r := &run{cfg: cfg, topic: name, dlqTopic: name + ".dlq", group: name, slow: map[string]bool{}, failed: map[string]bool{}, armed: map[int]chan struct{}{},
		slots: make([]*proc, sched.Replicas), gen: make([]int, sched.Replicas)}
	start := time.Now()
	defer r.cleanup()
	topics := []string{r.topic, r.dlqTopic}
	if sched.RetryLane {
		topics = append(topics, r.laneTopic())
	}
	for _, t := range topics {
		if err := kafkatest.CreateTopic(ctx, cfg.Brokers, t, cfg.Partitions); err != nil {
			return nil, fmt.Errorf("chaos: create topic %s: %w", t, err)
		}
	}
	if cfg.Fake != nil {
		cfg.Fake.ControlKey(int16(kmsg.Produce), r.refuseDLQ)
	}
	r.writer = &kafka.Writer{Addr: kafka.TCP(cfg.Brokers...), Topic: r.topic, Balancer: &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: 2 * time.Millisecond, BatchSize: 1000}
	defer r.writer.Close()
	if err := r.startSim(ctx); err != nil {
		return nil, err
	}
	for i := range r.slots {
		if err := r.start(ctx, i); err != nil {
			return nil, err
		}
	}
	if err := r.waitReady(ctx, time.Minute); err != nil {
		return nil, err
	}
	res := &Result{}
	t0 := time.Now()
	cfg.Logf("seed %d: fleet of %d ready after %v; playing %d steps", sched.Seed, sched.Replicas, t0.Sub(start).Round(time.Millisecond), len(sched.Steps))
	for _, st := range sched.Steps {
		if err := sleepCtx(ctx, time.Until(t0.Add(st.At))); err != nil {
			return nil, err
		}
		r.evictVanished(ctx)
		if err := r.do(ctx, st); err != nil {
			return nil, fmt.Errorf("chaos: step %s at %v: %w", st.Kind, st.At, err)
		}
		switch st.Kind {
		case KindStop:
			res.Stops++
		case KindKill:
			res.Kills++
		case KindPause:
			res.Pauses++
		}
	}
	if err := r.settle(ctx); err != nil {
		return nil, err
	}
	cfg.Logf("seed %d: schedule played in %v; waiting for the group to reach the log end", sched.Seed, time.Since(t0).Round(time.Millisecond))
	played := time.Now()
	res.Drained = r.waitDrained(ctx, cfg.DrainTimeout)
	if !res.Drained && cfg.Fake != nil {
		res.JoinStalled = joinStalled(cfg.Dir, played)
	}
	r.aliveAtEnd = map[string]bool{}
	for _, p := range r.slots {
		if p != nil && !p.exited() {
			r.aliveAtEnd[p.name] = true
		}
	}
	r.stopAll()
	ev, err := r.evidence(ctx)
	if err != nil {
		return nil, err
	}
	res.Report = Check(ev)
	res.Triggered, res.TriggerMissed = int(r.triggered.Load()), int(r.triggerMissed.Load())
	res.Parks, res.Unparks = countLogs(cfg.Dir, logParked), countLogs(cfg.Dir, logUnparked)
	res.Successions = countLogs(cfg.Dir, logSucceeding)
	if sched.RetryLane {
		if res.LaneRecords, res.LaneMarkers, err = r.laneCounts(ctx); err != nil {
			return nil, err
		}
	}
	if res.State, err = r.state(ctx); err != nil {
		return nil, err
	}
	// The call log stays with the process logs, for whoever reads a failure.
	if b, err := json.Marshal(ev.Calls); err == nil {
		_ = os.WriteFile(filepath.Join(cfg.Dir, "calls.json"), b, 0o600)
	}
	res.ExpiredMembers = r.expiredLeaves
	r.uncleanMu.Lock()
	res.UncleanExits = r.unclean
	r.uncleanMu.Unlock()
	res.Elapsed = time.Since(start)
	return res, nil
}

// refuseDLQ answers produce requests to the DLQ topic with NOT_ENOUGH_REPLICAS while the DLQ is
// down, and lets everything else through.
func (r *run) refuseDLQ(req kmsg.Request) (kmsg.Response, error, bool) {
	r.cfg.Fake.KeepControl()
	pr := req.(*kmsg.ProduceRequest)
	if !r.dlqDown.Load() || len(pr.Topics) == 0 || pr.Topics[0].Topic != r.dlqTopic {
		return nil, nil, false
	}
	resp := pr.ResponseKind().(*kmsg.ProduceResponse)
	for _, rt := range pr.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		for _, rp := range rt.Partitions {
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.ErrorCode = 19 // NOT_ENOUGH_REPLICAS: retriable, as a broker short of in-sync replicas answers
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp, nil, true
}

// baseFaults is the simulator's behaviour outside storms: a little latency, so calls overlap.
func baseFaults() imsim.Faults {
	return imsim.Faults{Latency: 5 * time.Millisecond, Jitter: 20 * time.Millisecond}
}

// stormFaults fail about a third of the calls: 502s, internal errors, rate-limit answers, hangs
// and creates applied and then answered with a timeout.
func stormFaults() imsim.Faults {
	return imsim.Faults{Latency: 5 * time.Millisecond, Jitter: 40 * time.Millisecond,
		HTTP502Rate: 0.08, HangRate: 0.02, ApplyThenFailRate: 0.1,
		ErrorRates: map[int]float64{im.CodeInternal: 0.08, im.CodeFrequency: 0.03}}
}

func (r *run) do(ctx context.Context, st Step) error {
	switch st.Kind {
	case KindStart, KindStop, KindKill, KindPause, KindResume:
		for _, i := range st.slots() {
			r.waitArmed(i)
		}
	}
	if len(st.Slots) > 0 && (st.Kind == KindStart || st.Kind == KindResume) {
		return r.bringBack(ctx, st)
	}
	if sig, ok := signalOf(st.Kind); ok {
		if st.On != "" {
			return r.trigger(st, sig)
		}
		return r.signal(st.Slot, sig)
	}
	switch st.Kind {
	case KindBurst:
		return r.produce(ctx, st.Records)
	case KindStart:
		return r.start(ctx, st.Slot)
	case KindResume:
		return r.signal(st.Slot, syscall.SIGCONT)
	case KindSlow:
		r.slow[st.Account] = true
		return r.simPost(ctx, "/admin/account-latency", imsim.AccountLatency{Account: st.Account, Latency: st.Latency.String()})
	case KindSlowEnd:
		delete(r.slow, st.Account)
		return r.simPost(ctx, "/admin/account-latency", imsim.AccountLatency{Account: st.Account})
	case KindFail:
		r.failed[st.Account] = true
		return r.simPost(ctx, "/admin/account-fault", imsim.AccountFault{Account: st.Account, Code: im.CodeInternal, Duration: st.For.String()})
	case KindFailEnd:
		delete(r.failed, st.Account)
		return r.simPost(ctx, "/admin/account-fault", imsim.AccountFault{Account: st.Account, Duration: "0s"})
	case KindStorm:
		return r.simPost(ctx, "/admin/faults", stormFaults())
	case KindStormEnd:
		return r.simPost(ctx, "/admin/faults", baseFaults())
	case KindDLQDown:
		r.dlqDown.Store(true)
	case KindDLQUp:
		r.dlqDown.Store(false)
	}
	return nil
}

// signalOf is the signal a stop, kill or pause step sends its replica, at once or, with Step.On,
// at the log event it waits for (trigger).
func signalOf(k Kind) (syscall.Signal, bool) {
	switch k {
	case KindStop:
		return syscall.SIGTERM, true
	case KindKill:
		return syscall.SIGKILL, true
	case KindPause:
		return syscall.SIGSTOP, true
	}
	return 0, false
}

// settle ends every fault still in force and brings every replica up, so the group can finish.
func (r *run) settle(ctx context.Context) error {
	r.dlqDown.Store(false)
	for slot := range r.armed {
		r.waitArmed(slot)
	}
	for acct := range r.failed {
		if err := r.simPost(ctx, "/admin/account-fault", imsim.AccountFault{Account: acct, Duration: "0s"}); err != nil {
			return err
		}
	}
	for acct := range r.slow {
		if err := r.simPost(ctx, "/admin/account-latency", imsim.AccountLatency{Account: acct}); err != nil {
			return err
		}
	}
	if err := r.simPost(ctx, "/admin/faults", baseFaults()); err != nil {
		return err
	}
	for i, p := range r.slots {
		if p.exited() {
			if err := r.start(ctx, i); err != nil {
				return err
			}
			continue
		}
		_ = p.cmd.Process.Signal(syscall.SIGCONT) // harmless when not stopped
	}
	return nil
}

func (r *run) produce(ctx context.Context, recs []Record) error {
	msgs := make([]kafka.Message, len(recs))
	for i, rec := range recs {
		msgs[i] = kafka.Message{Key: rec.Key, Value: rec.Value}
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := r.writer.WriteMessages(wctx, msgs...); err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	now := time.Now()
	for _, rec := range recs {
		rec.ProducedAt = now
		r.records = append(r.records, rec)
	}
	return nil
}

// proc is a child process with its log.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	addr    string // metrics address of a replica
	termed  atomic.Bool
	killed  atomic.Bool
	done    chan struct{}
	err     error     // valid once done is closed
	endedAt time.Time // valid once done is closed
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (r *run) spawn(name string, args []string, env []string, stdout io.Writer) (*proc, error) {
	p := &proc{name: name, logPath: filepath.Join(r.cfg.Dir, name+".log"), done: make(chan struct{})}
	logf, err := os.Create(p.logPath)
	if err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	p.cmd = exec.Command(r.cfg.Binary, args...)
	p.cmd.Env = env
	p.cmd.Stderr = logf
	p.cmd.Stdout = logf
	if stdout != nil {
		p.cmd.Stdout = stdout
	}
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("chaos: start %s: %w", name, err)
	}
	r.all = append(r.all, p)
	go func() {
		p.err = p.cmd.Wait()
		p.endedAt = time.Now()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// baseEnv is this process's environment without CHATGROUPD_* variables (they would act as the
// children's flag defaults), plus the simulator's key.
func baseEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CHATGROUPD_") {
			out = append(out, kv)
		}
	}
	return append(out, "CHATGROUPD_SECRET_KEY="+SecretKey)
}

func (r *run) startSim(ctx context.Context) error {
	var ghosts []string
	for i := range ghostAccounts {
		ghosts = append(ghosts, fmt.Sprintf("%s%d", ghostPrefix, i))
	}
	pr, pw := io.Pipe()
	p, err := r.spawn("imsim", []string{"imsim", "--addr", "127.0.0.1:0", "--sdkappid", strconv.Itoa(SDKAppID),
		"--rate-limit", strconv.Itoa(r.cfg.RateLimit), "--max-groups", "1000000", "--max-contacts", "1073741824",
		"--not-imported", strings.Join(ghosts, ","), "--seed", strconv.FormatUint(r.cfg.Schedule.Seed, 10),
		"--latency", baseFaults().Latency.String(), "--jitter", baseFaults().Jitter.String(),
		"--max-hang", (r.cfg.Schedule.SessionTimeout * 3 / 2).String(), "--call-log", "--admin-api", "--log-level", "warn"}, baseEnv(), pw)
	if err != nil {
		return err
	}
	r.sim = p
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "imsim listening on "); ok {
				found <- u
			}
		}
		close(found)
	}()
	go func() {
		<-p.done
		pw.Close()
	}()
	select {
	case u, ok := <-found:
		if !ok {
			return fmt.Errorf("chaos: imsim exited before listening: %v\n%s", p.err, tail(p.logPath, 20))
		}
		r.simURL = u
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("chaos: imsim not listening after 30s\n%s", tail(p.logPath, 20))
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *run) simPost(ctx context.Context, path string, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.simURL+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("imsim %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("imsim %s: %s: %s", path, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// start starts replica slot i, first waiting for its previous process to be gone.
func (r *run) start(ctx context.Context, i int) error {
	if old := r.slots[i]; old != nil && !old.exited() {
		select {
		case <-old.done:
		case <-time.After(r.cfg.ShutdownTimeout + 15*time.Second):
			r.cfg.Logf("replica %s still running long after its stop: killing it", old.name)
			_ = old.cmd.Process.Kill()
			<-old.done
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	r.gen[i]++
	s := r.cfg.Schedule
	args := []string{"run", "--brokers", strings.Join(r.cfg.Brokers, ","),
		"--topic", r.topic, "--group", r.group, "--dlq-topic", r.dlqTopic,
		"--im-endpoint", r.simURL, "--sdkappid", strconv.Itoa(SDKAppID), "--rate-limit", strconv.Itoa(r.cfg.RateLimit),
		"--metrics-addr", addr, "--log-format", "json", "--log-level", r.cfg.LogLevel,
		"--session-timeout", s.SessionTimeout.String(), "--rebalance-timeout", r.cfg.RebalanceTimeout.String(),
		"--shutdown-timeout", r.cfg.ShutdownTimeout.String(), "--reorder-window", r.cfg.ReorderWindow.String(),
		// Longer than the slowest account's calls and the simulator's hangs, so those calls end
		// at the simulator, not by the client giving up.
		"--im-timeout", (4 * s.SessionTimeout).String(),
		"--fleet-budget", cmp.Or(s.FleetBudget, BudgetStatic),
	}
	if s.RetryLane {
		args = append(args, "--retry-lane", "on", "--lane-topic", r.laneTopic(), "--account-stall-limit", s.StallLimit.String())
	}
	if s.Membership == MembershipStatic {
		args = append(args, "--instance-id", instanceID(i), "--instance-lock-dir", filepath.Join(r.cfg.Dir, "locks"))
	}
	p, err := r.spawn(fmt.Sprintf("replica-%d.%d", i, r.gen[i]), args, append(baseEnv(), r.cfg.Env...), nil)
	if err != nil {
		return err
	}
	p.addr = addr
	r.slots[i] = p
	return nil
}

func (r *run) signal(i int, sig syscall.Signal) error {
	p := r.slots[i]
	if p == nil || p.exited() {
		r.cfg.Logf("%v: replica %d already gone", sig, i)
		return nil
	}
	return r.signalProc(p, sig)
}

// signalProc sends sig to p, noting a SIGTERM (its exit must be clean) or SIGKILL.
func (r *run) signalProc(p *proc, sig syscall.Signal) error {
	switch sig {
	case syscall.SIGTERM:
		p.termed.Store(true)
		go r.watchExit(p)
	case syscall.SIGKILL:
		p.killed.Store(true)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %v to %s: %w", sig, p.name, err)
	}
	return nil
}

// watchExit records a replica that does not exit 0 after SIGTERM.
func (r *run) watchExit(p *proc) {
	<-p.done
	if p.err != nil {
		r.uncleanMu.Lock()
		r.unclean = append(r.unclean, fmt.Sprintf("%s: %v", p.name, p.err))
		r.uncleanMu.Unlock()
	}
}

func (r *run) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for _, p := range r.slots {
		for !ready(ctx, p.addr) {
			if p.exited() {
				return fmt.Errorf("chaos: %s exited before ready: %v\n%s", p.name, p.err, tail(p.logPath, 20))
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("chaos: %s not ready after %v\n%s", p.name, limit, tail(p.logPath, 20))
			}
			if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
				return err
			}
		}
	}
	return nil
}

func ready(ctx context.Context, addr string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// waitDrained polls the group's lag until it is 0 twice in a row.
func (r *run) waitDrained(ctx context.Context, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	zero := 0
	for time.Now().Before(deadline) {
		r.evictVanished(ctx)
		if lag, err := r.drainLag(ctx); err == nil && lag == 0 {
			if zero++; zero == 2 {
				return true
			}
		} else {
			zero = 0
		}
		if sleepCtx(ctx, time.Second) != nil {
			return false
		}
	}
	return false
}

// drainLag is the group's lag over the event topic and, with the retry lane, over the lane too:
// events forwarded to the lane are committed at main before the lane applies them.
func (r *run) drainLag(ctx context.Context) (int64, error) {
	lag, _, err := r.lag(ctx)
	if err != nil || !r.cfg.Schedule.RetryLane {
		return lag, err
	}
	lane, _, err := r.lagOf(ctx, r.laneTopic())
	return lag + lane, err
}

// stopAll sends SIGTERM to every replica (each must exit 0) and waits; stragglers are killed.
func (r *run) stopAll() {
	for i, p := range r.slots {
		if p != nil && !p.exited() {
			_ = r.signal(i, syscall.SIGTERM)
		}
	}
	limit := time.After(r.cfg.ShutdownTimeout + 20*time.Second)
	for _, p := range r.slots {
		if p == nil {
			continue
		}
		select {
		case <-p.done:
		case <-limit:
			r.cfg.Logf("%s: no exit after SIGTERM: killing it", p.name)
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	// watchExit goroutines record their verdicts after done closes: let them.
	time.Sleep(50 * time.Millisecond)
	for _, p := range r.all {
		if p != r.sim && p.exited() && !p.termed.Load() && !p.killed.Load() {
			r.uncleanMu.Lock()
			r.unclean = append(r.unclean, fmt.Sprintf("%s exited by itself: %v", p.name, p.err))
			r.uncleanMu.Unlock()
		}
	}
}

// cleanup kills whatever still runs.
func (r *run) cleanup() {
	r.dlqDown.Store(false)
	for _, p := range r.all {
		if !p.exited() {
			_ = p.cmd.Process.Signal(syscall.SIGCONT)
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// evidence reads the call log, the topics and the group's offsets.
func (r *run) evidence(ctx context.Context) (Evidence, error) {
	ev := Evidence{Topic: r.topic, Budget: r.cfg.RateLimit, ReorderWindow: r.cfg.ReorderWindow, Exempt: []string{im.DefaultAdmin}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.simURL+"/admin/calls", nil)
	if err != nil {
		return ev, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ev, fmt.Errorf("chaos: call log: %w", err)
	}
	err = json.NewDecoder(resp.Body).Decode(&ev.Calls)
	resp.Body.Close()
	if err != nil {
		return ev, fmt.Errorf("chaos: call log: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := r.locate(rctx); err != nil {
		return ev, err
	}
	ev.Records = r.records
	msgs, err := kafkatest.ReadAll(rctx, r.cfg.Brokers, r.dlqTopic)
	if err != nil {
		return ev, fmt.Errorf("chaos: read %s: %w", r.dlqTopic, err)
	}
	for _, m := range msgs {
		e, err := dlq.Parse(m)
		if err != nil {
			return ev, fmt.Errorf("chaos: dlq record %d/%d: %w", m.Partition, m.Offset, err)
		}
		ev.Letters = append(ev.Letters, e)
	}
	if ev.Lag, ev.Partitions, err = r.lag(rctx); err != nil {
		return ev, fmt.Errorf("chaos: lag: %w", err)
	}
	owners, last := lastOwners(r.cfg.Dir)
	for i := range ev.Partitions {
		pe := &ev.Partitions[i]
		o := owners[pe.Partition]
		pe.Owner, pe.Member, pe.Generation, pe.LastGeneration = o.replica, o.member, o.generation, last
		pe.OwnerAlive = o.replica != "" && r.aliveAtEnd[o.replica]
	}
	return ev, nil
}

// state reads the groups of Config.StateOf from the simulator.
func (r *run) state(ctx context.Context) (map[string][]imsim.Group, error) {
	out := make(map[string][]imsim.Group, len(r.cfg.StateOf))
	for _, acct := range r.cfg.StateOf {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.simURL+"/admin/state?account="+url.QueryEscape(acct), nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("chaos: state of %s: %w", acct, err)
		}
		var st imsim.AccountState
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("chaos: state of %s: %w", acct, err)
		}
		out[acct] = st.Groups
	}
	return out, nil
}

// locate reads the event topic back and fills each record's partition and offset; identical
// values (a duplicate and its original) are matched in offset order.
func (r *run) locate(ctx context.Context) error {
	msgs, err := kafkatest.ReadAll(ctx, r.cfg.Brokers, r.topic)
	if err != nil {
		return fmt.Errorf("chaos: read %s: %w", r.topic, err)
	}
	if len(msgs) != len(r.records) {
		return fmt.Errorf("chaos: topic %s has %d records, %d were produced", r.topic, len(msgs), len(r.records))
	}
	sort.SliceStable(msgs, func(i, j int) bool {
		if msgs[i].Partition != msgs[j].Partition {
			return msgs[i].Partition < msgs[j].Partition
		}
		return msgs[i].Offset < msgs[j].Offset
	})
	byValue := map[string][]int{}
	for i, rec := range r.records {
		byValue[string(rec.Value)] = append(byValue[string(rec.Value)], i)
	}
	for _, m := range msgs {
		q := byValue[string(m.Value)]
		if len(q) == 0 {
			return fmt.Errorf("chaos: record %d/%d matches nothing produced", m.Partition, m.Offset)
		}
		r.records[q[0]].Partition, r.records[q[0]].Offset = m.Partition, m.Offset
		byValue[string(m.Value)] = q[1:]
	}
	return nil
}

// lag is the group's committed-to-end distance over the event topic, and each partition's
// committed offset and end.
func (r *run) lag(ctx context.Context) (int64, []PartitionEnd, error) {
	return r.lagOf(ctx, r.topic)
}

// lagOf is lag over topic (the event topic or the lane).
func (r *run) lagOf(ctx context.Context, topic string) (int64, []PartitionEnd, error) {
	cl := &kafka.Client{Addr: kafka.TCP(r.cfg.Brokers...), Timeout: 10 * time.Second}
	var reqs []kafka.OffsetRequest
	ids := make([]int, r.cfg.Partitions)
	for p := range ids {
		ids[p] = p
		reqs = append(reqs, kafka.LastOffsetOf(p))
	}
	lo, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return 0, nil, err
	}
	of, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: r.group, Topics: map[string][]int{topic: ids}})
	if err != nil {
		return 0, nil, err
	}
	if of.Error != nil {
		return 0, nil, of.Error
	}
	committed := map[int]int64{}
	var parts []PartitionEnd
	for _, p := range of.Topics[topic] {
		if p.Error != nil {
			return 0, nil, p.Error
		}
		committed[p.Partition] = max(p.CommittedOffset, 0)
		parts = append(parts, PartitionEnd{Partition: p.Partition, Committed: p.CommittedOffset})
	}
	ends := map[int]int64{}
	var sum int64
	for _, p := range lo.Topics[topic] {
		if p.Error != nil {
			return 0, nil, p.Error
		}
		sum += p.LastOffset - committed[p.Partition]
		ends[p.Partition] = p.LastOffset
	}
	for i := range parts {
		parts[i].End = ends[parts[i].Partition]
	}
	slices.SortFunc(parts, func(a, b PartitionEnd) int { return a.Partition - b.Partition })
	return sum, parts, nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("chaos: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Tails returns the last n lines of every process log of dir, for a failure message.
func Tails(dir string, n int) string {
	paths, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	var b strings.Builder
	for _, p := range paths {
		fmt.Fprintf(&b, "--- %s (last %d lines)\n%s\n", filepath.Base(p), n, tail(p, n))
	}
	return b.String()
}

// evictVanished does, on the embedded broker, what Apache Kafka does by itself: a member
// whose process is gone leaves the group a session after its last word. kfake starts no session
// timer for a member whose JoinGroup answer it could not deliver (the process was killed while
// the join waited) and keeps it, with its partitions, for good; and since it restarts its
// rebalance deadline at every join, such a member also keeps later rebalances from completing
// (the join stall). So a session after a replica exited, every member id it logged is sent a
// LeaveGroup once (one it left already is refused as unknown, which changes nothing). Live
// processes' members are never touched: member ids are unique to one process's join.
func (r *run) evictVanished(ctx context.Context) {
	if r.cfg.Fake == nil || r.cfg.KeepVanished {
		return
	}
	if r.expired == nil {
		r.expired = map[string]bool{}
	}
	session := r.cfg.Schedule.SessionTimeout
	for _, p := range r.all {
		if !strings.HasPrefix(p.name, "replica-") || r.expired[p.name] || !p.exited() || time.Since(p.endedAt) < session {
			continue
		}
		r.expired[p.name] = true
		ids := memberIDs(p.logPath)
		if len(ids) == 0 {
			continue
		}
		// A static member leaves by its instance id too, unless its slot runs again: the id is
		// the new process's then.
		inst := ""
		if slot, ok := slotOf(p.name); ok && r.cfg.Schedule.Membership == MembershipStatic && r.slots[slot] == p {
			inst = instanceID(slot)
		}
		members := make([]kafka.LeaveGroupRequestMember, 0, len(ids))
		for _, id := range ids {
			members = append(members, kafka.LeaveGroupRequestMember{ID: id, GroupInstanceID: inst})
		}
		cl := &kafka.Client{Addr: kafka.TCP(r.cfg.Brokers...), Timeout: 5 * time.Second}
		_, err := cl.LeaveGroup(ctx, &kafka.LeaveGroupRequest{GroupID: r.group, Members: members})
		r.expiredLeaves += len(ids)
		r.cfg.Logf("%s exited %v ago: its members %v leave the embedded broker's group as Kafka would have expired them (err %v)",
			p.name, time.Since(p.endedAt).Round(time.Millisecond), ids, err)
	}
}

// instanceID is the --instance-id of slot i's replicas (static membership).
func instanceID(i int) string { return fmt.Sprintf("chaos-r%d", i) }

// slotOf reads the slot from a replica's process name (replica-<slot>.<generation>).
func slotOf(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, "replica-")
	if !ok {
		return 0, false
	}
	slot, _, _ := strings.Cut(rest, ".")
	i, err := strconv.Atoi(slot)
	return i, err == nil
}

// memberIDs are the group member ids a replica's log says it was given.
func memberIDs(path string) []string {
	var ids []string
	scanLog(path, func(b []byte) {
		var line struct {
			Msg    string `json:"msg"`
			Member string `json:"member"`
		}
		if json.Unmarshal(b, &line) != nil || line.Member == "" {
			return
		}
		if line.Msg == "consumer group: member id assigned" || line.Msg == "consumer group: joined" {
			if !slices.Contains(ids, line.Member) {
				ids = append(ids, line.Member)
			}
		}
	})
	return ids
}

// owner is who a replica log says held a partition, and in which generation.
type owner struct {
	replica, member string
	generation      int
}

// lastOwners reads the replica logs in dir: for each partition the replica that logged it
// assigned in the newest generation, and the newest generation any replica logged.
func lastOwners(dir string) (map[int]owner, int) {
	logs, _ := filepath.Glob(filepath.Join(dir, "replica-*.log"))
	out := map[int]owner{}
	last := 0
	for _, l := range logs {
		f, err := os.Open(l)
		if err != nil {
			continue
		}
		name := strings.TrimSuffix(filepath.Base(l), ".log")
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var line struct {
				Msg        string `json:"msg"`
				Generation int    `json:"generation"`
				Member     string `json:"member"`
				Partitions []int  `json:"partitions"`
			}
			if json.Unmarshal(sc.Bytes(), &line) != nil || line.Msg != "rebalance: partitions assigned" {
				continue
			}
			last = max(last, line.Generation)
			for _, p := range line.Partitions {
				if line.Generation >= out[p].generation {
					out[p] = owner{replica: name, member: line.Member, generation: line.Generation}
				}
			}
		}
		f.Close()
	}
	return out, last
}

// joinStalled reports whether the replica logs in dir show, after since, joins that timed out
// and not one partition assignment: the group never re-formed.
func joinStalled(dir string, since time.Time) bool {
	var failedJoins, assigned int
	scanReplicaLogs(dir, func(b []byte) {
		var line struct {
			Msg string    `json:"msg"`
			TS  time.Time `json:"ts"`
		}
		if json.Unmarshal(b, &line) != nil || line.TS.Before(since) {
			return
		}
		switch line.Msg {
		case "consumer group: join failed, retrying":
			failedJoins++
		case "rebalance: partitions assigned":
			assigned++
		}
	})
	return failedJoins > 0 && assigned == 0
}

// scanReplicaLogs calls fn with each line of every replica log in dir (scanLog).
func scanReplicaLogs(dir string, fn func(line []byte)) {
	logs, _ := filepath.Glob(filepath.Join(dir, "replica-*.log"))
	for _, l := range logs {
		scanLog(l, fn)
	}
}

// scanLog calls fn with each line of the log at path (lines up to 1 MiB); a log that can't be
// opened has none.
func scanLog(path string, fn func(line []byte)) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fn(sc.Bytes())
	}
}
