// Package harness runs the chatgroupd benchmarks: for each scenario it fills a Kafka topic with
// generated events, serves a fresh IM simulator, launches each subject (chatgroupd or a peer) as a
// child process with the same flags, and measures API utilisation, CPU, memory and latency.
package harness

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/chatgroupd/chatgroupd/internal/loadgen"
)

// Kind is what a scenario measures.
type Kind string

// Kinds of scenario.
const (
	// KindUtil: a backlog at the rate limit; calls/s over a window after warm-up, and the
	// simulator's highest one-second window over the whole run.
	KindUtil Kind = "utilisation"
	// KindCPU: a backlog with the limiter off and a zero-latency API; CPU-seconds and peak RSS
	// until every event ended.
	KindCPU Kind = "cpu"
	// KindE2E: events produced live at LiveRate; occurred_at → simulator apply, p50/p99.
	KindE2E Kind = "e2e"
	// KindBacklog: a large backlog; peak RSS after running Window at the rate limit.
	KindBacklog Kind = "backlog"
	// KindRestart: SIGKILL at full rate, restart at once; time until the rate is back.
	KindRestart Kind = "restart"
	// KindFleet: several replicas of the subject drain a backlog together while the harness
	// changes the membership (Change); utilisation over the whole drain, the highest window, and
	// the gap after each change, from the simulator's call log.
	KindFleet Kind = "fleet"
	// KindStuck: events produced live into one partition while one account's creates answer
	// 50004 (when Fault); the other accounts' throughput and end-to-end latency.
	KindStuck Kind = "stuck"
	// KindMixed: a backlog of lifecycle events (Mix) drains through the subject; per API
	// (create, update, delete, get), calls/s over the time it had work, the utilisation of its
	// own budget, its highest one-second window and its 60007 answers, from the call log.
	KindMixed Kind = "mixed"
)

// Change is the membership change of a fleet scenario.
type Change string

// Changes.
const (
	ChangeNone    Change = ""        // the replicas drain together
	ChangeLeave   Change = "leave"   // SIGTERM the last replica at ChangeAt; it is not restarted
	ChangeRolling Change = "rolling" // SIGTERM each replica in turn, start it again once it exited
	ChangeKill    Change = "kill"    // SIGKILL the last replica at ChangeAt, start it again at once
)

// Scenario is one benchmark workload; every subject runs it with the same events and settings.
type Scenario struct {
	Name       string
	Kind       Kind
	Partitions int
	Accounts   int           // accounts active at once in the generated stream
	Latency    time.Duration // added by the simulator to every call
	// RateLimit is the subject's --rate-limit and the simulator's limit; at or above Unlimited
	// both are off.
	RateLimit float64
	Backlog   int     // events produced before the subject starts
	LiveRate  float64 // KindE2E: events/s produced while the subject runs
	// Warmup is skipped before measuring (KindUtil); Window is the measured span (KindUtil),
	// the live production span (KindE2E) or the run time (KindBacklog).
	Warmup  time.Duration
	Window  time.Duration
	Timeout time.Duration // hard limit of one subject's run

	// Fleet scenarios (KindFleet).
	Replicas int     // processes of a subject that shares one budget across replicas
	HotShare float64 // fraction of the backlog in partition 0 (0: spread by key)
	Change   Change
	ChangeAt time.Duration // after the first call: when the (first) change happens
	// StepPause is how long a rolling restart waits after a replica started again before it
	// stops the next one.
	StepPause time.Duration

	// Stuck-account scenarios (KindStuck; LiveRate and Window as for KindE2E).
	StuckEvery int  // every StuckEvery-th live event is the stuck account's
	Fault      bool // the stuck account's creates answer 50004 for the whole run

	// Mixed-type scenarios (KindMixed).
	Mix string // loadgen mix (loadgen.ParseMix): the weights of the event types
	// Prefill events are generated before the Backlog but not produced: the groups they leave
	// are the simulator's starting state, so every API has work from the first second.
	Prefill int
}

// Unlimited is the rate limit meaning "limiter off" (peers skip pacing from 1e6 on).
const Unlimited = 1e9

// Validate reports an unusable scenario.
func (s Scenario) Validate() error {
	switch {
	case s.Name == "":
		return fmt.Errorf("scenario without a name")
	case !slices.Contains([]Kind{KindUtil, KindCPU, KindE2E, KindBacklog, KindRestart, KindFleet, KindStuck, KindMixed}, s.Kind):
		return fmt.Errorf("scenario %s: unknown kind %q", s.Name, s.Kind)
	case s.Partitions < 1 || s.Accounts < 1 || s.RateLimit <= 0 || s.Timeout <= 0:
		return fmt.Errorf("scenario %s: partitions, accounts, rate limit and timeout must be positive", s.Name)
	case (s.Kind == KindE2E || s.Kind == KindStuck) && (s.LiveRate <= 0 || s.Window <= 0):
		return fmt.Errorf("scenario %s: %s needs a live rate and a window", s.Name, s.Kind)
	case s.Kind == KindStuck && s.StuckEvery < 2:
		return fmt.Errorf("scenario %s: StuckEvery must be at least 2", s.Name)
	case s.Kind == KindFleet && (s.Replicas < 1 || s.HotShare < 0 || s.HotShare >= 1):
		return fmt.Errorf("scenario %s: fleet needs replicas and a hot share in [0, 1)", s.Name)
	case s.Kind == KindFleet && !slices.Contains([]Change{ChangeNone, ChangeLeave, ChangeRolling, ChangeKill}, s.Change):
		return fmt.Errorf("scenario %s: unknown change %q", s.Name, s.Change)
	case s.Kind == KindFleet && s.Change != ChangeNone && (s.Replicas < 2 || s.ChangeAt <= 0):
		return fmt.Errorf("scenario %s: a membership change needs 2+ replicas and a time", s.Name)
	case s.Kind != KindE2E && s.Kind != KindStuck && s.Backlog < 1:
		return fmt.Errorf("scenario %s: needs a backlog", s.Name)
	case s.Kind == KindMixed:
		return s.validateMixed()
	}
	return nil
}

// runsWith reports whether subj can run s: the peers know one event type (they would create a
// group for every rename), so a mixed scenario runs chatgroupd subjects only.
func (s Scenario) runsWith(subj Subject) bool { return s.Kind != KindMixed || subj.Fleet }

// MixedWeights is mixed-util's mix: with these weights the generator's stream (which renames,
// adds to, removes from and deletes only groups that exist) holds about as many update and
// delete events as creates (seed 1: 2757 creates, 2281 updates, 2462 deletes in 7500).
const MixedWeights = "created=3,renamed=2,contacts_added=2,contacts_removed=2,deleted=6"

// validateMixed checks the fields of a KindMixed scenario.
func (s Scenario) validateMixed() error {
	m, err := loadgen.ParseMix(s.Mix)
	switch {
	case err != nil:
		return fmt.Errorf("scenario %s: %w", s.Name, err)
	case m.IsV1():
		return fmt.Errorf("scenario %s: mix %q has creates only: a mixed scenario needs lifecycle types", s.Name, s.Mix)
	case s.Prefill < 0:
		return fmt.Errorf("scenario %s: prefill must be >= 0, got %d", s.Name, s.Prefill)
	case s.RateLimit >= Unlimited:
		return fmt.Errorf("scenario %s: a mixed scenario measures budgets: it needs a rate limit", s.Name)
	}
	return nil
}

// Scale is the size of the scenario set: Quick for `make bench`, Full for the published numbers.
type Scale int

// Scales.
const (
	Quick Scale = iota
	Full
)

// Scenarios returns the standard set at scale.
func Scenarios(scale Scale) []Scenario {
	warm, win := 2*time.Second, 8*time.Second
	cpuEvents, e2eWin, backlogWin := 30_000, 15*time.Second, 15*time.Second
	if scale == Full {
		warm, win = 5*time.Second, 30*time.Second
		cpuEvents, e2eWin, backlogWin = 100_000, 30*time.Second, 30*time.Second
	}
	var out []Scenario
	for _, lat := range []time.Duration{20 * time.Millisecond, 100 * time.Millisecond, 300 * time.Millisecond} {
		for _, acc := range []int{10, 1000} {
			out = append(out, Scenario{
				Name: fmt.Sprintf("util-%dms-%dacc", lat.Milliseconds(), acc), Kind: KindUtil,
				Partitions: 6, Accounts: acc, Latency: lat, RateLimit: 200,
				// Enough for the whole run at the limit, so the backlog never runs dry.
				Backlog: int(200 * (warm + win + 30*time.Second).Seconds()),
				Warmup:  warm, Window: win, Timeout: warm + win + 60*time.Second,
			})
		}
	}
	out = append(out,
		// Reported per 100k events whatever the size.
		Scenario{Name: "cpu", Kind: KindCPU, Partitions: 6, Accounts: 1000, RateLimit: Unlimited,
			Backlog: cpuEvents, Timeout: 3 * time.Minute},
		Scenario{Name: "e2e-20eps", Kind: KindE2E, Partitions: 6, Accounts: 100, Latency: 20 * time.Millisecond,
			RateLimit: 200, LiveRate: 20, Window: e2eWin, Timeout: e2eWin + 90*time.Second},
		Scenario{Name: "backlog-1m", Kind: KindBacklog, Partitions: 6, Accounts: 1000, Latency: 100 * time.Millisecond,
			RateLimit: 200, Backlog: 1_000_000, Window: backlogWin, Timeout: 2 * time.Minute},
		Scenario{Name: "restart", Kind: KindRestart, Partitions: 6, Accounts: 1000, Latency: 20 * time.Millisecond,
			RateLimit: 200, Backlog: 200 * 150, Timeout: 2 * time.Minute},
	)
	// Fleet and stuck-account scenarios are the same size at both scales: each run is a drain of
	// 20-40 s (issues 15 and 16).
	out = append(out,
		Scenario{Name: "fleet-skew", Kind: KindFleet, Partitions: 6, Accounts: 1000, Latency: 20 * time.Millisecond,
			RateLimit: 200, Backlog: 4000, Replicas: 2, HotShare: 0.5, Timeout: 2 * time.Minute},
		Scenario{Name: "fleet-leave", Kind: KindFleet, Partitions: 6, Accounts: 1000, Latency: 20 * time.Millisecond,
			RateLimit: 200, Backlog: 6000, Replicas: 3, Change: ChangeLeave, ChangeAt: 8 * time.Second, Timeout: 2 * time.Minute},
		Scenario{Name: "fleet-rolling", Kind: KindFleet, Partitions: 6, Accounts: 1000, Latency: 20 * time.Millisecond,
			RateLimit: 200, Backlog: 8000, Replicas: 3, Change: ChangeRolling, ChangeAt: 6 * time.Second,
			StepPause: 5 * time.Second, Timeout: 2 * time.Minute},
		Scenario{Name: "fleet-kill", Kind: KindFleet, Partitions: 6, Accounts: 1000, Latency: 20 * time.Millisecond,
			RateLimit: 200, Backlog: 6000, Replicas: 3, Change: ChangeKill, ChangeAt: 8 * time.Second, Timeout: 2 * time.Minute},
		// 999 accounts and the stuck one in a single partition, 50 events/s for 20 s, every 100th
		// the stuck account's (0.5/s).
		Scenario{Name: "stuck-nofault", Kind: KindStuck, Partitions: 1, Accounts: 999, Latency: 20 * time.Millisecond,
			RateLimit: 200, LiveRate: 50, Window: 20 * time.Second, StuckEvery: 100, Timeout: 2 * time.Minute},
		Scenario{Name: "stuck-50004", Kind: KindStuck, Partitions: 1, Accounts: 999, Latency: 20 * time.Millisecond,
			RateLimit: 200, LiveRate: 50, Window: 20 * time.Second, StuckEvery: 100, Fault: true, Timeout: 2 * time.Minute},
		// Issue 19: creates, updates (renames, adds, removes) and deletes in about equal numbers
		// (~2000-3000 each: 10-15 s of each API's 200/s), from 1000 accounts that already hold
		// the groups of their first 5000 events. Same size at both scales.
		Scenario{Name: "mixed-util", Kind: KindMixed, Partitions: 6, Accounts: 1000, Latency: 20 * time.Millisecond,
			RateLimit: 200, Mix: MixedWeights, Prefill: 5000, Backlog: 7500, Timeout: 2 * time.Minute},
	)
	return out
}

// Select returns the scenarios whose names match one of the comma-separated patterns (a prefix
// match: "util" selects every utilisation scenario; "all" or "" selects everything).
func Select(all []Scenario, patterns string) ([]Scenario, error) {
	if patterns == "" || patterns == "all" {
		return all, nil
	}
	var out []Scenario
	for _, p := range strings.Split(patterns, ",") {
		found := false
		for _, s := range all {
			if !strings.HasPrefix(s.Name, strings.TrimSpace(p)) {
				continue
			}
			found = true
			if !slices.ContainsFunc(out, func(x Scenario) bool { return x.Name == s.Name }) {
				out = append(out, s)
			}
		}
		if !found {
			return nil, fmt.Errorf("no scenario matches %q", p)
		}
	}
	return out, nil
}
