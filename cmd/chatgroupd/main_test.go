package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/internal/leakcheck"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
)

func TestRunCommands(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
		wantOut string
	}{
		{"no args", nil, "no command given", "Usage: chatgroupd"},
		{"help", []string{"help"}, errHelp.Error(), "Commands:"},
		{"unknown", []string{"frobnicate"}, `unknown command "frobnicate"`, ""},
		{"version", []string{"version"}, "", "chatgroupd dev"},
		{"run without brokers", []string{"run", "--sdkappid", "1"}, "--brokers is required", ""},
		{"run bad flag", []string{"run", "--no-such-flag"}, "unknown flag --no-such-flag", ""},
		{"run stray args", []string{"run", "--brokers", "a:1", "extra"}, "unexpected arguments", ""},
		{"run without key", []string{"run", "--brokers", "127.0.0.1:1", "--sdkappid", "1"}, "no secret key", ""},
		{"run without sdkappid", []string{"run", "--brokers", "127.0.0.1:1"}, "--sdkappid is required (an integer from 1 to", ""},
		{"run staying without an instance id", []string{"run", "--brokers", "127.0.0.1:1", "--sdkappid", "1", "--leave-on-shutdown=false"}, "--leave-on-shutdown=false needs --instance-id", ""},
		{"run locking without an instance id", []string{"run", "--brokers", "127.0.0.1:1", "--sdkappid", "1", "--instance-lock-dir", "/tmp/x"}, "--instance-lock-dir needs --instance-id", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(t.Context(), tt.args, mapEnv(nil), &out, &out)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("err = %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Fatalf("output %q lacks %q", out.String(), tt.wantOut)
			}
		})
	}
}

func TestParseFlagsEnvFallback(t *testing.T) {
	fs := newFlagSet("x", nil)
	var rate float64
	var topic string
	var win time.Duration
	floatFlag(fs, &rate, "rate-limit", 200, 1, 1000, "")
	stringFlag(fs, &topic, "topic", "t", topicName, "")
	durationFlag(fs, &win, "reorder-window", time.Second, time.Millisecond, time.Minute, "")
	getenv := mapEnv(map[string]string{"CHATGROUPD_RATE_LIMIT": "150", "CHATGROUPD_TOPIC": "from-env", "CHATGROUPD_REORDER_WINDOW": "3s"})
	if err := parseFlags(fs, []string{"--topic", "from-flag"}, getenv, io.Discard, help{}); err != nil {
		t.Fatal(err)
	}
	if rate != 150 || topic != "from-flag" || win != 3*time.Second {
		t.Fatalf("rate %v topic %q window %v: env must fill unset flags and flags must win", rate, topic, win)
	}
	for _, v := range []string{"fast", "0", "NaN", "5000"} {
		fs2 := newFlagSet("x", nil)
		floatFlag(fs2, &rate, "rate-limit", 200, 1, 1000, "")
		err := parseFlags(fs2, nil, mapEnv(map[string]string{"CHATGROUPD_RATE_LIMIT": v}), io.Discard, help{})
		if err == nil || !strings.Contains(err.Error(), "CHATGROUPD_RATE_LIMIT") || !strings.Contains(err.Error(), "--rate-limit") ||
			!strings.Contains(err.Error(), "from 1 to 1000") || exitCode(err) != 2 {
			t.Errorf("CHATGROUPD_RATE_LIMIT=%s: err = %v (exit %d), want exit 2 naming the variable, the flag and the range", v, err, exitCode(err))
		}
	}
}

func TestSecretKey(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "key")
	empty := filepath.Join(dir, "empty")
	os.WriteFile(good, []byte("  s3cret\n"), 0o600)
	os.WriteFile(empty, []byte("\n"), 0o600)
	if k, err := secretKey(good, mapEnv(map[string]string{"CHATGROUPD_SECRET_KEY": "env"})); err != nil || k != "s3cret" {
		t.Fatalf("file must win and be trimmed: %q %v", k, err)
	}
	if k, err := secretKey("", mapEnv(map[string]string{"CHATGROUPD_SECRET_KEY": "env"})); err != nil || k != "env" {
		t.Fatalf("env: %q %v", k, err)
	}
	for _, tc := range []struct{ file, want string }{{empty, "is empty"}, {filepath.Join(dir, "nope"), "no such file"}, {"", "no secret key"}} {
		if _, err := secretKey(tc.file, mapEnv(nil)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("secretKey(%q) err = %v, want %q", tc.file, err, tc.want)
		}
	}
}

func TestKafkaFlagsSASLPassword(t *testing.T) {
	k := kafkaFlags{brokers: "a:1, b:2 ,", saslMechanism: "SCRAM-SHA-256", saslUsername: "u"}
	c, secrets, err := k.conn(mapEnv(map[string]string{"CHATGROUPD_KAFKA_SASL_PASSWORD": "pw"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Brokers) != 2 || c.Dialer.SASLMechanism == nil || len(secrets) != 1 || secrets[0] != "pw" {
		t.Fatalf("brokers %v sasl %v secrets %q", c.Brokers, c.Dialer.SASLMechanism, secrets)
	}
	k.saslPasswordFile = filepath.Join(t.TempDir(), "missing")
	if _, _, err := k.conn(mapEnv(nil)); err == nil || !strings.Contains(err.Error(), "sasl password file") {
		t.Fatalf("err = %v", err)
	}
}

// TestDemoSmall runs the whole demo path — embedded Kafka, simulator with faults, load with every
// kind of record, the real pipeline — with small numbers, and requires its invariants to hold.
func TestDemoSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("demo runs for a few seconds")
	}
	var out bytes.Buffer
	ctx := testwait.Context(t, 2*time.Minute)
	err := run(ctx, []string{"demo", "--count", "400", "--accounts", "10", "--latency", "1ms", "--jitter", "2ms",
		"--fault-rate", "0.05", "--duplicate-rate", "0.05", "--invalid-rate", "0.05", "--seed", "7", "--timeout", "90s"},
		mapEnv(nil), &out, &out)
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	// The default load is the whole lifecycle: every type is applied and counted.
	for _, want := range []string{"SUMMARY", "reason=invalid", "reason=rejected", "code 51010", "duplicate creates", "OK: nothing lost",
		"    renamed ", "    contacts_added ", "    contacts_removed ", "    deleted ", "update calls", "delete calls"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}

func TestDemoBadFlags(t *testing.T) {
	for _, args := range [][]string{{"--count", "0"}, {"--partitions", "0"}, {"--fault-rate", "0.9"}, {"--invalid-rate", "0.9"}, {"--mix", "created=0,deleted=1"}, {"--mix", "archived=1"}} {
		err := run(t.Context(), append([]string{"demo"}, args...), mapEnv(nil), &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil {
			t.Errorf("demo %v: no error", args)
		}
	}
}

func TestExitCode(t *testing.T) {
	if c := exitCode(errors.New("plain")); c != 1 {
		t.Fatalf("plain error exit %d, want 1", c)
	}
	if c := exitCode(fmt.Errorf("wrapped: %w", &exitError{code: 2, err: errors.New("invariants")})); c != 2 {
		t.Fatalf("exitError exit %d, want 2", c)
	}
}

// TestMain fails the run when a test leaves a goroutine behind (a service, demo or server not
// shut down).
func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }
