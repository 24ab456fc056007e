package budget

import (
	"testing"
	"time"
)

// TestSimulationSuccessionNeverExceedsBudget: the random schedules, with every crashed member
// followed at once or within half a second by a member succeeding it (a process restarted with
// the same instance id that found the dead one's lock free). No window may hold more calls than
// the budget. A successor that does not count its predecessor's calls (noPreload) lets its own
// calls, taken at once into room the predecessor's calls still hold, cross the budget: the
// schedules must catch it, or they say nothing about the preload.
func TestSimulationSuccessionNeverExceedsBudget(t *testing.T) {
	schedules := 2000
	if testing.Short() {
		schedules = 200
	}
	var util float64
	successors, tookOver := 0, 0
	for seed := range uint64(schedules) {
		var w *simWorld
		worst, u := randomSchedule(t, seed, func(sw *simWorld) { sw.successors, w = true, sw })
		if budget := 20 + int(seed%5)*20; worst > budget {
			t.Fatalf("schedule %d: %d calls in one second, budget %d", seed, worst, budget)
		}
		util += u
		for _, sm := range w.members {
			if sm.m.cfg.Succeeds != "" {
				successors++
				if sm.m.preloaded > 0 {
					tookOver++
				}
			}
		}
	}
	t.Logf("%d schedules with successors: 0 windows over the budget; mean utilisation %.3f; %d successors, %d counted a predecessor's calls and asked for its entry",
		schedules, util/float64(schedules), successors, tookOver)
	if tookOver < successors/4 {
		t.Errorf("only %d of %d successors took a predecessor over: the schedules do not test succession", tookOver, successors)
	}

	for _, broken := range []struct {
		name  string
		tweak func(*simWorld)
	}{
		{"without the preload", func(sw *simWorld) { sw.noPreload = true }},
		// Stamped before the predecessor was proved dead: its last calls may come after.
		{"with the calls stamped 400 ms before the lock", func(sw *simWorld) { sw.stampEarly = 400 * time.Millisecond }},
	} {
		caught := -1
		for seed := range uint64(schedules) {
			worst, _ := randomSchedule(t, seed, func(sw *simWorld) { sw.successors = true; broken.tweak(sw) })
			if worst > 20+int(seed%5)*20 {
				caught = int(seed)
				break
			}
		}
		if caught < 0 {
			t.Fatalf("a successor %s never crossed the budget in %d schedules", broken.name, schedules)
		}
		t.Logf("%s, schedule %d crosses the budget", broken.name, caught)
	}
}

// TestSimulationSuccessorTakesOver: three saturated members; one crashes, and a successor
// starts 300 ms later. The dead member's room comes back about a window after the successor
// counted its calls, not TTL after its last record: the group is back at 195 calls per second
// sooner and makes more calls in the 4 s after the crash than with expiry alone.
func TestSimulationSuccessorTakesOver(t *testing.T) {
	run := func(succeed bool) (n int, back time.Duration) {
		for seed := range uint64(10) {
			w := newWorld(t, seed, 200)
			ms := saturated(w)
			ms[0].gone = true
			from, start := w.now, len(w.calls)
			if succeed {
				w.run(300 * time.Millisecond)
				w.joinAfter(ms[0].id).backlog = 1e9
			}
			var at time.Duration
			for w.now.Sub(from) < 4*time.Second {
				w.step()
				if k, _ := maxWindowEndingAt(w.calls, w.now); at == 0 && k >= 195 && w.now.Sub(from) > time.Second {
					at = w.now.Sub(from)
				}
			}
			if worst, _ := maxWindow(w.calls); worst > 200 {
				t.Fatalf("seed %d: %d calls in one second", seed, worst)
			}
			n, back = n+len(w.calls)-start, back+at
		}
		return n / 10, back / 10
	}
	expN, expBack := run(false)
	sucN, sucBack := run(true)
	t.Logf("calls in the 4 s after a crash (mean of 10): %d by expiry (back at 195/s after %v), %d with a successor 300 ms later (after %v)",
		expN, expBack, sucN, sucBack)
	if sucBack == 0 || sucBack > expBack-500*time.Millisecond {
		t.Errorf("with a successor the group was back %v after the crash, by expiry %v: want at least 0.5 s sooner", sucBack, expBack)
	}
	if sucN < expN+40 {
		t.Errorf("%d calls with a successor, %d by expiry: want the dead member's room back sooner", sucN, expN)
	}
}

// maxWindowEndingAt counts the calls in (t-1s, t].
func maxWindowEndingAt(calls []time.Time, t time.Time) (int, time.Time) {
	n := 0
	for i := len(calls) - 1; i >= 0 && calls[i].After(t.Add(-time.Second)); i-- {
		if !calls[i].After(t) {
			n++
		}
	}
	return n, t
}

// TestLedgerSuccession: a record naming a predecessor ends its entry only when its Used covers
// the predecessor's bound (max(used, claim)); otherwise, or naming itself or nobody live, it
// ends nothing and the entry waits for its TTL.
func TestLedgerSuccession(t *testing.T) {
	t0 := time.Unix(1_900_000_000, 0)
	for _, tc := range []struct {
		name     string
		succ     Record
		wantLive bool
	}{
		{"used covers the bound", Record{Member: "b", Seq: 1, Want: 150, Used: 70, Succeeds: "a"}, false},
		{"used above the bound", Record{Member: "b", Seq: 1, Want: 150, Used: 90, Succeeds: "a"}, false},
		{"used short of the bound", Record{Member: "b", Seq: 1, Want: 150, Used: 69, Succeeds: "a"}, true},
		{"no predecessor named", Record{Member: "b", Seq: 1, Want: 150, Used: 70}, true},
		{"another member named", Record{Member: "b", Seq: 1, Want: 150, Used: 70, Succeeds: "c"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLedger(200, DefaultTTL, DefaultMargin, t0.Add(-time.Hour))
			l.Apply(Record{Member: "a", Seq: 1, TS: t0.UnixNano(), Want: 60, Demand: 200})
			l.Apply(Record{Member: "a", Seq: 2, TS: t0.UnixNano(), Held: 60, Want: 60, Demand: 200, Used: 70})
			if b, _ := l.Bound("a"); b != 70 {
				t.Fatalf("a's bound %d, want 70 (its Used)", b)
			}
			r := tc.succ
			r.TS = t0.Add(100 * time.Millisecond).UnixNano()
			got := l.Apply(r)
			if _, live := l.Bound("a"); live != tc.wantLive {
				t.Fatalf("a live after %+v: %v, want %v", tc.succ, live, tc.wantLive)
			}
			// Ended, a's claim (60) no longer counts against b's grant, nor its bound (70)
			// against what b may use at once: b's own window counts a's calls.
			want := map[bool][2]int{false: {150, 150}, true: {140, 130}}[tc.wantLive]
			if got.Grant != want[0] || got.Now != want[1] {
				t.Errorf("b's grant %d, %d at once; want %d, %d", got.Grant, got.Now, want[0], want[1])
			}
		})
	}
}
