package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// flagCommands builds the FlagSet of every command line that takes flags, as the command itself
// does. TestFlagCommandsCoverEveryCommand keeps it complete.
func flagCommands() map[string]func() *flag.FlagSet {
	return map[string]func() *flag.FlagSet{
		"run":        func() *flag.FlagSet { var f serviceFlags; return newRunFlags(&f) },
		"demo":       func() *flag.FlagSet { var f demoFlags; return newDemoFlags(&f) },
		"imsim":      func() *flag.FlagSet { var f imsimFlags; return newIMSimFlags(&f) },
		"imcheck":    func() *flag.FlagSet { var f imcheckFlags; return newIMCheckFlags(&f) },
		"loadgen":    func() *flag.FlagSet { var f loadgenFlags; return newLoadgenFlags(&f) },
		"dlq list":   func() *flag.FlagSet { var o dlqOptions; return newDLQFlags(&o, "list") },
		"dlq replay": func() *flag.FlagSet { var o dlqOptions; return newDLQFlags(&o, "replay") },
		"lane list":  func() *flag.FlagSet { var o laneOptions; return newLaneFlags(&o) },
	}
}

// TestFlagCommandsCoverEveryCommand: a new command must join flagCommands (or be flagless like
// version), so TestEveryFlagRejectsBadValues sees its flags; and every flag its --help shows
// must be one flagCommands knows, so a flag declared outside the builder can't slip past.
func TestFlagCommandsCoverEveryCommand(t *testing.T) {
	fc := flagCommands()
	for name := range commands() {
		if name == "version" || name == "dlq" || name == "lane" {
			continue
		}
		if fc[name] == nil {
			t.Errorf("command %q is missing from flagCommands", name)
		}
	}
	for cmd, build := range fc {
		known := map[string]bool{}
		build().VisitAll(func(f *flag.Flag) { known[f.Name] = true })
		for _, hf := range helpFlags(t, strings.Fields(cmd)) {
			if !known[hf.name] {
				t.Errorf("%s --help shows --%s, which flagCommands does not build", cmd, hf.name)
			}
		}
	}
}

// badValues returns values outside what v accepts: zero, negative, NaN, huge and wrong-typed,
// as far as each is outside its range.
func badValues(t *testing.T, name string, v flag.Value) []string {
	t.Helper()
	switch r := v.(type) {
	case *intValue:
		out := []string{"abc", "1.5", "NaN", "1e9x"}
		if r.lo > math.MinInt64 {
			out = append(out, strconv.FormatInt(r.lo-1, 10))
		}
		if r.hi < math.MaxInt64 {
			out = append(out, strconv.FormatInt(r.hi+1, 10))
		}
		out = append(out, "99999999999999999999") // overflows int64
		if r.lo > 0 {
			out = append(out, "0")
		}
		if r.lo > -5 {
			out = append(out, "-5")
		}
		return out
	case *uintValue:
		return []string{"abc", "-1", "NaN", "1e30", "99999999999999999999"}
	case *floatValue:
		out := []string{"abc", "NaN", "Inf", "-Inf", "1e309", strconv.FormatFloat(r.hi*10+1, 'g', -1, 64)}
		if r.lo > 0 {
			out = append(out, "0")
		}
		if r.lo > -5 {
			out = append(out, "-5")
		}
		return out
	case *durationValue:
		out := []string{"abc", "5", "NaN", (r.hi + time.Second).String(), "9999999999h"}
		if r.lo > 0 {
			out = append(out, "0s", (r.lo - time.Nanosecond).String())
		}
		if r.lo >= 0 {
			out = append(out, "-1s")
		}
		return out
	case *stringValue:
		switch r.kind {
		case oneOf:
			return []string{"bogus"}
		case nonEmpty:
			return []string{"", " "}
		case hostPort:
			return []string{"no-port", "127.0.0.1:99999"}
		case hostPortList:
			return []string{"a:1,b", ":9092", "x"}
		case topicName:
			return []string{"bad topic!", strings.Repeat("t", 250)}
		case checked:
			return []string{"!!bad!!"}
		case anyString:
			return nil // free text: paths, filters; checked where used
		}
	case *boolValue:
		return []string{"maybe", "2"}
	}
	t.Errorf("--%s is declared without a range (%T): declare it with intFlag, floatFlag, durationFlag, stringFlag, checkedFlag or boolFlag", name, v)
	return nil
}

// TestEveryFlagRejectsBadValues feeds every flag of every command values outside its declared
// range (0, negative, NaN, huge, wrong type), on the command line and in its CHATGROUPD_*
// variable: each must fail with exit status 2 and one line naming the flag and what it accepts,
// with no usage dump, before anything starts.
func TestEveryFlagRejectsBadValues(t *testing.T) {
	checkedN := 0
	for cmd, build := range flagCommands() {
		var names []string
		values := map[string]flag.Value{}
		build().VisitAll(func(f *flag.Flag) { names = append(names, f.Name); values[f.Name] = f.Value })
		sort.Strings(names)
		for _, name := range names {
			v := values[name]
			for i, bad := range badValues(t, name, v) {
				args := append(strings.Fields(cmd), "--"+name+"="+bad)
				check := func(how string, args []string, getenv env) {
					t.Helper()
					var stdout, stderr bytes.Buffer
					ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second) // called per flag: cancelled at once
					defer cancel()
					err := run(ctx, args, getenv, &stdout, &stderr)
					checkedN++
					if err == nil {
						t.Errorf("%s %s: accepted", cmd, how)
						return
					}
					msg := err.Error()
					allowed := ""
					if r, ok := v.(ranged); ok {
						allowed = r.allowed()
					}
					if exitCode(err) != 2 || strings.Contains(msg, "\n") || !strings.Contains(msg, "--"+name) || !strings.Contains(msg, allowed) {
						t.Errorf("%s %s: exit %d, error %q; want exit 2 and one line naming --%s and %q", cmd, how, exitCode(err), msg, name, allowed)
					}
					if stdout.Len()+stderr.Len() > 0 {
						t.Errorf("%s %s printed more than the error:\n%s%s", cmd, how, stdout.String(), stderr.String())
					}
				}
				check("--"+name+"="+strconv.Quote(bad), args, mapEnv(nil))
				// An empty variable counts as unset, so "" is tried on the command line only.
				// dlq replay's --yes and --force are never read from the environment (a
				// confirmation must be typed), so their variables are not tried.
				fromEnv := !(cmd == "dlq replay" && (name == "yes" || name == "force"))
				if fromEnv && strings.TrimSpace(bad) != "" && (i == 0 || bad == "NaN" || bad == "-5") {
					check(envName(name)+"="+strconv.Quote(bad), strings.Fields(cmd), mapEnv(map[string]string{envName(name): bad}))
				}
			}
		}
	}
	if checkedN < 300 {
		t.Fatalf("only %d bad values tried; the flag table is broken", checkedN)
	}
	t.Logf("%d bad flag values refused", checkedN)
}

// TestBadFlagExitsTwoOneLine runs the real main (this test binary re-executed) with a bad value
// and an unknown flag: exit status 2, exactly one line on stderr, nothing on stdout.
func TestBadFlagExitsTwoOneLine(t *testing.T) {
	if os.Getenv("CHATGROUPD_TEST_MAIN") == "1" {
		os.Args = append([]string{"chatgroupd"}, strings.Fields(os.Getenv("CHATGROUPD_TEST_ARGS"))...)
		main()
		os.Exit(0)
	}
	for _, args := range []string{"run --rate-limit -5", "run --rate-limit NaN", "demo --rate-limit 0", "run --sdkappid -3", "imsim --no-such-flag", "frobnicate", "run --kafka-dial-timeout 3"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestBadFlagExitsTwoOneLine$")
		cmd.Env = append(os.Environ(), "CHATGROUPD_TEST_MAIN=1", "CHATGROUPD_TEST_ARGS="+args)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
		if code != 2 || len(lines) != 1 || stdout.Len() > 0 || !strings.Contains(lines[0], "--help") {
			t.Errorf("chatgroupd %s: exit %d, stdout %q, stderr %q; want exit 2 and one line pointing at --help", args, code, stdout.String(), stderr.String())
		}
	}
}

// TestHelpEveryCommand: `chatgroupd help X`, `X --help` and `X -h` print the same help — what
// the command does, its flags, the environment and an example — to stdout, and succeed.
func TestHelpEveryCommand(t *testing.T) {
	// Every command, so a new one gets the same help or fails here.
	var cmds []string
	for name := range commands() {
		if name == "dlq" {
			cmds = append(cmds, "dlq list", "dlq replay")
			continue
		}
		if name == "lane" {
			cmds = append(cmds, "lane list")
			continue
		}
		cmds = append(cmds, name)
	}
	sort.Strings(cmds)
	for _, c := range cmds {
		var outs []string
		for _, args := range [][]string{
			append(strings.Fields(c), "--help"),
			append(strings.Fields(c), "-h"),
			append([]string{"help"}, strings.Fields(c)...),
		} {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), args, mapEnv(nil), &stdout, &stderr)
			if err != errHelp || exitCode(err) == 2 {
				t.Errorf("%v: err %v, want errHelp", args, err)
			}
			out := stdout.String()
			for _, want := range []string{"Usage: chatgroupd " + c, "Environment:", "CHATGROUPD_FOO_BAR", "Example:\n"} {
				if !strings.Contains(out, want) {
					t.Errorf("%v: help lacks %q:\n%s", args, want, out)
				}
			}
			if _, ex, _ := strings.Cut(out, "Example:\n"); !strings.Contains(ex, "chatgroupd "+c) {
				t.Errorf("%v: the example does not run chatgroupd %s:\n%s", args, c, out)
			}
			if c != "version" && !strings.Contains(out, "Flags:\n") {
				t.Errorf("%v: help lacks its flags:\n%s", args, out)
			}
			if strings.Contains(out, "chatgroupd "+version) {
				t.Errorf("%v printed the version instead of help", args)
			}
			outs = append(outs, out)
		}
		if outs[0] != outs[1] || outs[0] != outs[2] {
			t.Errorf("%s: --help, -h and help print different texts", c)
		}
	}
	var stdout bytes.Buffer
	if err := run(t.Context(), []string{"help", "nosuch"}, mapEnv(nil), &stdout, &stdout); exitCode(err) != 2 {
		t.Errorf("help nosuch: %v", err)
	}
	// dlq alone: its subcommands on --help; a missing or unknown subcommand is a usage error.
	for _, args := range [][]string{{"dlq", "--help"}, {"help", "dlq"}, {"dlq", "help"}} {
		var out, errOut bytes.Buffer
		if err := run(t.Context(), args, mapEnv(nil), &out, &errOut); err != errHelp || !strings.Contains(out.String(), "chatgroupd dlq <list|replay>") {
			t.Errorf("%v: err %v, stdout %q", args, err, out.String())
		}
	}
	for _, args := range [][]string{{"dlq"}, {"dlq", "purge"}} {
		var out bytes.Buffer
		err := run(t.Context(), args, mapEnv(nil), &out, &out)
		if exitCode(err) != 2 || out.Len() > 0 || !strings.Contains(err.Error(), "--help") {
			t.Errorf("%v: exit %d, err %v, output %q; want exit 2, one line", args, exitCode(err), err, out.String())
		}
	}
}

// TestInsecureTransportsRefused: an http:// IM endpoint off loopback and SASL PLAIN without TLS
// are refused unless explicitly allowed; an empty SASL password is refused.
func TestInsecureTransportsRefused(t *testing.T) {
	base := []string{"run", "--brokers", "127.0.0.1:1", "--sdkappid", "1"}
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want string // "" means the check passes (the command goes on to fail on the missing key)
	}{
		{"http remote", []string{"--im-endpoint", "http://im.example.com"}, nil, "http:// is allowed only on loopback"},
		{"http remote ip", []string{"--im-endpoint", "http://10.0.0.1:8080"}, nil, "http:// is allowed only on loopback"},
		{"http remote allowed", []string{"--im-endpoint", "http://10.0.0.1:8080", "--im-allow-insecure-http"}, nil, ""},
		{"http loopback", []string{"--im-endpoint", "http://127.0.0.1:8080"}, nil, ""},
		{"http localhost", []string{"--im-endpoint", "http://localhost:8080"}, nil, ""},
		{"http ipv6 loopback", []string{"--im-endpoint", "http://[::1]:8080"}, nil, ""},
		{"https remote", []string{"--im-endpoint", "https://im.example.com"}, nil, ""},
		{"bad scheme", []string{"--im-endpoint", "ftp://im.example.com"}, nil, "--im-endpoint"},
		{"plain no tls", []string{"--kafka-sasl-mechanism", "plain", "--kafka-sasl-username", "u"}, map[string]string{"CHATGROUPD_KAFKA_SASL_PASSWORD": "pw"}, "sends the password in clear text"},
		{"plain no tls allowed", []string{"--kafka-sasl-mechanism", "plain", "--kafka-sasl-username", "u", "--kafka-sasl-allow-plaintext"}, map[string]string{"CHATGROUPD_KAFKA_SASL_PASSWORD": "pw"}, ""},
		{"plain tls", []string{"--kafka-sasl-mechanism", "plain", "--kafka-sasl-username", "u", "--kafka-tls"}, map[string]string{"CHATGROUPD_KAFKA_SASL_PASSWORD": "pw"}, ""},
		{"scram no user", []string{"--kafka-sasl-mechanism", "scram-sha-256"}, map[string]string{"CHATGROUPD_KAFKA_SASL_PASSWORD": "pw"}, "needs --kafka-sasl-username"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(t.Context(), append(append([]string{}, base...), tc.args...), mapEnv(tc.env), &out, &out)
			if tc.want == "" {
				if err == nil || !strings.Contains(err.Error(), "no secret key") {
					t.Fatalf("err = %v, want the flags accepted (and the missing key reported)", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || exitCode(err) != 2 {
				t.Fatalf("err = %v (exit %d), want exit 2 and %q", err, exitCode(err), tc.want)
			}
		})
	}
	// An empty SASL password: from no variable, or from a blank file.
	k := kafkaFlags{brokers: "a:1", saslMechanism: "scram-sha-512", saslUsername: "u"}
	if _, _, err := k.conn(mapEnv(nil)); err == nil || !strings.Contains(err.Error(), "SASL password is empty") {
		t.Errorf("no password: err = %v", err)
	}
	blank := t.TempDir() + "/pw"
	if err := os.WriteFile(blank, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	k.saslPasswordFile = blank
	if _, _, err := k.conn(mapEnv(map[string]string{"CHATGROUPD_KAFKA_SASL_PASSWORD": "env"})); err == nil || !strings.Contains(err.Error(), "SASL password is empty") {
		t.Errorf("blank password file: err = %v", err)
	}
}

// TestKafkaDialTimeoutHonoured: a "broker" that accepts TCP and never answers (a proxy, a wrong
// port) must fail dlq list and loadgen within --kafka-dial-timeout, naming the broker. Before,
// kafka-go's client sat out its own 15 s request timeout whatever the flag said.
func TestKafkaDialTimeoutHonoured(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	silent := ln.Addr().String()
	for _, args := range [][]string{
		{"dlq", "list", "--brokers", silent, "--kafka-dial-timeout", "300ms"},
		{"loadgen", "--brokers", silent + ",127.0.0.1:1", "--kafka-dial-timeout", "300ms", "--count", "1"},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		start := time.Now()
		err := run(ctx, args, mapEnv(nil), io.Discard, io.Discard)
		took := time.Since(start)
		cancel()
		if err == nil || !strings.Contains(err.Error(), silent) || !strings.Contains(err.Error(), "--kafka-dial-timeout 300ms") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: err = %v; want one line naming the broker and the timeout", args, err)
		}
		// Not a timing assertion on the timeout itself: only "was the flag used at all" (the old
		// behaviour took the client's fixed 15 s).
		if took > 10*time.Second {
			t.Errorf("%v took %v with --kafka-dial-timeout 300ms", args, took)
		}
	}
}

// TestSkipVerifyWarned: --kafka-tls-insecure-skip-verify (and an allowed plaintext SASL PLAIN)
// are accepted but said out loud in the log of every Kafka command.
func TestSkipVerifyWarned(t *testing.T) {
	for _, args := range [][]string{
		{"loadgen", "--brokers", "127.0.0.1:1", "--kafka-tls", "--kafka-tls-insecure-skip-verify", "--count", "1"},
		{"dlq", "list", "--brokers", "127.0.0.1:1", "--kafka-tls", "--kafka-tls-insecure-skip-verify"},
	} {
		var stderr bytes.Buffer
		_ = run(t.Context(), args, mapEnv(nil), io.Discard, &stderr)
		if !strings.Contains(stderr.String(), "not verified") {
			t.Errorf("%v: no warning about unverified certificates in:\n%s", args, stderr.String())
		}
	}
	var stderr bytes.Buffer
	_ = run(t.Context(), []string{"loadgen", "--brokers", "127.0.0.1:1", "--kafka-sasl-mechanism", "plain",
		"--kafka-sasl-username", "u", "--kafka-sasl-allow-plaintext", "--count", "1"},
		mapEnv(map[string]string{"CHATGROUPD_KAFKA_SASL_PASSWORD": "pw-0123456789"}), io.Discard, &stderr)
	if !strings.Contains(stderr.String(), "clear text") || strings.Contains(stderr.String(), "pw-0123456789") {
		t.Errorf("plaintext SASL: want a warning and no password in:\n%s", stderr.String())
	}
}

// TestDLQReplayUnreachableNoTable: with no broker answering, dlq replay fails before printing
// anything — no summary table of zeros that reads like an empty DLQ.
func TestDLQReplayUnreachableNoTable(t *testing.T) {
	for _, args := range [][]string{
		{"dlq", "replay", "--brokers", "127.0.0.1:1", "--dry-run"},
		{"dlq", "replay", "--brokers", "127.0.0.1:1", "--dry-run", "--output", "json"},
		{"dlq", "list", "--brokers", "127.0.0.1:1"},
	} {
		var stdout bytes.Buffer
		err := run(t.Context(), args, mapEnv(nil), &stdout, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") || stdout.Len() > 0 {
			t.Errorf("%v: err %v, stdout %q; want the broker's error and nothing printed", args, err, stdout.String())
		}
	}
}
