package harness

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/internal/loadgen"
)

// Result is what one subject did in one scenario.
type Result struct {
	Scenario string
	Kind     Kind
	Subject  string
	Limit    float64 // calls/s budget
	Expected int     // events that had to end (be applied or dead-lettered)
	Ended    int     // events that did, when the run waited for them
	Complete bool    // every expected event ended within the time limit

	// From the simulator, over the whole run.
	Calls       int // create calls that reached it
	Accepted    int // admitted by its rate limiter
	RateLimited int // answered 60007 by its limiter: calls over the budget
	// OverLimitAt are the times (s after the first call, 0.1 s resolution) when 60007s appeared.
	OverLimitAt      []float64
	MaxWindow        int // highest number of create calls in any sliding second
	Created          int // groups created
	DuplicateCreates int // creates naming a group that already existed

	// Rates over the measured window (utilisation, backlog) or first call → done (cpu).
	Measured      time.Duration
	CallsPerSec   float64 // admitted create calls/s
	CreatedPerSec float64
	Utilisation   float64 // CallsPerSec ÷ Limit

	FirstCall time.Duration // process start → first create call
	Elapsed   time.Duration // process start → every event ended (cpu)
	CPU       time.Duration // user+system of the whole process life
	PeakRSS   int64         // bytes
	CleanExit bool          // exited 0 within the grace period after SIGTERM

	E2EP50, E2EP99 time.Duration
	E2ESamples     int

	RestartFirstCall  time.Duration // SIGKILL → first call of the restarted process
	RestartToFull     time.Duration // SIGKILL → a one-second window at 95% of the earlier rate
	RestartDuplicates int           // creates of already-existing groups after the restart

	// Fleet runs (KindFleet).
	Replicas    int           // processes run at once (1 for a subject without a fleet notion)
	InstanceIDs bool          // the replicas were given --instance-id
	Starts      int           // processes started, restarts included
	Stable      time.Duration // start → the group stable with every replica, before the backlog
	Drain       time.Duration // first admitted call → last
	Changes     []ChangeResult
	PerSecond   []int // admitted calls in each second of the drain
	// MaxWindowAtHandler is the highest number of create calls (admitted or not) whose
	// simulator handlers started within one second. MaxWindow counts them as they arrived (the
	// kernel's stamp), as a real API does; the two differ by the simulator's own starvation.
	MaxWindowAtHandler int
	// Arrivals (ms after the first admitted call) and ChangeTimes (s after it) keep what the
	// gaps were computed from.
	Arrivals    []int
	ChangeTimes []float64

	// Stuck-account runs (KindStuck): E2E* and CreatedPerSec are the other accounts'.
	StuckEvents int // events of the stuck account produced
	StuckCalls  int // its create calls (answered 50004 under the fault)
	DLQ         int // records dead-lettered

	// Mixed-type runs (KindMixed): one row per API.
	APIs []APIResult

	Log string // the subject's output
	Err string
}

// CPUPer100k is CPU-seconds per 100,000 events ended.
func (r Result) CPUPer100k() float64 {
	if r.Ended == 0 {
		return 0
	}
	return r.CPU.Seconds() * 100_000 / float64(r.Ended)
}

// Summary is a one-line description for progress output.
func (r Result) Summary() string {
	var b strings.Builder
	switch r.Kind {
	case KindUtil, KindBacklog:
		fmt.Fprintf(&b, "%.1f calls/s (util %.3f), max window %d, 60007s %d, peak RSS %s", r.CallsPerSec, r.Utilisation, r.MaxWindow, r.RateLimited, mb(r.PeakRSS))
	case KindCPU:
		fmt.Fprintf(&b, "%d/%d ended in %v, CPU %.2fs (%.2fs/100k), peak RSS %s", r.Ended, r.Expected, r.Elapsed.Round(time.Millisecond), r.CPU.Seconds(), r.CPUPer100k(), mb(r.PeakRSS))
	case KindE2E:
		fmt.Fprintf(&b, "%d samples, p50 %v, p99 %v", r.E2ESamples, r.E2EP50.Round(time.Millisecond), r.E2EP99.Round(time.Millisecond))
	case KindFleet:
		fmt.Fprintf(&b, "%d replicas, %d/%d ended, drain %v, util %.3f, max window %d (%d at the simulator's handlers), 60007s %d, changes %s", r.Replicas, r.Ended, r.Expected, r.Drain.Round(100*time.Millisecond), r.Utilisation, r.MaxWindow, r.MaxWindowAtHandler, r.RateLimited, changesText(r.Changes))
	case KindStuck:
		fmt.Fprintf(&b, "others %d/%d applied, %.1f/s, p50 %v, p99 %v; stuck account %d events, %d calls; %d dead-lettered", r.E2ESamples, r.Expected, r.CreatedPerSec, r.E2EP50.Round(time.Millisecond), r.E2EP99.Round(time.Millisecond), r.StuckEvents, r.StuckCalls, r.DLQ)
	case KindMixed:
		fmt.Fprintf(&b, "%d/%d ended", r.Ended, r.Expected)
		for _, a := range r.APIs {
			fmt.Fprintf(&b, "; %s %.1f/s (util %.3f, %d/%d s at ≥195), max window %d, 60007s %d", strings.TrimSuffix(a.API, "_contact_group"),
				a.CallsPerSec, a.Utilisation, a.FullSeconds, a.Seconds, a.MaxWindow, a.RateLimited)
		}
	case KindRestart:
		fmt.Fprintf(&b, "steady %.1f/s, first call %v and full rate %v after SIGKILL, %d duplicate creates", r.CallsPerSec, r.RestartFirstCall.Round(time.Millisecond), r.RestartToFull.Round(time.Millisecond), r.RestartDuplicates)
	}
	if len(r.OverLimitAt) > 0 {
		fmt.Fprintf(&b, "; 60007s at %v s after the first call", r.OverLimitAt)
	}
	if r.Err != "" {
		b.WriteString("; error: " + r.Err)
	}
	return b.String()
}

// changesText renders the gaps of a fleet run: "label: back at +Gap s (Below s below)".
func changesText(cs []ChangeResult) string {
	if len(cs) == 0 {
		return "none"
	}
	var parts []string
	for _, c := range cs {
		gap := fmt.Sprintf("back at ≥%.1f%% of the budget +%.1fs after", BackThreshold*100, c.Gap)
		switch {
		case c.Gap < 0:
			gap = fmt.Sprintf("not back at ≥%.1f%% before the next change or the end", BackThreshold*100)
		case c.Gap == 0:
			gap = "no dip"
		}
		parts = append(parts, fmt.Sprintf("%s at %.1fs: %s, %.1fs below", c.Label, c.At, gap, c.Below))
	}
	return strings.Join(parts, "; ")
}

func mb(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func kafkaMessage(r loadgen.Record) kafka.Message { return kafka.Message{Key: r.Key, Value: r.Value} }

// WriteTables prints one markdown table per kind of scenario, then the ratios of the first
// subject (chatgroupd) against each other one.
func WriteTables(w io.Writer, results []Result) {
	byKind := func(k Kind) []Result {
		var out []Result
		for _, r := range results {
			if r.Kind == k {
				out = append(out, r)
			}
		}
		return out
	}
	note := func(r Result) string {
		var n []string
		if at := r.OverLimitAt; len(at) > 0 {
			more := ""
			if len(at) > 6 {
				at, more = at[:6], " …"
			}
			n = append(n, fmt.Sprintf("60007s at %v%s s after the first call", at, more))
		}
		if r.Err != "" {
			n = append(n, "⚠ "+strings.ReplaceAll(r.Err, "|", "/"))
		}
		return strings.Join(n, "; ")
	}
	if rs := byKind(KindUtil); len(rs) > 0 {
		fmt.Fprintln(w, "\n### Utilisation of the create budget (6 partitions, backlog, limit 200/s)")
		fmt.Fprintln(w, "\n| scenario | subject | calls/s | utilisation | highest 1-s window | 60007 answers | created/s | note |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---|")
		for _, r := range rs {
			fmt.Fprintf(w, "| %s | %s | %.1f | %.3f | %d | %d | %.1f | %s |\n", r.Scenario, r.Subject, r.CallsPerSec, r.Utilisation, r.MaxWindow, r.RateLimited, r.CreatedPerSec, note(r))
		}
	}
	if rs := byKind(KindMixed); len(rs) > 0 {
		fmt.Fprintln(w, "\n### Mixed event types: each API against its own budget (backlog, 200/s per API)")
		fmt.Fprintln(w, "\n| scenario | subject | API | events | calls/s over its span | utilisation | seconds ≥195/s | highest 1-s window | 60007 answers | span | note |")
		fmt.Fprintln(w, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
		for _, r := range rs {
			if len(r.APIs) == 0 {
				fmt.Fprintf(w, "| %s | %s | – | %d | | | | | | | %s |\n", r.Scenario, r.Subject, r.Expected, note(r))
			}
			for _, a := range r.APIs {
				fmt.Fprintf(w, "| %s | %s | %s | %d | %.1f | %.3f | %d/%d | %d | %d | %.1fs | %s |\n", r.Scenario, r.Subject,
					a.API, a.Expected, a.CallsPerSec, a.Utilisation, a.FullSeconds, a.Seconds, a.MaxWindow, a.RateLimited, a.Span.Seconds(), note(r))
			}
		}
	}
	if rs := byKind(KindCPU); len(rs) > 0 {
		fmt.Fprintln(w, "\n### Cost: limiter off, zero-latency API")
		fmt.Fprintln(w, "\n| scenario | subject | events ended | wall time | events/s | CPU-s | CPU-s per 100k | peak RSS | duplicate creates | note |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
		for _, r := range rs {
			fmt.Fprintf(w, "| %s | %s | %d/%d | %.1fs | %.0f | %.2f | %.2f | %s | %d | %s |\n", r.Scenario, r.Subject, r.Ended, r.Expected, r.Elapsed.Seconds(), r.CreatedPerSec, r.CPU.Seconds(), r.CPUPer100k(), mb(r.PeakRSS), r.DuplicateCreates, note(r))
		}
	}
	if rs := byKind(KindE2E); len(rs) > 0 {
		fmt.Fprintln(w, "\n### End-to-end latency (occurred_at → applied by the simulator)")
		fmt.Fprintln(w, "\n| scenario | subject | samples | p50 | p99 | note |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---|")
		for _, r := range rs {
			fmt.Fprintf(w, "| %s | %s | %d | %v | %v | %s |\n", r.Scenario, r.Subject, r.E2ESamples, r.E2EP50.Round(time.Millisecond), r.E2EP99.Round(time.Millisecond), note(r))
		}
	}
	if rs := byKind(KindBacklog); len(rs) > 0 {
		fmt.Fprintln(w, "\n### Memory with a large backlog (running at the limit)")
		fmt.Fprintln(w, "\n| scenario | subject | calls/s | peak RSS | CPU-s | note |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---|")
		for _, r := range rs {
			fmt.Fprintf(w, "| %s | %s | %.1f | %s | %.2f | %s |\n", r.Scenario, r.Subject, r.CallsPerSec, mb(r.PeakRSS), r.CPU.Seconds(), note(r))
		}
	}
	if rs := byKind(KindRestart); len(rs) > 0 {
		fmt.Fprintln(w, "\n### SIGKILL at full rate, immediate restart")
		fmt.Fprintln(w, "\n| scenario | subject | rate before | first call after kill | full rate after kill | duplicate creates | note |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---|")
		for _, r := range rs {
			fmt.Fprintf(w, "| %s | %s | %.1f | %v | %v | %d | %s |\n", r.Scenario, r.Subject, r.CallsPerSec, r.RestartFirstCall.Round(100*time.Millisecond), r.RestartToFull.Round(100*time.Millisecond), r.RestartDuplicates, note(r))
		}
	}
	if rs := byKind(KindFleet); len(rs) > 0 {
		fmt.Fprintln(w, "\n### Fleet: replicas sharing one budget (6 partitions, limit 200/s, 20 ms API)")
		fmt.Fprintln(w, "\n| scenario | subject | replicas | events | drain | utilisation | highest 1-s window | 60007 answers | duplicate creates | membership changes (gap until ≥195/s) | note |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
		for _, r := range rs {
			reps := fmt.Sprint(r.Replicas)
			if r.InstanceIDs {
				reps += " (ids)"
			}
			fmt.Fprintf(w, "| %s | %s | %s | %d/%d | %.1fs | %.3f | %d | %d | %d | %s | %s |\n", r.Scenario, r.Subject, reps, r.Ended, r.Expected, r.Drain.Seconds(), r.Utilisation, r.MaxWindow, r.RateLimited, r.DuplicateCreates, changesText(r.Changes), note(r))
		}
	}
	if rs := byKind(KindStuck); len(rs) > 0 {
		fmt.Fprintln(w, "\n### One stuck account (50004) among 999 in the same partition")
		fmt.Fprintln(w, "\n| scenario | subject | others applied | others/s | others p50 | others p99 | stuck events | stuck calls | dead-lettered | note |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
		for _, r := range rs {
			fmt.Fprintf(w, "| %s | %s | %d/%d | %.1f | %v | %v | %d | %d | %d | %s |\n", r.Scenario, r.Subject, r.E2ESamples, r.Expected, r.CreatedPerSec, r.E2EP50.Round(time.Millisecond), r.E2EP99.Round(time.Millisecond), r.StuckEvents, r.StuckCalls, r.DLQ, note(r))
		}
	}
	writeRatios(w, results)
}

// writeRatios compares the first subject with every other one, scenario by scenario.
func writeRatios(w io.Writer, results []Result) {
	if len(results) == 0 {
		return
	}
	base := results[0].Subject
	var lines []string
	for _, b := range results {
		if b.Subject != base {
			continue
		}
		for _, o := range results {
			if o.Scenario != b.Scenario || o.Subject == base {
				continue
			}
			switch b.Kind {
			case KindUtil:
				if o.CallsPerSec > 0 {
					lines = append(lines, fmt.Sprintf("| %s | %s | calls/s ×%.2f |", b.Scenario, o.Subject, b.CallsPerSec/o.CallsPerSec))
				}
			case KindCPU:
				if b.CPUPer100k() > 0 && b.PeakRSS > 0 {
					lines = append(lines, fmt.Sprintf("| %s | %s | CPU per 100k ×%.2f, peak RSS ×%.2f (peer ÷ %s) |", b.Scenario, o.Subject, o.CPUPer100k()/b.CPUPer100k(), float64(o.PeakRSS)/float64(b.PeakRSS), base))
				}
			case KindBacklog:
				if b.PeakRSS > 0 {
					lines = append(lines, fmt.Sprintf("| %s | %s | peak RSS ×%.2f (peer ÷ %s), calls/s ×%.2f (%s ÷ peer) |", b.Scenario, o.Subject, float64(o.PeakRSS)/float64(b.PeakRSS), base, b.CallsPerSec/max(o.CallsPerSec, 1e-9), base))
				}
			}
		}
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(w, "\n### Ratios (%s against each peer)\n\n| scenario | peer | ratio |\n|---|---|---|\n", base)
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}
