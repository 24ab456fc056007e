package consumer

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/dlq"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// TestPerAccountOrder: many accounts over 4 partitions, each account's events applied one at a
// time in offset order, and everything committed.
func TestPerAccountOrder(t *testing.T) {
	e := newEnv(t, 4)
	const accounts, per = 50, 20
	var msgs []kafka.Message
	for i := 0; i < per; i++ {
		for a := 0; a < accounts; a++ {
			msgs = append(msgs, evMsg(fmt.Sprintf("a%d-e%d", a, i), fmt.Sprintf("acct%d", a), int64(i+1)))
		}
	}
	e.k.Produce(t, e.topic, msgs...)
	r := e.start()
	testwait.For(t, 20*time.Second, "all applied", func() bool { return len(e.disp.snapshot()) >= accounts*per })
	testwait.For(t, 10*time.Second, "all committed", func() bool { return e.committedTotal() == accounts*per })
	if !r.c.Ready() {
		t.Error("Ready() false while consuming")
	}
	last := map[string]int64{}
	for _, c := range e.disp.snapshot() {
		if c.Seq != last[c.Account]+1 {
			t.Fatalf("account %s: seq %d after %d", c.Account, c.Seq, last[c.Account])
		}
		last[c.Account] = c.Seq
		if c.Uncertain {
			t.Errorf("fresh group dispatched %s as uncertain", c.ID)
		}
	}
	r.stop(t)
	if r.c.Ready() {
		t.Error("Ready() true after Run returned")
	}
}

func newMetricsEnv(e *env) *metrics.Metrics {
	m := metrics.New(prometheus.NewRegistry(), "test", false)
	prev := e.cfgEdit
	e.cfgEdit = func(c *Config) {
		if prev != nil {
			prev(c)
		}
		c.Metrics = m
	}
	return m
}

func counter(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }

// TestSeqReorder: swapped pairs are applied in seq order; a gap waits the reorder window and is
// counted; an event at or below the last applied seq is applied and counted late.
func TestSeqReorder(t *testing.T) {
	e := newEnv(t, 1)
	m := newMetricsEnv(e)
	e.k.Produce(t, e.topic,
		evMsg("x2", "x", 2), evMsg("x1", "x", 1), evMsg("x4", "x", 4), evMsg("x3", "x", 3),
		evMsg("y1", "y", 1), evMsg("y3", "y", 3),
		evMsg("z1", "z", 1), evMsg("z2", "z", 2), evMsg("z2b", "z", 2),
	)
	e.start()
	testwait.For(t, 10*time.Second, "9 applied", func() bool { return len(e.disp.snapshot()) == 9 })
	order := map[string][]string{}
	for _, c := range e.disp.snapshot() {
		order[c.Account] = append(order[c.Account], c.ID)
	}
	want := map[string][]string{"x": {"x1", "x2", "x3", "x4"}, "y": {"y1", "y3"}, "z": {"z1", "z2", "z2b"}}
	if !reflect.DeepEqual(order, want) {
		t.Fatalf("order %v, want %v", order, want)
	}
	if g := counter(m.SeqGaps); g != 1 {
		t.Errorf("seq gaps %v, want 1", g)
	}
	if l := counter(m.LateEvents); l != 1 {
		t.Errorf("late events %v, want 1", l)
	}
	testwait.For(t, 5*time.Second, "committed", func() bool { return e.committedTotal() == 9 })
}

// TestInvalidDeadLettered: every invalid kind of event (docs/events.md) goes to the DLQ with the precise
// reason and is never dispatched.
func TestInvalidDeadLettered(t *testing.T) {
	e := newEnv(t, 1)
	m := newMetricsEnv(e)
	valid := `"event_id":"e","event_type":"contact_group.created","from_account":"a"`
	contacts := func(n int) string {
		s := make([]string, n)
		for i := range s {
			s[i] = `{"type":1,"to_account":"b"}`
		}
		return "[" + strings.Join(s, ",") + "]"
	}
	cases := []struct{ value, info string }{
		{`{"event_id":`, "bad JSON"},
		{"{\"event_id\":\"\xff\"}", "not valid UTF-8"},
		{`{` + valid + `,"contacts":[{"type":1,"to_account":"b"}]}`, "group_name: required field missing"},
		{`{` + valid + `,"group_name":"` + strings.Repeat("n", 33) + `","contacts":[{"type":1,"to_account":"b"}]}`, "group_name: 33 bytes, at most 32"},
		{`{"event_id":"e","event_type":"contact_group.created","from_account":"` + strings.Repeat("a", 33) + `","group_name":"g","contacts":[{"type":1,"to_account":"b"}]}`, "from_account: 33 bytes"},
		{`{` + valid + `,"group_name":"g","contacts":` + contacts(101) + `}`, "contacts: must have 1-100 items, got 101"},
		{`{"event_id":"e","event_type":"contact_group.archived","from_account":"a","group_name":"g","contacts":[{"type":1,"to_account":"b"}]}`, `event_type: unknown type "contact_group.archived"`},
		{`{` + valid + `,"group_name":"g","contacts":[{"type":3,"to_account":"b"}]}`, "contacts[0].type: must be 1 (one-to-one) or 2 (group), got 3"},
		{`{` + valid + `,"group_name":"g","contacts":[{"type":2,"to_account":"b"}]}`, "contacts[0].to_account: not allowed for type 2"},
	}
	var msgs []kafka.Message
	for i, c := range cases {
		msgs = append(msgs, kafka.Message{Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(c.value)})
	}
	msgs = append(msgs, evMsg("ok", "a", 0))
	e.k.Produce(t, e.topic, msgs...)
	e.start()
	testwait.For(t, 10*time.Second, "letters", func() bool { return len(e.dl.snapshot()) == len(cases) })
	testwait.For(t, 5*time.Second, "valid applied", func() bool { return len(e.disp.snapshot()) == 1 })
	for i, l := range e.dl.snapshot() {
		if l.l.Reason != dlq.ReasonInvalid || l.l.Code != 0 || l.l.Attempts != 0 {
			t.Errorf("letter %d: %+v", i, l.l)
		}
		if !strings.Contains(l.l.Info, cases[l.msg.Offset].info) {
			t.Errorf("offset %d: info %q, want it to contain %q", l.msg.Offset, l.l.Info, cases[l.msg.Offset].info)
		}
		if string(l.msg.Value) != cases[l.msg.Offset].value {
			t.Errorf("offset %d: dead-lettered value differs from the record", l.msg.Offset)
		}
	}
	if c := e.disp.snapshot(); c[0].ID != "ok" {
		t.Errorf("dispatched %v, want only the valid event", c)
	}
	if n := counter(m.EventsProcessed.WithLabelValues("invalid")); n != float64(len(cases)) {
		t.Errorf("invalid count %v", n)
	}
	testwait.For(t, 5*time.Second, "committed", func() bool { return e.committedTotal() == int64(len(msgs)) })
}

// withReplay marks m as dlq replay does: replay-count n alongside replay-of.
func withReplay(m kafka.Message, n string) kafka.Message {
	m.Headers = append(m.Headers, kafka.Header{Key: event.HeaderReplayCount, Value: []byte(n)},
		kafka.Header{Key: event.HeaderReplayOf, Value: []byte("ev.dlq/0/" + n)})
	return m
}

// TestDuplicates: a repeated (event_id, replay-count) is dropped whether the first copy is still
// in flight or long done, and across a restart; a replay (new replay-count) is not a duplicate.
func TestDuplicates(t *testing.T) {
	e := newEnv(t, 2)
	m := newMetricsEnv(e)
	e.disp.delay["a"] = 50 * time.Millisecond // e1's first copy is in flight when the second arrives
	e.k.Produce(t, e.topic, evMsg("e1", "a", 0), evMsg("e1", "a", 0), withReplay(evMsg("e1", "a", 0), "1"), evMsg("e2", "b", 0), evMsg("e2", "b", 0))
	r := e.start()
	testwait.For(t, 10*time.Second, "committed", func() bool { return e.committedTotal() == 5 })
	got := ids(e.disp.snapshot())
	if want := map[string]int{"e1/0": 1, "e1/1": 1, "e2/0": 1}; !reflect.DeepEqual(got, want) {
		t.Fatalf("dispatched %v, want %v", got, want)
	}
	if d := counter(m.EventsProcessed.WithLabelValues("duplicate")); d != 2 {
		t.Errorf("duplicates %v, want 2", d)
	}
	r.stop(t)

	// After a restart the window is rebuilt from the log before the committed offset.
	e.k.Produce(t, e.topic, evMsg("e1", "a", 0), withReplay(evMsg("e1", "a", 0), "1"), evMsg("e2", "b", 0), evMsg("e3", "b", 0))
	e.start()
	testwait.For(t, 10*time.Second, "committed after restart", func() bool { return e.committedTotal() == 9 })
	got = ids(e.disp.snapshot())
	if want := map[string]int{"e1/0": 1, "e1/1": 1, "e2/0": 1, "e3/0": 1}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after restart dispatched %v, want %v", got, want)
	}
}

// TestSlowAccountDoesNotDelayOthers: one account takes 300ms per event; the others finish first.
func TestSlowAccountDoesNotDelayOthers(t *testing.T) {
	e := newEnv(t, 1)
	e.disp.delay["slow"] = 300 * time.Millisecond
	var msgs []kafka.Message
	for i := 1; i <= 5; i++ {
		msgs = append(msgs, evMsg(fmt.Sprintf("s%d", i), "slow", int64(i)))
		for a := 0; a < 20; a++ {
			msgs = append(msgs, evMsg(fmt.Sprintf("f%d-%d", a, i), fmt.Sprintf("fast%d", a), int64(i)))
		}
	}
	e.k.Produce(t, e.topic, msgs...)
	e.start()
	testwait.For(t, 10*time.Second, "all applied", func() bool { return len(e.disp.snapshot()) == len(msgs) })
	calls := e.disp.snapshot()
	firstSlow := -1
	lastFast := -1
	for i, c := range calls {
		if c.Account == "slow" && firstSlow < 0 {
			firstSlow = i
		}
		if c.Account != "slow" {
			lastFast = i
		}
	}
	if lastFast > firstSlow {
		t.Fatalf("a fast account finished at call %d, after the slow account's first call %d", lastFast, firstSlow)
	}
	testwait.For(t, 5*time.Second, "committed", func() bool { return e.committedTotal() == int64(len(msgs)) })
}

// TestDispatchErrorRetried: a Dispatcher error outside shutdown doesn't lose the record: it is
// retried, flagged uncertain, and the account's later events wait for it.
func TestDispatchErrorRetried(t *testing.T) {
	e := newEnv(t, 1)
	e.disp.errs["e1"] = 1
	e.k.Produce(t, e.topic, evMsg("e1", "a", 1), evMsg("e2", "a", 2))
	e.start()
	testwait.For(t, 10*time.Second, "committed", func() bool { return e.committedTotal() == 2 })
	calls := e.disp.snapshot()
	want := []call{{"e1!error", "a", 1, 0, false}, {"e1", "a", 1, 0, true}, {"e2", "a", 2, 0, false}}
	if !reflect.DeepEqual(calls, want) {
		t.Fatalf("calls %+v, want %+v", calls, want)
	}
}

func TestSleepCtx(t *testing.T) {
	if !sleepCtx(context.Background(), time.Millisecond) {
		t.Error("a sleep that ran its course reported false")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if sleepCtx(ctx, time.Hour) {
		t.Error("a sleep on an ended context reported true")
	}
	if time.Since(start) > time.Second {
		t.Error("a sleep on an ended context waited")
	}
}
