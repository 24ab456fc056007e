// Command chatgroupd keeps Tencent Cloud IM conversation groups in step with product events on
// Kafka. One binary, several subcommands; see `chatgroupd help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, errHelp) {
		fmt.Fprintln(os.Stderr, "chatgroupd:", err)
		os.Exit(exitCode(err))
	}
}

// env is how commands read the environment; tests pass a map's lookup.
type env func(string) string

// command is one subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, getenv env, stdout, stderr io.Writer) error
}

func commands() map[string]command {
	return map[string]command{
		"run":     {"consume events and apply them to the IM API (the service)", runService},
		"demo":    {"the whole pipeline on this machine: embedded Kafka, IM simulator, load, summary", runDemo},
		"imsim":   {"a local simulator of the IM conversation-group REST API", runIMSim},
		"imcheck": {"probe the real IM API's undocumented behaviours and compare them with imsim", runIMCheck},
		"dlq":     {"inspect (list) and replay dead-lettered events", runDLQ},
		"lane":    {"list the accounts parked in the retry lane", runLane},
		"loadgen": {"produce realistic events to a Kafka topic", runLoadgen},
		"version": {"print the version", runVersion},
	}
}

var errHelp = errors.New("help requested")

// exitError carries a specific exit status (e.g. demo invariants broken).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

func run(ctx context.Context, args []string, getenv env, stdout, stderr io.Writer) error {
	cmds := commands()
	if len(args) == 0 {
		usage(stderr, cmds)
		return &exitError{code: 2, err: errors.New("no command given; see 'chatgroupd --help'")}
	}
	if args[0] == "help" || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		if args[0] == "help" && len(args) > 1 {
			// `chatgroupd help run` is `chatgroupd run --help`; `help dlq list` is `dlq list --help`.
			if _, ok := cmds[args[1]]; !ok {
				return &exitError{code: 2, err: fmt.Errorf("help: unknown command %q; see 'chatgroupd --help'", args[1])}
			}
			return run(ctx, append(append([]string{}, args[1:]...), "--help"), getenv, stdout, stderr)
		}
		usage(stdout, cmds)
		return errHelp
	}
	c, ok := cmds[args[0]]
	if !ok {
		return &exitError{code: 2, err: fmt.Errorf("unknown command %q; see 'chatgroupd --help'", args[0])}
	}
	return c.run(ctx, args[1:], getenv, stdout, stderr)
}

func usage(w io.Writer, cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("Usage: chatgroupd <command> [flags]\n\nCommands:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  %-8s %s\n", n, cmds[n].summary)
	}
	b.WriteString("\nEvery flag --foo-bar may also be set as CHATGROUPD_FOO_BAR; flags win.\n")
	b.WriteString("Run `chatgroupd help <command>` (or `chatgroupd <command> --help`) for what a command does,\n")
	b.WriteString("its flags and their ranges, its environment and an example.\n\n")
	b.WriteString("Example:\n  chatgroupd demo\n")
	io.WriteString(w, b.String())
}

func runVersion(_ context.Context, args []string, getenv env, stdout, _ io.Writer) error {
	fs := newFlagSet("version", nil)
	if err := parseFlags(fs, args, getenv, stdout, help{
		usage:   "chatgroupd version",
		about:   "Prints the version chatgroupd was built as (make build and docker build set it from git describe).",
		example: []string{"chatgroupd version"},
	}); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "chatgroupd", version)
	return nil
}
