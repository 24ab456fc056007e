package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
)

// binary is the chatgroupd binary the fault suite runs as separate processes, built once by
// TestMain when a real broker is configured; buildErr says why it is missing.
var (
	binary   string
	buildErr error
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Getenv(kafkatest.EnvBrokers) == "" {
		// Every test here skips: do not spend a build on it.
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "chatgroupd-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary, buildErr = build(dir)
	return m.Run()
}

// build compiles ./cmd/chatgroupd (race detector off: the suite measures recovery times, and the
// unit suite already runs the same code under -race).
func build(dir string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out := filepath.Join(dir, "chatgroupd")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/chatgroupd")
	cmd.Dir = ".."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/chatgroupd: %w\n%s", err, stderr.String())
	}
	return out, nil
}

// chatgroupd returns the built binary, failing the test when the build failed.
func chatgroupd(t *testing.T) string {
	t.Helper()
	if binary == "" {
		t.Fatalf("no chatgroupd binary: %v", buildErr)
	}
	return binary
}
