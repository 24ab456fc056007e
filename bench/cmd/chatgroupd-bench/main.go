// Command chatgroupd-bench runs the chatgroupd benchmarks against the IM simulator and an embedded
// Kafka (or the real broker in CHATGROUPD_TEST_BROKERS), with chatgroupd and the two peers as
// child processes, and prints markdown tables. See BENCHMARKS.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/chatgroupd/chatgroupd/bench/harness"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "chatgroupd-bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("chatgroupd-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		chatgroupd = fs.String("chatgroupd", "bin/chatgroupd", "chatgroupd binary (run as `<bin> run ...`); empty to skip")
		naive      = fs.String("naive", "bin/naive", "naive peer binary; empty to skip")
		watermill  = fs.String("watermill", "bin/watermill-peer", "Watermill peer binary; empty to skip")
		subjects   = fs.String("subjects", "chatgroupd,naive,watermill", "subjects to run, in order (the first is compared with the others): chatgroupd (its defaults), "+
			"chatgroupd-static and chatgroupd-kafka (--fleet-budget static or kafka), chatgroupd-lane and chatgroupd-nolane (--retry-lane on with a 2s --account-stall-limit, or off), naive, watermill")
		scenarios = fs.String("scenarios", "all", "comma-separated scenario name prefixes, or all: util, cpu, e2e, backlog, restart, fleet, stuck, mixed")
		full      = fs.Bool("full", false, "the full-size set (longer windows) used for BENCHMARKS.md")
		out       = fs.String("out", "bin/bench-out", "directory for subject logs and results.json")
		timeout   = fs.Duration("timeout", 45*time.Minute, "hard limit of the whole session")
		list      = fs.Bool("list", false, "list the scenarios and exit")
		simulator = fs.String("simulator", "bin/chatgroupd", "binary whose `imsim` subcommand serves the IM simulator in a process of its own (at the harness's priority); empty to serve it inside the harness")
		extra     = fs.String("extra", "", "space-separated flags added to every chatgroupd subject's command line (for example --log-level debug)")
		priority  = fs.Int("priority", 10, "raise the harness (simulator and embedded Kafka) this many nice levels above the subjects; needs root, 0 to keep everything equal")
		render    = fs.String("render", "", "print the tables of earlier results.json files (comma-separated; a later file's result replaces an earlier one's for the same scenario and subject) and exit")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *render != "" {
		results, err := loadResults(strings.Split(*render, ","))
		if err != nil {
			return err
		}
		harness.WriteTables(stdout, results)
		return nil
	}
	scale := harness.Quick
	if *full {
		scale = harness.Full
	}
	scs, err := harness.Select(harness.Scenarios(scale), *scenarios)
	if err != nil {
		return err
	}
	if *list {
		for _, s := range scs {
			fmt.Fprintf(stdout, "%-22s %-12s partitions=%d accounts=%d latency=%v limit=%g backlog=%d window=%v\n",
				s.Name, s.Kind, s.Partitions, s.Accounts, s.Latency, s.RateLimit, s.Backlog, s.Window)
		}
		return nil
	}
	subs, err := subjectsOf(*subjects, *chatgroupd, *naive, *watermill, stderr)
	if err != nil {
		return err
	}
	for i := range subs {
		if subs[i].Fleet {
			subs[i].Extra = append(subs[i].Extra, strings.Fields(*extra)...)
		}
	}
	if *priority > 0 {
		if err := harness.RaisePriority(*priority); err != nil {
			fmt.Fprintf(stderr, "not raising the harness's priority: %v\n", err)
		} else {
			for i := range subs {
				subs[i] = subs[i].Deprioritised(*priority)
			}
		}
	}
	broker, err := harness.StartBroker(nil)
	if err != nil {
		return err
	}
	defer broker.Close()
	var simCmd []string
	if *simulator != "" {
		if _, err := os.Stat(*simulator); err != nil {
			return fmt.Errorf("simulator: %w (build it, or pass -simulator= to serve it inside the harness)", err)
		}
		simCmd = []string{*simulator, "imsim"}
	}
	r, err := harness.NewRunner(harness.Config{Broker: broker, Subjects: subs, OutDir: *out, Progress: stderr, Simulator: simCmd})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	fmt.Fprintf(stderr, "broker: %s; logs in %s\n", broker.Kind(), r.OutDir())
	var results []harness.Result
	for _, sc := range scs {
		rs, err := r.Run(ctx, sc)
		results = append(results, rs...)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", sc.Name, err)
			if ctx.Err() != nil {
				break
			}
		}
	}
	harness.WriteTables(stdout, results)
	if b, err := json.MarshalIndent(results, "", "  "); err == nil {
		if err := os.WriteFile(filepath.Join(r.OutDir(), "results.json"), b, 0o644); err != nil {
			fmt.Fprintln(stderr, "results.json:", err)
		}
	}
	return ctx.Err()
}

// subjectsOf builds the subjects named in list (comma-separated), skipping those whose binary
// is not configured or missing.
func subjectsOf(list, chatgroupd, naive, watermill string, stderr io.Writer) ([]harness.Subject, error) {
	cg := func(extra ...string) harness.Subject {
		return harness.Subject{Command: []string{chatgroupd, "run"}, Extra: extra, Fleet: true}
	}
	known := map[string]harness.Subject{
		"chatgroupd":        cg(),
		"chatgroupd-static": cg("--fleet-budget", "static"),
		"chatgroupd-kafka":  cg("--fleet-budget", "kafka"),
		// The stall limit scaled down from 2m so that parking shows within a 20 s run.
		"chatgroupd-lane":   cg("--retry-lane", "on", "--account-stall-limit", "2s"),
		"chatgroupd-nolane": cg("--retry-lane", "off"),
		"naive":             {Command: []string{naive}},
		"watermill":         {Command: []string{watermill}},
	}
	var subs []harness.Subject
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		s, ok := known[name]
		if !ok {
			return nil, fmt.Errorf("unknown subject %q (want chatgroupd, chatgroupd-static, chatgroupd-kafka, chatgroupd-lane, chatgroupd-nolane, naive, watermill)", name)
		}
		if s.Command[0] == "" {
			continue
		}
		if _, err := os.Stat(s.Command[0]); err != nil {
			fmt.Fprintf(stderr, "skipping %s: %v\n", name, err)
			continue
		}
		s.Name = name
		subs = append(subs, s)
	}
	return subs, nil
}

// loadResults merges results files, keeping the first-seen order of scenarios and subjects.
func loadResults(paths []string) ([]harness.Result, error) {
	var out []harness.Result
	index := map[[2]string]int{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var rs []harness.Result
		if err := json.Unmarshal(b, &rs); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		for _, r := range rs {
			k := [2]string{r.Scenario, r.Subject}
			if i, ok := index[k]; ok {
				out[i] = r
				continue
			}
			index[k] = len(out)
			out = append(out, r)
		}
	}
	return out, nil
}
