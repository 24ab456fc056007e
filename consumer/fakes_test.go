package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptrace"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/chatgroupd/chatgroupd/dispatcher"
	"github.com/chatgroupd/chatgroupd/dlq"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
)

// call is one Dispatch the fake saw.
type call struct {
	ID        string
	Account   string
	Seq       int64
	Replay    int
	Uncertain bool
}

// fakeDispatcher applies instantly (or after a per-account delay), records every call in order,
// and fails the test if one account ever has two calls at once.
type fakeDispatcher struct {
	t      testing.TB
	mu     sync.Mutex
	calls  []call
	active map[string]int
	delay  map[string]time.Duration
	result map[string]dispatcher.Outcome // by event id; default applied
	block  chan struct{}                 // when set, every dispatch waits for it (or ctx)
	errs   map[string]int                // event id → calls to fail with an error first
	hold   map[string]chan struct{}      // account → dispatches wait until it is closed (or ctx)
	n      atomic.Int64
	noLog  bool // benchmark mode: count only
	// overlaps counts dispatches that found another of their account in flight; unless
	// countOverlaps is set, each one also fails the test.
	overlaps      atomic.Int64
	countOverlaps bool
	// leaseHeld counts dispatches that found Task.Lease expired and waited, as the real
	// dispatcher does, before sending anything.
	leaseHeld atomic.Int64
}

// undelay makes every later dispatch answer at once.
func (d *fakeDispatcher) undelay() {
	d.mu.Lock()
	d.delay = map[string]time.Duration{}
	d.mu.Unlock()
}

func newFakeDispatcher(t testing.TB) *fakeDispatcher {
	return &fakeDispatcher{t: t, active: map[string]int{}, delay: map[string]time.Duration{},
		result: map[string]dispatcher.Outcome{}, errs: map[string]int{}, hold: map[string]chan struct{}{}}
}

func (f *fakeDispatcher) Dispatch(ctx context.Context, task dispatcher.Task) (dispatcher.Outcome, error) {
	f.n.Add(1)
	if f.noLog {
		return dispatcher.Outcome{Result: dispatcher.Applied}, nil
	}
	if task.Lease != nil && !task.Lease() {
		f.leaseHeld.Add(1)
		var drained <-chan struct{}
		if task.Drain != nil {
			drained = task.Drain.Done()
		}
		for !task.Lease() {
			select {
			case <-ctx.Done():
				return dispatcher.Outcome{}, ctx.Err()
			case <-drained:
				return dispatcher.Outcome{}, dispatcher.ErrDrained
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	if err := admitFake(ctx, task); err != nil {
		return dispatcher.Outcome{}, err
	}
	acct := task.Event.FromAccount
	f.mu.Lock()
	f.active[acct]++
	if f.active[acct] > 1 {
		f.overlaps.Add(1)
		if !f.countOverlaps {
			f.t.Errorf("account %s: two events in flight at once", acct)
		}
	}
	d := f.delay[acct]
	out, ok := f.result[task.Event.EventID]
	if f.errs[task.Event.EventID] > 0 {
		f.errs[task.Event.EventID]--
		f.calls = append(f.calls, call{task.Event.EventID + "!error", acct, task.Event.Seq, task.ReplayCount, task.Uncertain})
		f.active[acct]--
		f.mu.Unlock()
		return dispatcher.Outcome{}, errors.New("fake: dispatcher bug")
	}
	block := f.block
	if h := f.hold[acct]; h != nil {
		block = h
	}
	f.mu.Unlock()
	// Like the real dispatcher's HTTP request: the consumer follows it through httptrace hooks
	// (written; answered unless the call is abandoned).
	trace := httptrace.ContextClientTrace(ctx)
	if trace != nil {
		trace.GotConn(httptrace.GotConnInfo{})
		trace.WroteRequest(httptrace.WroteRequestInfo{})
	}
	defer func() {
		f.mu.Lock()
		f.active[acct]--
		f.mu.Unlock()
	}()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return dispatcher.Outcome{}, ctx.Err()
		}
	}
	if d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return dispatcher.Outcome{}, ctx.Err()
		}
	}
	if !ok {
		out = dispatcher.Outcome{Result: dispatcher.Applied, Attempts: 1}
	}
	if trace != nil {
		trace.GotFirstResponseByte()
	}
	f.mu.Lock()
	f.calls = append(f.calls, call{task.Event.EventID, acct, task.Event.Seq, task.ReplayCount, task.Uncertain})
	f.mu.Unlock()
	return out, nil
}

func (f *fakeDispatcher) snapshot() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

type letter struct {
	msg kafka.Message
	l   dlq.Letter
}

// fakeDL records dead letters; while failing is set every write fails.
type fakeDL struct {
	mu      sync.Mutex
	letters []letter
	failing atomic.Bool
	tries   atomic.Int64
}

func (d *fakeDL) DeadLetter(ctx context.Context, m kafka.Message, l dlq.Letter) error {
	d.tries.Add(1)
	if d.failing.Load() {
		return errors.New("fake: broker unavailable")
	}
	d.mu.Lock()
	d.letters = append(d.letters, letter{m, l})
	d.mu.Unlock()
	return nil
}

func (d *fakeDL) snapshot() []letter {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]letter(nil), d.letters...)
}

func evMsg(id, acct string, seq int64) kafka.Message {
	e := event.Event{EventID: id, EventType: event.TypeContactGroupCreated, FromAccount: acct, Seq: seq,
		GroupName: "g", Contacts: []event.Contact{{Type: 1, ToAccount: "peer"}}}
	v, err := json.Marshal(e)
	if err != nil {
		panic(err)
	}
	return kafka.Message{Key: []byte(acct), Value: v}
}

// env is one test's cluster, topic and group.
type env struct {
	t       *testing.T
	k       *kafkatest.Cluster
	topic   string
	group   string
	parts   int
	disp    *fakeDispatcher
	dl      *fakeDL
	log     *zap.Logger
	cfgEdit func(*Config)
}

// newEnv uses an embedded cluster, or the real broker named by CHATGROUPD_TEST_BROKERS (every
// test makes its own topic and group, so they can share one).
func newEnv(t *testing.T, parts int) *env {
	k := kafkatest.Real
	if os.Getenv(kafkatest.EnvBrokers) == "" {
		k = func(t testing.TB) *kafkatest.Cluster { return kafkatest.New(t) }
	}
	return newEnvOn(t, k(t), parts)
}

func newEnvOn(t *testing.T, k *kafkatest.Cluster, parts int) *env {
	e := &env{t: t, k: k, topic: kafkatest.UniqueName("ev"), group: kafkatest.UniqueName("g"), parts: parts,
		disp: newFakeDispatcher(t), dl: &fakeDL{}, log: zaptest.NewLogger(t, zaptest.Level(testLogLevel()))}
	k.CreateTopic(t, e.topic, parts)
	return e
}

func (e *env) config() Config {
	cfg := Config{
		Brokers: e.k.Brokers, Topic: e.topic, GroupID: e.group,
		Dispatcher: e.disp, DeadLetterer: e.dl, Logger: e.log,
		CommitInterval: 200 * time.Millisecond, ReorderWindow: 300 * time.Millisecond,
		SessionTimeout: 6 * time.Second, RebalanceTimeout: 4 * time.Second, ShutdownTimeout: 3 * time.Second,
	}
	if e.cfgEdit != nil {
		e.cfgEdit(&cfg)
	}
	return cfg
}

// running is a consumer started in the background.
type running struct {
	c      *Consumer
	cancel context.CancelFunc
	done   chan error
}

func (e *env) start() *running {
	e.t.Helper()
	c, err := New(e.config())
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	e.t.Cleanup(func() { r.stop(e.t) })
	return r
}

// stop cancels and waits for Run; idempotent.
func (r *running) stop(t testing.TB) {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("Run: %v", err)
		}
		if ok {
			close(r.done)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s of cancel")
	}
}

// committed reads the group's committed offsets and metadata.
func (e *env) committed() map[int]kafka.OffsetFetchPartition {
	e.t.Helper()
	cl := &kafka.Client{Addr: kafka.TCP(e.k.Brokers...)}
	ids := make([]int, e.parts)
	for i := range ids {
		ids[i] = i
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: e.group, Topics: map[string][]int{e.topic: ids}})
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[int]kafka.OffsetFetchPartition{}
	for _, p := range resp.Topics[e.topic] {
		out[p.Partition] = p
	}
	return out
}

func (e *env) committedTotal() int64 {
	var n int64
	for _, p := range e.committed() {
		if p.CommittedOffset > 0 {
			n += p.CommittedOffset
		}
	}
	return n
}

func ids(calls []call) map[string]int {
	m := map[string]int{}
	for _, c := range calls {
		m[fmt.Sprintf("%s/%d", c.ID, c.Replay)]++
	}
	return m
}

// testLogLevel is warn, or info with CHATGROUPD_TEST_LOG=info for debugging.
func testLogLevel() zapcore.Level {
	if os.Getenv("CHATGROUPD_TEST_LOG") == "info" {
		return zap.InfoLevel
	}
	return zap.WarnLevel
}

// admitFake waits for task.Admit as the real dispatcher does once it holds a grant, ending with
// ctx or task.Drain.
func admitFake(ctx context.Context, task dispatcher.Task) error {
	if task.Admit == nil {
		return nil
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	if task.Drain != nil {
		defer context.AfterFunc(task.Drain, cancel)()
	}
	if err := task.Admit(actx); err != nil {
		if task.Drain != nil && task.Drain.Err() != nil {
			return fmt.Errorf("fake admit: %w", dispatcher.ErrDrained)
		}
		return err
	}
	return nil
}
