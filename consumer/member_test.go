package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/chatgroupd/chatgroupd/internal/testwait"
)

// partsRec records every SetPartitions: the current partitions and how many generations began
// and ended.
type partsRec struct {
	mu       sync.Mutex
	cur      []int
	starts   int
	ends     int
	stopping int
}

func (r *partsRec) Stopping() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopping++
}

func (r *partsRec) SetPartitions(ids []int, total int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ids == nil {
		r.ends++
	} else {
		r.starts++
	}
	r.cur = slices.Clone(ids)
}

func (r *partsRec) get() (cur []int, starts, ends int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.cur), r.starts, r.ends
}

// startAs starts a consumer on e with its own instance id and partition recorder.
func (e *env) startAs(instance string, rec *partsRec, edit func(*Config)) *running {
	e.t.Helper()
	cfg := e.config()
	cfg.InstanceID, cfg.Share = instance, rec
	if edit != nil {
		edit(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	e.t.Cleanup(func() { r.stop(e.t) })
	return r
}

func owns(rec *partsRec, n int) func() bool {
	return func() bool { cur, _, _ := rec.get(); return len(cur) == n }
}

// eventsFor makes n events per partition in ps, keyed so that the default partitioner puts them
// there (found by trying account names).
func eventsFor(t *testing.T, e *env, ps []int, n int, prefix string) ([]kafka.Message, []string) {
	t.Helper()
	var msgs []kafka.Message
	var all []string
	for _, p := range ps {
		found := 0
		for i := 0; found < 1 && i < 10000; i++ {
			acct := fmt.Sprintf("%s-acct%d", prefix, i)
			if e.config().withDefaults().Partitioner.Partition([]byte(acct), e.parts) != p {
				continue
			}
			found++
			for s := 1; s <= n; s++ {
				id := fmt.Sprintf("%s-p%d-%d", prefix, p, s)
				m := evMsg(id, acct, int64(s))
				msgs = append(msgs, m)
				all = append(all, id)
			}
		}
		if found == 0 {
			t.Fatalf("no account found for partition %d", p)
		}
	}
	return msgs, all
}

// TestStaticCrashRestart: two static members share the topic; b stops and is started again with
// the same instance id at once: killed (no drain, no final commit, no leave), or stopped
// gracefully with StayOnShutdown (drained and committed, but still a member). It gets the same
// partitions back and dispatches again, while a's generation never ends. The times from the stop
// to b owning its partitions again and to its calls done are logged (after a kill the calls wait
// out the uncertain hold: the killed process's last requests may still be running at the API).
// A graceful stop without StayOnShutdown leaves the group, and a's generation ends
// (TestGroupJoinRebalanceLeave).
func TestStaticCrashRestart(t *testing.T) {
	for _, tc := range []struct {
		name string
		kill bool
		stay func(*Config)
	}{
		{"killed", true, nil},
		{"stopped, staying in the group", false, func(c *Config) { c.StayOnShutdown = true }},
	} {
		t.Run(tc.name, func(t *testing.T) { testStaticStopRestart(t, tc.kill, tc.stay) })
	}
}

func testStaticStopRestart(t *testing.T, kill bool, edit func(*Config)) {
	e := newEnv(t, 4)
	recA, recB := &partsRec{}, &partsRec{}
	a := e.startAs("a", recA, nil)
	testwait.For(t, 15*time.Second, "a ready", a.c.Ready)
	b := e.startAs("b", recB, edit)
	testwait.For(t, 15*time.Second, "both with two partitions", func() bool { return owns(recA, 2)() && owns(recB, 2)() })
	partsA, startsA, endsA := recA.get()
	partsB, _, _ := recB.get()

	first, firstIDs := eventsFor(t, e, []int{0, 1, 2, 3}, 3, "before")
	e.k.Produce(t, e.topic, first...)
	testwait.For(t, 15*time.Second, "the first events committed", func() bool { return e.committedTotal() == int64(len(first)) })

	b.c.crash, b.c.vanish = kill, kill
	b.stop(t)
	stopped := time.Now()
	after, afterIDs := eventsFor(t, e, partsB, 2, "after")
	e.k.Produce(t, e.topic, after...)
	recB2 := &partsRec{}
	b2 := e.startAs("b", recB2, edit)
	testwait.For(t, 15*time.Second, "b restarted with partitions", owns(recB2, 2))
	t.Logf("b restarted with its instance id: its partitions back %v after the stop", time.Since(stopped).Round(time.Millisecond))
	if got, _, _ := recB2.get(); !slices.Equal(got, partsB) {
		t.Fatalf("b restarted with %v, had %v", got, partsB)
	}
	want := append(slices.Clone(firstIDs), afterIDs...)
	testwait.For(t, 15*time.Second, "the events after the stop dispatched", func() bool { return len(e.disp.snapshot()) >= len(want) })
	t.Logf("b restarted with its instance id: all %d events written to its partitions after the stop dispatched %v after the stop",
		len(afterIDs), time.Since(stopped).Round(time.Millisecond))
	testwait.For(t, 15*time.Second, "all committed", func() bool { return e.committedTotal() == int64(len(want)) })
	checkOnce(t, e.disp.snapshot(), want)
	if cur, starts, ends := recA.get(); starts != startsA || ends != endsA || !slices.Equal(cur, partsA) {
		t.Fatalf("a's generation changed across b's static restart: partitions %v → %v, starts %d → %d, ends %d → %d",
			partsA, cur, startsA, starts, endsA, ends)
	}
	if !a.c.Ready() || !b2.c.Ready() {
		t.Fatal("a member not ready")
	}
}

// TestFencedInstanceStops: a second process with the same instance id takes the member over;
// the first one's Run returns ErrFenced (it does not fight for the partitions), the second owns
// everything.
func TestFencedInstanceStops(t *testing.T) {
	e := newEnv(t, 2)
	rec1, rec2 := &partsRec{}, &partsRec{}
	old := e.startAs("same", rec1, nil)
	testwait.For(t, 15*time.Second, "first ready", owns(rec1, 2))
	e.startAs("same", rec2, nil)
	select {
	case err := <-old.done:
		close(old.done)
		if !errors.Is(err, ErrFenced) {
			t.Fatalf("the first process's Run returned %v, want ErrFenced", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the first process was not stopped")
	}
	testwait.For(t, 15*time.Second, "second owns everything", owns(rec2, 2))
	msgs, ids := eventsFor(t, e, []int{0, 1}, 2, "f")
	e.k.Produce(t, e.topic, msgs...)
	testwait.For(t, 15*time.Second, "all committed", func() bool { return e.committedTotal() == int64(len(msgs)) })
	checkOnce(t, e.disp.snapshot(), ids)
}

// TestRebalanceKeepsWindowOfKeptPartitions: a alone owns all four partitions; b joins and the
// sticky assignment leaves a with two of them, whose dedupe windows a keeps (no read-back). Re-sent
// events of a's partitions are then dropped as duplicates.
func TestRebalanceKeepsWindowOfKeptPartitions(t *testing.T) {
	for _, static := range []bool{false, true} {
		t.Run(map[bool]string{false: "dynamic", true: "static"}[static], func(t *testing.T) {
			e := newEnv(t, 4)
			core, logs := observer.New(zap.InfoLevel)
			recA, recB := &partsRec{}, &partsRec{}
			id := func(s string) string {
				if static {
					return s
				}
				return ""
			}
			a := e.startAs(id("a"), recA, func(c *Config) { c.Logger = zap.New(zapcore.NewTee(core, c.Logger.Core())) })
			testwait.For(t, 15*time.Second, "a ready", a.c.Ready)
			msgs, ids := eventsFor(t, e, []int{0, 1, 2, 3}, 5, "k")
			e.k.Produce(t, e.topic, msgs...)
			testwait.For(t, 15*time.Second, "committed", func() bool { return e.committedTotal() == int64(len(msgs)) })
			e.startAs(id("b"), recB, nil)
			testwait.For(t, 15*time.Second, "both with two partitions", func() bool { return owns(recA, 2)() && owns(recB, 2)() })
			kept, _, ends := recA.get()
			recA.mu.Lock()
			if ends == 0 || recA.stopping != 0 {
				t.Errorf("a's generation ended %d times for the rebalance, Stopping called %d times: want ends and no Stopping", ends, recA.stopping)
			}
			recA.mu.Unlock()
			var last observer.LoggedEntry
			for _, l := range logs.FilterMessage("rebalance: partitions assigned").All() {
				last = l
			}
			fields := last.ContextMap()
			if fmt.Sprint(fields["partitions"]) != fmt.Sprint(kept) || fmt.Sprint(fields["dedupe_kept"]) != fmt.Sprint(kept) {
				t.Fatalf("a's second generation: partitions %v, dedupe windows kept %v; want both %v", fields["partitions"], fields["dedupe_kept"], kept)
			}
			// Re-send a's partitions' events: its kept windows know them all.
			var again []kafka.Message
			for _, m := range msgs {
				if slices.Contains(kept, e.config().withDefaults().Partitioner.Partition(m.Key, e.parts)) {
					again = append(again, m)
				}
			}
			n := len(e.disp.snapshot())
			e.k.Produce(t, e.topic, again...)
			testwait.For(t, 15*time.Second, "re-sent committed", func() bool { return e.committedTotal() == int64(len(msgs)+len(again)) })
			if got := e.disp.snapshot()[n:]; len(got) != 0 {
				t.Fatalf("re-sent events dispatched again: %+v", got)
			}
			checkOnce(t, e.disp.snapshot(), ids)
		})
	}
}

// TestKeptPartitionNoHold: a partition this member gets back with its own final commit has no
// uncertain hold when that generation ended with no call abandoned (nobody else can have a call
// running), and keeps the hold when calls were abandoned. Another commit (someone else wrote it)
// keeps the hold too.
func TestKeptPartitionNoHold(t *testing.T) {
	e := newEnv(t, 1)
	c, err := New(e.config())
	if err != nil {
		t.Fatal(err)
	}
	enc := encodeMeta(10, commitMeta{horizon: 20}, DefaultMetadataMaxBytes)
	st := position{commit: kafka.OffsetFetchPartition{Partition: 0, CommittedOffset: 10, Metadata: enc.s}, hasCommit: true,
		bounds: kafka.PartitionOffsets{Partition: 0, FirstOffset: 0, LastOffset: 30}}
	for _, tc := range []struct {
		name     string
		kept     *keptPart
		wantHold bool
		wantWin  bool
	}{
		{"not kept", nil, true, false},
		{"kept, drained", &keptPart{w: 10, meta: enc.s, win: newWindow(10), drained: true}, false, true},
		{"kept, calls abandoned", &keptPart{w: 10, meta: enc.s, win: newWindow(10)}, true, true},
		{"kept, but committed since by another", &keptPart{w: 9, meta: enc.s, win: newWindow(10), drained: true}, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clear(c.kept)
			if tc.kept != nil {
				c.kept[0] = *tc.kept
			}
			eng := newEngine(c, context.Background())
			eng.mu.Lock()
			eng.initPart(0, st)
			eng.mu.Unlock()
			p := eng.parts[0]
			if hold := !p.hold.main.IsZero(); hold != tc.wantHold {
				t.Errorf("hold %v, want %v", hold, tc.wantHold)
			}
			if win := tc.kept != nil && p.win == tc.kept.win; win != tc.wantWin {
				t.Errorf("window kept %v, want %v", win, tc.wantWin)
			}
			if p.inherited != 20 {
				t.Errorf("horizon %d, want 20: kept records beyond the watermark stay uncertain", p.inherited)
			}
		})
	}
}
