package integration

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestKafkaLocalScript checks the broker script's contract with its callers without starting a
// broker: usage errors exit 2, status of a state directory with no broker exits 1 and says so,
// and env reports the settings the caller gave it.
func TestKafkaLocalScript(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	state := t.TempDir()
	run := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command("../scripts/kafka-local.sh", args...)
		cmd.Env = append(cleanEnv(), "KAFKA_STATE_DIR="+state, "KAFKA_PORT=1", "KAFKA_VERSION=9.9.9")
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return string(out), 0
		case errors.As(err, &ee):
			return string(out), ee.ExitCode()
		default:
			t.Fatalf("kafka-local.sh %v: %v", args, err)
			return "", -1
		}
	}
	tests := []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "create-topic"},
		{[]string{"bogus"}, 2, "scripts/kafka-local.sh start"},
		{[]string{"status"}, 1, "not running"},
		{[]string{"stop"}, 0, ""},
		{[]string{"create-topic", "x"}, 1, "broker not running"},
		{[]string{"env"}, 0, "KAFKA_STATE_DIR=" + state},
		{[]string{"env"}, 0, "kafka-9.9.9/libs"},
	}
	for _, tc := range tests {
		out, code := run(tc.args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("kafka-local.sh %v: exit %d, want %d; output lacks %q:\n%s", tc.args, code, tc.code, tc.want, out)
		}
	}

	// A PID file naming a live process that is not this state directory's broker (another
	// broker, a reused PID) must be ignored: stop and kill leave it alone, status says not running.
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = other.Wait(); close(exited) }()
	t.Cleanup(func() { _ = other.Process.Kill(); <-exited })
	for _, tc := range []struct {
		args []string
		code int
	}{{[]string{"stop"}, 0}, {[]string{"kill"}, 0}, {[]string{"status"}, 1}} {
		// stop and kill drop a PID file that isn't theirs; write it again for each case.
		if err := os.WriteFile(filepath.Join(state, "broker.pid"), []byte(strconv.Itoa(other.Process.Pid)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		out, code := run(tc.args...)
		if code != tc.code || !strings.Contains(out, "not the broker of") {
			t.Errorf("kafka-local.sh %v with a foreign pid: exit %d, want %d; output:\n%s", tc.args, code, tc.code, out)
		}
		select {
		case <-exited:
			t.Fatalf("kafka-local.sh %v signalled a process that is not its broker", tc.args)
		default:
		}
	}
}

// TestKafkaLocalStateDirPerCheckout: without KAFKA_STATE_DIR the state lives in this checkout, not
// in a directory every checkout on the machine shares.
func TestKafkaLocalStateDirPerCheckout(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	cmd := exec.Command("../scripts/kafka-local.sh", "env")
	// Without the KAFKA_* settings scripts/test-kafka.sh exports for its own broker: the default
	// is what a developer gets.
	for _, kv := range cleanEnv() {
		if !strings.HasPrefix(kv, "KAFKA_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("env: %v\n%s", err, out)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if want := "KAFKA_STATE_DIR=" + filepath.Join(root, ".kafka-local"); !strings.Contains(string(out), want) {
		t.Fatalf("env output lacks %q:\n%s", want, out)
	}
}
