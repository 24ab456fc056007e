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
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr, cmds)
		if len(args) == 0 {
			return errors.New("no command given")
		}
		return errHelp
	}
	c, ok := cmds[args[0]]
	if !ok {
		usage(stderr, cmds)
		return fmt.Errorf("unknown command %q", args[0])
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
	b.WriteString("Run `chatgroupd <command> --help` for a command's flags.\n")
	io.WriteString(w, b.String())
}

func runVersion(_ context.Context, _ []string, _ env, stdout, _ io.Writer) error {
	fmt.Fprintln(stdout, "chatgroupd", version)
	return nil
}
