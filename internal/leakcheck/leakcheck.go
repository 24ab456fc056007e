// Package leakcheck makes a test binary fail when its tests leave goroutines behind (goleak),
// with kafka-go's process-wide connection pool closed first. It is for tests only.
package leakcheck

import (
	"fmt"
	"os"
	"testing"

	"github.com/segmentio/kafka-go"
	"go.uber.org/goleak"
)

// VerifyTestMain runs the package's tests and fails the run when they leave a goroutine behind.
// kafka.DefaultTransport's idle connections are closed first: that pool is process-wide, like
// http.DefaultTransport, and helpers such as kafkatest.CreateTopic share it, so its goroutines
// belong to no test. A goroutine from a Transport, reader or writer that a test or the code
// under test made itself still fails the run. Call it from TestMain.
func VerifyTestMain(m *testing.M, opts ...goleak.Option) {
	os.Exit(Run(m, opts...))
}

// Run is VerifyTestMain for a TestMain with work left after the tests (removing what it set
// up): it returns the exit code instead of exiting.
func Run(m *testing.M, opts ...goleak.Option) int {
	code := m.Run()
	if t, ok := kafka.DefaultTransport.(*kafka.Transport); ok {
		t.CloseIdleConnections()
	}
	if code == 0 {
		if err := goleak.Find(opts...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	return code
}
