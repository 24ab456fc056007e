package chaos

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
	"github.com/chatgroupd/chatgroupd/internal/kfakepatch"
	"github.com/chatgroupd/chatgroupd/internal/leakcheck"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
)

// Environment of the seeded runs.
const (
	envSeeds     = "CHAOS_SEEDS"          // "1-30" or "3,7,12": TestChaos runs these
	envDuration  = "CHAOS_DURATION"       // schedule length per seed, default 60s
	envReplicas  = "CHAOS_REPLICAS"       // fleet size, default drawn 3–5 per seed
	envShortDur  = "CHAOS_SHORT_DURATION" // schedule length of TestChaosShort, default 15s
	envShort     = "CHAOS_SHORT_SEEDS"    // seeds of TestChaosShort, default 1,2,3
	envLogLevel  = "CHAOS_LOG_LEVEL"      // the replicas' log level, default info (debug logs every write)
	envBudget    = "CHAOS_FLEET_BUDGET"   // static or kafka for every seed; default by seed (odd: kafka)
	envKeep      = "CHAOS_KEEP_LOGS"      // set: keep every seed's logs, not only a failing one's
	envEvents    = "CHAOS_EVENTS"         // create or lifecycle for every seed; default by seed (every third: lifecycle)
	envMember    = "CHAOS_MEMBERSHIP"     // dynamic or static for every seed; default by seed (1, 5, 9, ...: static)
	envVanished  = "CHAOS_KEEP_VANISHED"  // set: don't expire the embedded broker's members of dead replicas (Config.KeepVanished)
	envOrder     = "CHAOS_ORDER"          // set: run the lifecycle order test and its self-test (order_test.go)
	envOrderSeed = "CHAOS_ORDER_SEED"     // the order test's seed, default 19
	envLaneSeeds = "CHAOS_LANE_SEEDS"     // seeds of TestChaosLane (retry lane on, accounts parked), default 1-3
	shortSeeds   = "1,2,3"
	shortDefault = 15 * time.Second
	laneSeeds    = "1-3"
)

// binary is chatgroupd built once by TestMain for the runs; buildErr says why it is missing.
var (
	binary   string
	buildErr error
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		leakcheck.VerifyTestMain(m)
	}
	dir, err := os.MkdirTemp("", "chatgroupd-chaos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
	binary, buildErr = build(dir)
	code := leakcheck.Run(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// build compiles ./cmd/chatgroupd without the race detector: the runs measure timing, and the
// unit suite runs the same code under -race. It needs no patched kfake (internal/kfakepatch):
// `chatgroupd run` only connects to the broker, which runs in this test process.
func build(dir string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out := filepath.Join(dir, "chatgroupd")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/chatgroupd")
	cmd.Dir = ".."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/chatgroupd: %w\n%s", err, stderr.String())
	}
	return out, nil
}

// broker returns the broker of a run: the real one named by CHATGROUPD_TEST_BROKERS, or an
// embedded kfake cluster that allows the suite's short session timeouts.
func broker(t *testing.T) *kafkatest.Cluster {
	t.Helper()
	if os.Getenv(kafkatest.EnvBrokers) != "" {
		return kafkatest.Real(t)
	}
	return kafkatest.New(t, kfake.GroupMinSessionTimeout(time.Second))
}

// kfakeBuild says which embedded broker this test binary has: "patched" (internal/kfakepatch,
// Kafka's join barrier; make chaos and make test build it) or "unpatched", where a join stall can
// also be kfake's own miscount of members parked in SyncGroup (chaos seed 22, session 5).
func kfakeBuild() string {
	if _, err := kfakepatch.Patched(); err != nil {
		return "unpatched"
	}
	return "patched"
}

// replayCmd is the go test command that replays seed s on the same embedded broker.
func replayCmd(s *Schedule) string {
	modfile := ""
	if kfakeBuild() == "patched" {
		modfile = `-modfile "$(go run ./internal/kfakepatch/cmd/kfakemodfile)" `
	}
	if s.RetryLane {
		return fmt.Sprintf("%s=1 %s=%d %s=%v %s=%d go test %s-count=1 -v -timeout 0 -run 'TestChaosLane$' ./chaos/",
			envSeeds, envLaneSeeds, s.Seed, envDuration, s.Duration, envReplicas, s.Replicas, modfile)
	}
	return fmt.Sprintf("%s=%d %s=%v %s=%d go test %s-count=1 -v -timeout 0 -run 'TestChaos$' ./chaos/",
		envSeeds, s.Seed, envDuration, s.Duration, envReplicas, s.Replicas, modfile)
}

// options are the schedule options of seed on c: a real broker keeps its 6s minimum session
// and has no DLQ switch.
func options(t *testing.T, c *kafkatest.Cluster, seed uint64, d time.Duration, replicas int) Options {
	t.Helper()
	switch v := os.Getenv(envEvents); v {
	case "", EventsCreate, EventsLifecycle:
	default:
		t.Fatalf("%s=%q: want %s or %s", envEvents, v, EventsCreate, EventsLifecycle)
	}
	switch v := os.Getenv(envMember); v {
	case "", MembershipDynamic, MembershipStatic:
	default:
		t.Fatalf("%s=%q: want %s or %s", envMember, v, MembershipDynamic, MembershipStatic)
	}
	o := Options{Seed: seed, Duration: d, Replicas: replicas, DLQFaults: c.Fake != nil, FleetBudget: os.Getenv(envBudget),
		Events: os.Getenv(envEvents), Membership: os.Getenv(envMember)}
	if c.Fake == nil {
		o.SessionTimeout = 6 * time.Second
	}
	return o
}

// play runs one schedule and returns its result; a run that could not be carried out fails
// the test. Logs are kept (and named) when the run fails.
func play(t *testing.T, c *kafkatest.Cluster, s *Schedule, env ...string) *Result {
	t.Helper()
	return playDrain(t, c, s, 0, env...)
}

// playDrain is play with a bound on the wait for the group to drain (0: Config's default).
func playDrain(t *testing.T, c *kafkatest.Cluster, s *Schedule, drain time.Duration, env ...string) *Result {
	t.Helper()
	return playConfig(t, c, s, func(cfg *Config) { cfg.DrainTimeout = drain }, env...)
}

// playConfig is play with the run's Config adjusted by adjust.
func playConfig(t *testing.T, c *kafkatest.Cluster, s *Schedule, adjust func(*Config), env ...string) *Result {
	t.Helper()
	if binary == "" {
		t.Fatalf("no chatgroupd binary: %v", buildErr)
	}
	dir, err := os.MkdirTemp("", fmt.Sprintf("chaos-seed-%d-", s.Seed))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testwait.Context(t, s.Duration+10*time.Minute)
	cfg := Config{Schedule: s, Binary: binary, Brokers: c.Brokers, Fake: c.Fake, Dir: dir, Env: env, Logf: t.Logf,
		LogLevel: os.Getenv(envLogLevel), KeepVanished: os.Getenv(envVanished) != ""}
	adjust(&cfg)
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("seed %d: run: %v\nlogs in %s\n%s", s.Seed, err, dir, Tails(dir, 15))
	}
	lane := ""
	if s.RetryLane {
		lane = fmt.Sprintf(", parks %d unparks %d lane records %d markers %d, triggered %d (missed %d)",
			res.Parks, res.Unparks, res.LaneRecords, res.LaneMarkers, res.Triggered, res.TriggerMissed)
	}
	t.Logf("FIGURES seed %d (%d replicas, %v, stops %d kills %d pauses %d%s, drained %v, %v, expired members %d): %s", s.Seed, s.Replicas, s.Duration,
		res.Stops, res.Kills, res.Pauses, lane, res.Drained, res.Elapsed.Round(time.Second), res.ExpiredMembers, res.Report.Summary())
	t.Cleanup(func() {
		// A join-stalled seed is skipped, not failed, but its logs are the only way to tell
		// which broker defect it met: keep them too.
		if t.Failed() || res.JoinStalled || os.Getenv(envKeep) != "" {
			t.Logf("logs of seed %d kept in %s", s.Seed, dir)
			return
		}
		os.RemoveAll(dir)
	})
	return res
}

// verify fails the test on a violated invariant, with the schedule and the replay command.
//
// A run the embedded broker's join stall kept from draining (Result.JoinStalled) is checked for
// every invariant but the ones the stall alone breaks (records not yet consumed and their lag:
// they are still in the topic, uncommitted), then skipped as inconclusive, visibly.
func verify(t *testing.T, s *Schedule, res *Result) {
	t.Helper()
	if res.JoinStalled {
		r := *res
		r.Report.Lost, r.Report.Lag, r.Report.Unprogressed = 0, 0, 0
		if err := r.Err(); err != nil {
			t.Errorf("seed %d: %v\n%s", s.Seed, err, s)
		}
		if !t.Failed() {
			t.Skipf("seed %d inconclusive: the embedded broker's group never re-formed after the schedule "+
				"(join stall, see Result.JoinStalled; kfake %s); %d records left unconsumed, every other invariant held\nreplay: %s",
				s.Seed, kfakeBuild(), res.Report.Lost, replayCmd(s))
		}
		return
	}
	if err := res.Err(); err != nil {
		t.Errorf("seed %d: %v\n%s\nreplay: %s", s.Seed, err, s, replayCmd(s))
	}
}

// TestChaosShort runs three short seeds in the default suite (`make test`); -short skips them.
func TestChaosShort(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no fleet runs")
	}
	d := shortDefault
	if v := os.Getenv(envShortDur); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("%s: %v", envShortDur, err)
		}
	}
	spec := shortSeeds
	if v := os.Getenv(envShort); v != "" {
		spec = v
	}
	seeds, err := parseSeeds(spec)
	if err != nil {
		t.Fatal(err)
	}
	c := broker(t)
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed-%d", seed), func(t *testing.T) {
			s := NewSchedule(options(t, c, seed, d, 3)) // seed 3 carries lifecycle load
			res := play(t, c, s)
			verify(t, s, res)
		})
	}
}

// TestChaos runs the seeds of CHAOS_SEEDS (`make chaos`) and prints the totals.
func TestChaos(t *testing.T) {
	spec := os.Getenv(envSeeds)
	if spec == "" || testing.Short() {
		t.Skipf("%s not set (make chaos sets it)", envSeeds)
	}
	runSeeds(t, spec, "CHAOS TOTALS", func(*Options) {})
}

// TestChaosLane runs the seeds of CHAOS_LANE_SEEDS (default 1-3; `make chaos`) with the retry
// lane on (Options.RetryLane): accounts fail long enough to be parked and their later events go
// through the lane while replicas are stopped, killed and paused, some at the moment one parks
// or unparks an account. It prints its own totals.
func TestChaosLane(t *testing.T) {
	if os.Getenv(envSeeds) == "" || testing.Short() {
		t.Skipf("%s not set (make chaos sets it)", envSeeds)
	}
	spec := os.Getenv(envLaneSeeds)
	if spec == "" {
		spec = laneSeeds
	}
	runSeeds(t, spec, "CHAOS LANE TOTALS", func(o *Options) { o.RetryLane = true })
}

// runSeeds runs the seeds of spec, their options adjusted by adjust, and prints the totals
// after title.
func runSeeds(t *testing.T, spec, title string, adjust func(*Options)) {
	t.Helper()
	seeds, err := parseSeeds(spec)
	if err != nil {
		t.Fatal(err)
	}
	d := 60 * time.Second
	if v := os.Getenv(envDuration); v != "" {
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("%s: %v", envDuration, err)
		}
	}
	replicas := 0
	if v := os.Getenv(envReplicas); v != "" {
		if replicas, err = strconv.Atoi(v); err != nil {
			t.Fatalf("%s: %v", envReplicas, err)
		}
	}
	var total Report
	var failed, stalled []uint64
	var stops, kills, pauses, ran int
	var lane []string // per seed: parks, unparks, lane records, triggered steps
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed-%d", seed), func(t *testing.T) {
			c := broker(t)
			o := options(t, c, seed, d, replicas)
			adjust(&o)
			s := NewSchedule(o)
			res := play(t, c, s)
			total.Add(res.Report)
			stops, kills, pauses, ran = stops+res.Stops, kills+res.Kills, pauses+res.Pauses, ran+1
			if s.RetryLane {
				lane = append(lane, fmt.Sprintf("%d:%d/%d/%d/%d", seed, res.Parks, res.Unparks, res.LaneRecords, res.Triggered))
			}
			if res.JoinStalled {
				stalled = append(stalled, seed)
			}
			defer func() {
				if t.Failed() {
					failed = append(failed, seed)
				}
			}()
			verify(t, s, res)
		})
	}
	line := fmt.Sprintf("%s seeds=%d duration=%v graceful_stops=%d sigkills=%d sigstop_evictions=%d lost=%d duplicate_creates=%d double_effects=%d concurrent_same_account_calls=%d order_violations=%d windows_over_budget=%d (max %d calls/s as they arrived, %d at the simulator's handlers) | records=%d applied=%d dead_lettered=%d duplicates_dropped=%d late=%d wrong_outcome=%d dlq_repeats=%d lag=%d failed_seeds=%v join_stalled_seeds=%v kfake=%s",
		title, ran, d, stops, kills, pauses, total.Lost, total.DuplicateCreates, total.DoubleEffects, total.ConcurrentCalls, total.OrderViolations, total.WindowsOverBudget, total.MaxWindow, total.MaxWindowAtHandler,
		total.Records, total.Applied, total.DeadLettered, total.DuplicatesDropped, total.Late, total.WrongOutcome, total.DLQRepeats, total.Lag, failed, stalled, kfakeBuild())
	if len(lane) > 0 {
		line += " lane(seed:parks/unparks/lane_records/triggered)=" + strings.Join(lane, ",")
	}
	t.Log(line)
	fmt.Println(line)
}

// TestChaosCatchesLegacyDrain is the suite's own test: replicas with the old revoke-drain bound
// (longer than the session, restored by CHATGROUPD_TEST_BREAK=legacy-drain) must be caught by
// the checker when a member joins while slow calls are in flight. A checker that passes this
// run would pass anything.
func TestChaosCatchesLegacyDrain(t *testing.T) {
	c := selfTestBroker(t)
	s := legacyDrainSchedule(99)
	r := play(t, c, s, "CHATGROUPD_TEST_BREAK=legacy-drain").Report
	mustCatch(t, s, r, r.ConcurrentCalls > 0 || r.DuplicateCreates > 0, "replicas that drain past their session")
}

// TestChaosCatchesWholeBudget is the budget check's own test, counted as calls reached the
// simulator: replicas that each take the whole budget whatever they own
// (CHATGROUPD_TEST_BREAK=whole-budget) must be caught crossing it under a backlog.
func TestChaosCatchesWholeBudget(t *testing.T) {
	c := selfTestBroker(t)
	s := backlogSchedule(98)
	r := play(t, c, s, "CHATGROUPD_TEST_BREAK=whole-budget").Report
	mustCatch(t, s, r, r.WindowsOverBudget > 0, "replicas that each use the whole budget")
}

// TestChaosCatchesDroppedPartition is the progress check's own test: replicas whose group leader
// leaves the topic's last partition out of every assignment (CHATGROUPD_TEST_BREAK=drop-partition)
// must be caught with that partition named as without progress and without an owner in the last
// generation: the class of issue 14's seed 9 (partitions assigned to members that did not exist).
func TestChaosCatchesDroppedPartition(t *testing.T) {
	c := selfTestBroker(t)
	s := backlogSchedule(97)
	s.Replicas = 2
	res := playDrain(t, c, s, 30*time.Second, "CHATGROUPD_TEST_BREAK=drop-partition")
	r := res.Report
	last := fmt.Sprintf("partition %d without progress", 8-1)
	if r.Unprogressed == 0 || !slices.ContainsFunc(r.Problems, func(p string) bool {
		return strings.Contains(p, last) && strings.Contains(p, "no replica was")
	}) {
		t.Fatalf("the checker did not name the dropped partition: %s\n%q\n%s", r.Summary(), r.Problems, s)
	}
	t.Logf("caught: %v", r.Err())
}

// TestChaosCatchesUngatedWrites is the suite's own test of the rule that makes a crash leave
// only what was written uncertain: replicas that write records before a commit lists them
// (CHATGROUPD_TEST_BREAK=ungated-writes) are killed in a backlog, and their successors take the
// records written since the last commit as never sent and create their groups again. The
// checker must see those duplicate creates.
func TestChaosCatchesUngatedWrites(t *testing.T) {
	c := selfTestBroker(t)
	s := killSchedule(96)
	r := play(t, c, s, "CHATGROUPD_TEST_BREAK=ungated-writes").Report
	mustCatch(t, s, r, r.DuplicateCreates > 0, "replicas that write before a commit lists the record")
}

// TestChaosUngatedWritesControl runs that self-test's schedule without the break: it must pass.
// With the seeds of `make chaos`.
func TestChaosUngatedWritesControl(t *testing.T) {
	c := controlBroker(t)
	s := killSchedule(96)
	verify(t, s, play(t, c, s))
}

// killSchedule: three replicas drain a backlog (six bursts of 600 events) while one of them is
// SIGKILLed and restarted at once, three times, each kill among the calls written since its
// last commit.
func killSchedule(seed uint64) *Schedule {
	o := Options{Seed: seed, Duration: 20 * time.Second, Replicas: 3, SessionTimeout: 4 * time.Second}.withDefaults()
	steps := backlogBursts(o, 6)
	for i, at := range []time.Duration{3 * time.Second, 7 * time.Second, 11 * time.Second} {
		steps = append(steps,
			Step{At: at, Kind: KindKill, Slot: i % 3},
			Step{At: at + 300*time.Millisecond, Kind: KindStart, Slot: i % 3})
	}
	slices.SortStableFunc(steps, func(a, b Step) int { return int(a.At - b.At) })
	return &Schedule{Options: o, Steps: steps}
}

// TestChaosWholeBudgetControl runs the budget self-test's schedule without the break: it must
// pass, so that what the self-test catches is the break. With the seeds of `make chaos`.
func TestChaosWholeBudgetControl(t *testing.T) {
	c := controlBroker(t)
	s := backlogSchedule(98)
	verify(t, s, play(t, c, s))
}

// backlogSchedule: three replicas and 2400 events over every account in the first seconds,
// about twelve seconds of work at the budget, with no fault: only the budget is under test.
func backlogSchedule(seed uint64) *Schedule {
	o := Options{Seed: seed, Duration: 12 * time.Second, Replicas: 3, SessionTimeout: 4 * time.Second}.withDefaults()
	return &Schedule{Options: o, Steps: backlogBursts(o, 4)}
}

// backlogBursts is n bursts of 600 valid events over every account, one a second from 0.
func backlogBursts(o Options, n int) []Step {
	g := &generator{o: o, rng: rand.New(rand.NewPCG(o.Seed, o.Seed)), seq: map[string]int64{}}
	var steps []Step
	for i := range n {
		var recs []Record
		for range 600 {
			recs = append(recs, g.valid(fmt.Sprintf("%s%02d", userPrefix, g.rng.IntN(accountPool))))
		}
		steps = append(steps, Step{At: time.Duration(i) * time.Second, Kind: KindBurst, Records: recs, Note: "600 events over every account"})
	}
	return steps
}

// TestChaosLegacyDrainControl runs the self-test's schedule on the consumer as built, without
// the break: it must pass, so what the self-test catches is the broken drain and not the
// schedule. It runs with the seeds of `make chaos` (CHAOS_SEEDS set).
func TestChaosLegacyDrainControl(t *testing.T) {
	c := controlBroker(t)
	s := legacyDrainSchedule(99)
	verify(t, s, play(t, c, s))
}

// legacyDrainSchedule: two replicas, the second killed at once (the first owns everything once
// the session evicts it); sixteen accounts whose calls take 2.5× the session get a queue of
// events each; then the second replica joins while their calls run. The first must drain, and
// with the old bound it drains past its session: it is evicted, and the joiner dispatches the
// same accounts while the old calls are still in flight. Twice.
func legacyDrainSchedule(seed uint64) *Schedule {
	o := Options{Seed: seed, Duration: 50 * time.Second, Replicas: 2, SessionTimeout: 4 * time.Second}.withDefaults()
	g := &generator{o: o, rng: rand.New(rand.NewPCG(seed, seed)), seq: map[string]int64{}}
	slowLatency := o.SessionTimeout * 5 / 2
	var accts []string
	for i := range 16 {
		accts = append(accts, fmt.Sprintf("%s%02d", userPrefix, i))
	}
	burst := func(at time.Duration) Step {
		var recs []Record
		for range 3 {
			for _, a := range accts {
				recs = append(recs, g.valid(a))
			}
		}
		for range 40 {
			recs = append(recs, g.valid(fmt.Sprintf("%s%02d", userPrefix, 16+g.rng.IntN(accountPool-16))))
		}
		return Step{At: at, Kind: KindBurst, Records: recs, Note: "16 slow accounts × 3, 40 others"}
	}
	var steps []Step
	for _, a := range accts {
		steps = append(steps, Step{At: 0, Kind: KindSlow, Account: a, Latency: slowLatency})
	}
	steps = append(steps,
		Step{At: 0, Kind: KindKill, Slot: 1},
		burst(8*time.Second),
		Step{At: 9500 * time.Millisecond, Kind: KindStart, Slot: 1},
		Step{At: 25 * time.Second, Kind: KindKill, Slot: 1},
		burst(33*time.Second),
		Step{At: 34500 * time.Millisecond, Kind: KindStart, Slot: 1},
	)
	for _, a := range accts {
		steps = append(steps, Step{At: o.Duration, Kind: KindSlowEnd, Account: a})
	}
	return &Schedule{Options: o, Steps: steps}
}

// parseSeeds reads "1-30", "3,7,12" or a mix.
func parseSeeds(spec string) ([]uint64, error) {
	var out []uint64
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.ParseUint(lo, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("chaos seeds %q: %w", spec, err)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(hi, 10, 64); err != nil || b < a {
				return nil, fmt.Errorf("chaos seeds %q: bad range %q", spec, part)
			}
		}
		for s := a; s <= b; s++ {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("chaos seeds %q: none", spec)
	}
	return out, nil
}

func TestParseSeeds(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []uint64
		err  bool
	}{
		{"1-3", []uint64{1, 2, 3}, false},
		{"3,7, 12", []uint64{3, 7, 12}, false},
		{"1-2,5", []uint64{1, 2, 5}, false},
		{"", nil, true},
		{"x", nil, true},
		{"5-2", nil, true},
		{"1-y", nil, true},
	} {
		got, err := parseSeeds(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("parseSeeds(%q): err %v, want an error: %v", tc.in, err, tc.err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("parseSeeds(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}

// TestChaosShortPause freezes fleet-budget replicas (SIGSTOP) under a backlog, each for longer
// than the budget entry's TTL but shorter than the group session: its membership lease still
// holds when it wakes, its budget entry has expired in the others' ledgers and they have grown
// into its room, and its limiters still hold the ceilings they had before the freeze. The calls
// it makes on waking, before its budget member sees its fence has passed, must not cross the
// budget: the limiters stop at the fence themselves (ratelimit.Limiter.SetFence). Without that,
// three runs in four crossed it (up to 213 calls in the second after a wake).
func TestChaosShortPause(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no fleet runs")
	}
	c := broker(t)
	s := shortPauseSchedule(97)
	verify(t, s, play(t, c, s))
}

// shortPauseSchedule: three replicas on the fleet budget and 6000 events over every account in
// the first ten seconds (30 s of work at the budget); four times a replica is frozen for 5 s
// (the budget's TTL is 2.4 s, the session 10 s) while the others drain.
func shortPauseSchedule(seed uint64) *Schedule {
	o := Options{Seed: seed, Duration: 30 * time.Second, Replicas: 3, SessionTimeout: 10 * time.Second,
		FleetBudget: BudgetKafka}.withDefaults()
	steps := backlogBursts(o, 10)
	for i, at := range []time.Duration{4 * time.Second, 10 * time.Second, 16 * time.Second, 22 * time.Second} {
		steps = append(steps,
			Step{At: at, Kind: KindPause, Slot: i % 3},
			Step{At: at + 5*time.Second, Kind: KindResume, Slot: i % 3})
	}
	slices.SortStableFunc(steps, func(a, b Step) int { return int(a.At - b.At) })
	return &Schedule{Options: o, Steps: steps}
}

// selfTestBroker is the embedded broker of a checker self-test (in `make test`); it skips the test
// with -short and on a real broker.
func selfTestBroker(t *testing.T) *kafkatest.Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no fleet runs")
	}
	return embeddedBroker(t)
}

// controlBroker is the embedded broker of a self-test's control run (the same schedule without the
// break), or of a self-test kept out of `make test` for its time: runs of `make chaos`. It skips
// the test unless CHAOS_SEEDS is set.
func controlBroker(t *testing.T) *kafkatest.Cluster {
	t.Helper()
	if os.Getenv(envSeeds) == "" || testing.Short() {
		t.Skipf("%s not set (make chaos sets it)", envSeeds)
	}
	return embeddedBroker(t)
}

func embeddedBroker(t *testing.T) *kafkatest.Cluster {
	t.Helper()
	c := broker(t)
	if c.Fake == nil {
		t.Skip("the self-test runs on the embedded broker only")
	}
	return c
}

// mustCatch ends a checker self-test: the run of schedule s with a break must have been caught
// (what names the broken replicas).
func mustCatch(t *testing.T, s *Schedule, r Report, caught bool, what string) {
	t.Helper()
	if !caught {
		t.Fatalf("the checker did not catch %s: %s\n%s", what, r.Summary(), s)
	}
	t.Logf("caught: %v", r.Err())
}
