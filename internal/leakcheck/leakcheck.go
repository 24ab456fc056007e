// Package leakcheck makes a test binary fail when its tests leave goroutines behind (goleak),
// with kafka-go's process-wide connection pool closed first. It is for tests only.
package leakcheck

import (
	"fmt"
	"os"
	"testing"
	"time"

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
	opts = append(opts, goleak.IgnoreAnyFunction(poolConnect))
	code := m.Run()
	if code == 0 {
		if err := find(opts...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	return code
}

// settle is how long find waits for goroutines that are ending. Closing the default pool does not
// stop a connection it is still setting up (its metadata refresh dials in a goroutine of its own):
// that goroutine ends when its handshake does, at the latest at kafka-go's dial deadline
// (Transport.DialTimeout, 5 s by default), counted from when the dial started, which can be just
// after the last test ended. A broker a test has just closed may accept the connection and never
// answer the handshake, so the whole deadline is spent: seen in CI, where a 5 s settle reported
// such a goroutine still in its ApiVersions round trip. Two dial timeouts cover a dial started
// while the first one ended; a leaked goroutine is still there after settle.
const settle = 2*dialTimeout + 2*time.Second

// poolConnect is the goroutine in which a kafka-go Transport sets up a pooled connection (dial,
// then the ApiVersions handshake). Nothing can stop it: closing the pool leaves it running, and
// the handshake's read has no deadline of its own, so against a broker a test has just closed it
// can outlive any settle (CI on session 8's main: still in the handshake's read 12 s after the
// last test). It belongs to kafka-go's pool, not to a test; a goroutine of our own, or a reader or
// writer left open, still fails the run.
const poolConnect = "github.com/segmentio/kafka-go.(*connGroup).grabConnOrConnect.func1"

// dialTimeout is kafka-go's default Transport.DialTimeout, the longest a pool's connection set-up
// lives.
const dialTimeout = 5 * time.Second

// find closes kafka.DefaultTransport's pool and looks for leaked goroutines, closing the pool
// again and looking again, for up to settle, while some are found.
func find(opts ...goleak.Option) error {
	deadline := time.Now().Add(settle)
	for {
		if t, ok := kafka.DefaultTransport.(*kafka.Transport); ok {
			t.CloseIdleConnections() // again: a connection set up since may have joined a new pool
		}
		err := goleak.Find(opts...)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
