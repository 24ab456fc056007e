package consumer

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/chatgroupd/chatgroupd/dlq"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
)

// TestReplayCountTrustedOnlyWithReplayOf: a producer-set replay-count can't make a copy of an
// applied event look like a replay (dodging dedupe), whether alone, doubled or absurd; a real
// replay (replay-of alongside) is dispatched. Dead letters carry the same count the dedupe used.
func TestReplayCountTrustedOnlyWithReplayOf(t *testing.T) {
	e := newEnv(t, 1)
	rc := func(m kafka.Message, hs ...string) kafka.Message {
		for i := 0; i+1 < len(hs); i += 2 {
			m.Headers = append(m.Headers, kafka.Header{Key: hs[i], Value: []byte(hs[i+1])})
		}
		return m
	}
	const count, of = event.HeaderReplayCount, event.HeaderReplayOf
	bad := kafka.Message{Key: []byte("z"), Value: []byte(`{"event_id":`)}
	e.k.Produce(t, e.topic,
		evMsg("e1", "a", 0),
		rc(evMsg("e1", "a", 0), count, "1"),                          // alone: an original, a duplicate
		rc(evMsg("e1", "a", 0), count, "1", count, "2", of, "d/0/1"), // two values
		rc(evMsg("e1", "a", 0), count, "5000", of, "d/0/1"),          // past the cap
		rc(evMsg("e1", "a", 0), count, "1", of, "not-a-coordinate"),  // malformed replay-of
		rc(evMsg("e1", "a", 0), count, "1", of, "d/0/1"),             // a replay
		rc(bad, count, "7"),                                          // dead letter: count not trusted
		rc(bad, count, "2", of, "d/0/9"),                             // dead letter: trusted
	)
	e.start()
	testwait.For(t, 10*time.Second, "committed", func() bool { return e.committedTotal() == 8 })
	if got, want := ids(e.disp.snapshot()), map[string]int{"e1/0": 1, "e1/1": 1}; !reflect.DeepEqual(got, want) {
		t.Fatalf("dispatched %v, want %v", got, want)
	}
	ls := e.dl.snapshot()
	if len(ls) != 2 || ls[0].l.ReplayCount != 0 || ls[1].l.ReplayCount != 2 {
		t.Fatalf("letters %+v, want replay counts 0 and 2", ls)
	}
	for _, l := range ls {
		// The writer derives dlq-replay-count from the same headers: it must agree.
		rec := dlq.Record(l.msg, l.l, "g", time.Now())
		e, err := dlq.Parse(rec)
		if err != nil || e.ReplayCount != l.l.ReplayCount {
			t.Errorf("dlq-replay-count %v (%v), letter %d", e, err, l.l.ReplayCount)
		}
	}
}

func mismatched(id, key, acct string) kafka.Message {
	m := evMsg(id, acct, 0)
	m.Key = []byte(key)
	return m
}

// TestKeyMismatchCounted: events keyed by another account than their from_account are applied,
// counted, and logged once per account.
func TestKeyMismatchCounted(t *testing.T) {
	e := newEnv(t, 1)
	m := newMetricsEnv(e)
	core, logs := observer.New(zap.WarnLevel)
	e.log = zap.New(zapcore.NewTee(core, e.log.Core()))
	e.k.Produce(t, e.topic, mismatched("m1", "x", "a"), mismatched("m2", "y", "a"), mismatched("m3", "", "b"),
		evMsg("ok", "c", 0), mismatched("m4", "A", "a"))
	e.start()
	testwait.For(t, 10*time.Second, "committed", func() bool { return e.committedTotal() == 5 })
	if n := len(e.disp.snapshot()); n != 5 {
		t.Errorf("%d dispatched, want all 5 (count mode applies them)", n)
	}
	if v := counter(m.KeyMismatches); v != 4 {
		t.Errorf("key_mismatch_total = %v, want 4", v)
	}
	lines := logs.FilterMessageSnippet("record key is not from_account").All()
	var accts []string
	for _, l := range lines {
		accts = append(accts, l.ContextMap()["account"].(string))
	}
	if !reflect.DeepEqual(accts, []string{"a", "b"}) {
		t.Errorf("logged accounts %v, want a and b once each", accts)
	}
}

// TestKeyMismatchDeadLetter: with KeyMismatchDeadLetter such events are dead-lettered as invalid
// with a reason naming the key, never sent.
func TestKeyMismatchDeadLetter(t *testing.T) {
	e := newEnv(t, 1)
	e.cfgEdit = func(c *Config) { c.KeyMismatch = KeyMismatchDeadLetter }
	e.k.Produce(t, e.topic, mismatched("m1", "mallory", "alice"), evMsg("ok", "bob", 0))
	e.start()
	testwait.For(t, 10*time.Second, "committed", func() bool { return e.committedTotal() == 2 })
	if got := ids(e.disp.snapshot()); !reflect.DeepEqual(got, map[string]int{"ok/0": 1}) {
		t.Errorf("dispatched %v", got)
	}
	ls := e.dl.snapshot()
	if len(ls) != 1 || ls[0].l.Reason != dlq.ReasonInvalid || !strings.Contains(ls[0].l.Info, `key: record key "mallory" is not from_account "alice"`) {
		t.Fatalf("letters %+v", ls)
	}
}

func TestKeyMismatchConfig(t *testing.T) {
	cfg := newEnv(t, 1).config()
	cfg.KeyMismatch = "drop"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "key mismatch") {
		t.Fatalf("Validate = %v", err)
	}
}

// TestDeadLetterFailureVisible: while a dead letter can't be written its partition is reported
// (DeadLetterHealth, chatgroupd_dlq_blocked_partitions); both clear once it is written.
func TestDeadLetterFailureVisible(t *testing.T) {
	e := newEnv(t, 2)
	m := newMetricsEnv(e)
	e.dl.failing.Store(true)
	bad := kafka.Message{Key: []byte("z"), Value: []byte(`{"event_id":`), Partition: 0}
	w := e.k.Writer(e.topic)
	w.Balancer = kafka.BalancerFunc(func(kafka.Message, ...int) int { return 1 })
	defer w.Close()
	if err := w.WriteMessages(t.Context(), bad, evMsg("ok", "a", 0)); err != nil {
		t.Fatal(err)
	}
	r := e.start()
	testwait.For(t, 10*time.Second, "DLQ retried", func() bool { return e.dl.tries.Load() >= 2 })
	err := r.c.DeadLetterHealth()
	if !errors.Is(err, errDLQBlocked) || !strings.Contains(err.Error(), "partitions 1 blocked") ||
		!strings.Contains(err.Error(), "fake: broker unavailable") {
		t.Fatalf("DeadLetterHealth = %v", err)
	}
	if v := counter(m.DLQBlockedParts); v != 1 {
		t.Errorf("dlq_blocked_partitions = %v, want 1", v)
	}
	e.dl.failing.Store(false)
	testwait.For(t, 10*time.Second, "committed", func() bool { return e.committedTotal() == 2 })
	if err := r.c.DeadLetterHealth(); err != nil {
		t.Errorf("DeadLetterHealth after recovery = %v", err)
	}
	if v := counter(m.DLQBlockedParts); v != 0 {
		t.Errorf("dlq_blocked_partitions = %v after recovery, want 0", v)
	}
}
