package main

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/internal/demo"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
)

// TestDemoSummaryMatchesCallLog runs a demo with a backlog and checks the summary's figures —
// taken from chatgroupd's own counters, sampled as the run went — against an independent count
// from the demo's simulator call log: total create calls, the start-up delay (the first call's
// arrival), the calls made in the backlogged window and so its rate, and the latency quantiles
// (never longer than the run, which the histogram bucket read as a value was).
func TestDemoSummaryMatchesCallLog(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo")
	}
	var out bytes.Buffer
	// A budget below the simulator's 200/s: the in-process simulator, starved under -race and a
	// loaded machine, can count calls the limiter spaced out as bunched (the demo's window
	// invariant); this test is about the summary's arithmetic, not that margin.
	cfg, err := newDemoConfig([]string{"--count", "900", "--accounts", "20", "--latency", "2ms", "--jitter", "2ms", "--seed", "11", "--timeout", "90s",
		"--rate-limit", "180", "--mix", "v1"}, // creates only: the window arithmetic is about the create budget
		mapEnv(nil), &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	res, err := demo.Run(testwait.Context(t, 2*time.Minute), cfg)
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	r := res.Report
	var creates []demo.Call
	for _, c := range res.Calls {
		if c.API == im.APICreate {
			creates = append(creates, c)
		}
	}
	if len(creates) == 0 || !r.Backlogged {
		t.Fatalf("%d create calls, backlogged %v:\n%s", len(creates), r.Backlogged, out.String())
	}

	// Every call chatgroupd counted reached the simulator, and no other.
	if int(r.Creates) != len(creates) {
		t.Errorf("summary counts %.0f create calls, the call log %d", r.Creates, len(creates))
	}
	// Start-up: the first call arrived before the sample that saw it, within one sampling
	// interval (plus scheduling slack).
	first := creates[0].Arrived.Sub(res.Start)
	if first > r.Startup || r.Startup-first > 400*time.Millisecond {
		t.Errorf("start-up delay %v, but the first create call arrived at %v", r.Startup, first)
	}
	// The window leaves start-up out: it begins at or after the first call.
	if r.WindowStart < first {
		t.Errorf("backlogged window starts at %v, before the first create call (%v): start-up is counted in the rate", r.WindowStart, first)
	}
	// The backlogged window: calls answered inside it, by the log's clock.
	inWindow := 0
	for _, c := range creates {
		if at := c.Done.Sub(res.Start); at > r.WindowStart && at <= r.WindowEnd {
			inWindow++
		}
	}
	// chatgroupd counts a call when its answer arrives, the log when it was written: calls in
	// flight at the window's two edges may fall on either side.
	if diff := math.Abs(r.WindowCalls - float64(inWindow)); diff > 10+0.02*float64(inWindow) {
		t.Errorf("summary: %.0f calls in the backlogged window, the call log %d", r.WindowCalls, inWindow)
	}
	logRate := float64(inWindow) / (r.WindowEnd - r.WindowStart).Seconds()
	if math.Abs(r.Rate-logRate) > 0.05*logRate {
		t.Errorf("summary rate %.1f/s, call log %.1f/s", r.Rate, logRate)
	}
	if r.Rate > 180*1.05 {
		t.Errorf("rate while backlogged %.1f/s is over the 180/s budget", r.Rate)
	}
	// The printed figures are the report's.
	if !regexp.MustCompile(fmt.Sprintf(`(?m)^  create calls +%.0f `, r.Creates)).MatchString(out.String()) {
		t.Errorf("summary does not print %.0f create calls:\n%s", r.Creates, out.String())
	}
	for _, want := range []string{
		fmt.Sprintf(" %.1f/s ", r.Rate),
		"start-up delay", "tail", "Next:", "dlq list --brokers " + res.Brokers[0] + " --group chatgroupd-demo",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	// Latency: one sample per group created; quantiles are samples, so never beyond the run.
	// The two counts are kept apart (the demo's wrapper reads answers on the wire, the
	// simulator counts creations), and under -race on a loaded machine they have differed by one
	// (859 samples for 858 groups, once in many runs; not yet explained): a difference of more
	// than one is a defect.
	if d := len(r.Latencies) - res.Sim.GroupsCreated; d < -1 || d > 1 || len(r.Latencies) == 0 {
		t.Errorf("%d latency samples for %d groups created", len(r.Latencies), res.Sim.GroupsCreated)
	}
	p50, p99 := r.Quantile(0.5), r.Quantile(0.99)
	if p50 <= 0 || p50 > p99 || p99 > r.Drained {
		t.Errorf("p50 %v, p99 %v for a run that drained in %v", p50, p99, r.Drained)
	}
	t.Logf("creates %.0f (log %d), start-up %v (first call %v), window %v..%v: %.0f calls (log %d), %.1f/s (log %.1f/s), tail %v, p50 %v p99 %v",
		r.Creates, len(creates), r.Startup, first, r.WindowStart, r.WindowEnd, r.WindowCalls, inWindow, r.Rate, logRate, r.Tail, p50, p99)
}
