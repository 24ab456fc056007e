package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
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
	d, err := newDemo([]string{"--count", "900", "--accounts", "20", "--latency", "2ms", "--jitter", "2ms", "--seed", "11", "--timeout", "90s",
		"--rate-limit", "180"},
		mapEnv(nil), &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := d.run(ctx); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	r := d.report
	calls := d.calls.snapshot()
	var creates []apiCall
	for _, c := range calls {
		if c.api == im.APICreate {
			creates = append(creates, c)
		}
	}
	if len(creates) == 0 || !r.backlogged {
		t.Fatalf("%d create calls, backlogged %v:\n%s", len(creates), r.backlogged, out.String())
	}

	// Every call chatgroupd counted reached the simulator, and no other.
	if int(r.creates) != len(creates) {
		t.Errorf("summary counts %.0f create calls, the call log %d", r.creates, len(creates))
	}
	// Start-up: the first call arrived before the sample that saw it, within one sampling
	// interval (plus scheduling slack).
	first := creates[0].arrived.Sub(d.start)
	if first > r.startup || r.startup-first > 400*time.Millisecond {
		t.Errorf("start-up delay %v, but the first create call arrived at %v", r.startup, first)
	}
	// The window leaves start-up out: it begins at or after the first call.
	if r.windowStart < first {
		t.Errorf("backlogged window starts at %v, before the first create call (%v): start-up is counted in the rate", r.windowStart, first)
	}
	// The backlogged window: calls answered inside it, by the log's clock.
	inWindow := 0
	for _, c := range creates {
		if at := c.done.Sub(d.start); at > r.windowStart && at <= r.windowEnd {
			inWindow++
		}
	}
	// chatgroupd counts a call when its answer arrives, the log when it was written: calls in
	// flight at the window's two edges may fall on either side.
	if diff := math.Abs(r.windowCalls - float64(inWindow)); diff > 10+0.02*float64(inWindow) {
		t.Errorf("summary: %.0f calls in the backlogged window, the call log %d", r.windowCalls, inWindow)
	}
	logRate := float64(inWindow) / (r.windowEnd - r.windowStart).Seconds()
	if math.Abs(r.rate-logRate) > 0.05*logRate {
		t.Errorf("summary rate %.1f/s, call log %.1f/s", r.rate, logRate)
	}
	if r.rate > 180*1.05 {
		t.Errorf("rate while backlogged %.1f/s is over the 180/s budget", r.rate)
	}
	// The printed figures are the report's.
	if !regexp.MustCompile(fmt.Sprintf(`(?m)^  create calls +%.0f `, r.creates)).MatchString(out.String()) {
		t.Errorf("summary does not print %.0f create calls:\n%s", r.creates, out.String())
	}
	for _, want := range []string{
		fmt.Sprintf(" %.1f/s ", r.rate),
		"start-up delay", "tail", "Next:", "dlq list --brokers " + d.brokers[0] + " --group chatgroupd-demo",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	// Latency: one sample per group created; quantiles are samples, so never beyond the run.
	if len(r.latencies) != d.sim.Stats().GroupsCreated {
		t.Errorf("%d latency samples for %d groups created", len(r.latencies), d.sim.Stats().GroupsCreated)
	}
	p50, p99 := quantile(r.latencies, 0.5), quantile(r.latencies, 0.99)
	if p50 <= 0 || p50 > p99 || p99 > r.drained {
		t.Errorf("p50 %v, p99 %v for a run that drained in %v", p50, p99, r.drained)
	}
	t.Logf("creates %.0f (log %d), start-up %v (first call %v), window %v..%v: %.0f calls (log %d), %.1f/s (log %.1f/s), tail %v, p50 %v p99 %v",
		r.creates, len(creates), r.startup, first, r.windowStart, r.windowEnd, r.windowCalls, inWindow, r.rate, logRate, r.tail, p50, p99)
}

// TestBuildReport: the backlogged window and its rate from hand-made samples.
func TestBuildReport(t *testing.T) {
	ms := time.Millisecond
	samples := []progressSample{
		{at: 100 * ms, produced: 1000, ended: 0, creates: 0},
		{at: 1000 * ms, produced: 1000, ended: 10, creates: 5},    // first call: start-up 1s
		{at: 3000 * ms, produced: 1000, ended: 400, creates: 405}, // backlog 600 > 200
		{at: 5000 * ms, produced: 1000, ended: 850, creates: 805}, // backlog 150: over
		{at: 6000 * ms, produced: 1000, ended: 1000, creates: 900},
	}
	r := buildReport(samples, 200, 6*time.Second)
	if !r.backlogged || r.startup != time.Second || r.windowEnd != 3*time.Second || r.windowCalls != 400 || r.rate != 200 || r.tail != 3*time.Second || r.creates != 900 {
		t.Fatalf("%+v", r)
	}
	if r := buildReport(samples[:2], 200, time.Second); r.backlogged {
		t.Fatalf("no window yet, but backlogged: %+v", r)
	}
	if got := quantile([]time.Duration{1, 2, 3, 4}, 0.99); got != 4 {
		t.Fatalf("p99 of 4 samples = %v", got)
	}
}
