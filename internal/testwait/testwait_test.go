package testwait

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// fatalTB records Fatalf instead of ending the goroutine, so For's failure path can be seen.
type fatalTB struct {
	testing.TB
	failed atomic.Bool
	msg    string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.failed.Store(true)
	f.msg = format
	panic(errStop)
}

var errStop = errors.New("stop")

func TestFor(t *testing.T) {
	n := 0
	For(t, time.Second, "three polls", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Errorf("polled %d times, want 3", n)
	}

	f := &fatalTB{TB: t}
	func() {
		defer func() {
			if r := recover(); r != errStop {
				t.Errorf("recovered %v", r)
			}
		}()
		For(f, 20*time.Millisecond, "never", func() bool { return false })
	}()
	if !f.failed.Load() {
		t.Error("For did not fail when the condition never held")
	}
}

func TestContext(t *testing.T) {
	ctx := Context(t, 10*time.Millisecond)
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("context not done after its bound")
	}
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Errorf("err %v", ctx.Err())
	}
	var inner context.Context
	t.Run("ends with the test", func(t *testing.T) { inner = Context(t, time.Hour) })
	if inner.Err() == nil {
		t.Error("context still live after its test ended")
	}
}
