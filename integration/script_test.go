package integration

import (
	"errors"
	"os/exec"
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
}
