package budget

import (
	"slices"
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
		// Slots partly older than the window at the lock: the predecessor may have used
		// their room again after its last record, with calls no record timed.
		{"counting every slot of the predecessor's ages", func(sw *simWorld) { sw.allSlots = true }},
		// Up to a step before the calls they stand for.
		{"stamping each slot at its start", func(sw *simWorld) { sw.slotStart = true }},
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

// TestPreloadPlan: a successor counts each slot of its predecessor's last record that lies
// wholly within the window before the lock, at the slot's end; the rest of the bound at the
// lock. Record at T, lock at T+100ms, window 1005 ms: the window reaches back to T−905ms, so
// slots 0 to 17 ((T−900ms, T−850ms] and newer) count and 18 on do not.
func TestPreloadPlan(t *testing.T) {
	T := time.Unix(1_900_000_000, 0)
	ms := func(d int) time.Time { return T.Add(time.Duration(d) * time.Millisecond) }
	slot := func(i, n int) []int { a := make([]int, i+1); a[i] = n; return a }
	for _, tc := range []struct {
		name     string
		bound    int
		ages     []int
		lock     time.Time
		wantPlan []stamped
		wantRest int
	}{
		{"no ages: the whole bound at the lock", 20, nil, ms(100), nil, 20},
		{"slots in the window at their ends", 20, []int{5, 0, 10}, ms(100), []stamped{{5, ms(0)}, {10, ms(-100)}}, 5},
		{"the oldest slot wholly in the window", 12, slot(17, 4), ms(100), []stamped{{4, ms(-850)}}, 8},
		{"a slot partly before the window: its room may have been used again", 12, slot(18, 4), ms(100), nil, 12},
		{"more timed than the bound: nothing left for the lock", 20, []int{30}, ms(100), []stamped{{30, ms(0)}}, 0},
		{"a lock a window after the record: nothing timed counts", 20, []int{5, 5}, ms(1100), nil, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan, rest := preloadPlan(tc.bound, T, tc.ages, tc.lock, DefaultWindow, false, false)
			if !slices.Equal(plan, tc.wantPlan) || rest != tc.wantRest {
				t.Errorf("plan %v, rest %d; want %v, %d", plan, rest, tc.wantPlan, tc.wantRest)
			}
		})
	}
}

// stampSink is a Sink that records what it was told to preload.
type stampSink struct{ preloads []stamped }

func (s *stampSink) SetCeiling(int, int)         {}
func (s *stampSink) SetFence(time.Time)          {}
func (s *stampSink) Preload(n int, at time.Time) { s.preloads = append(s.preloads, stamped{n, at}) }

// TestSuccessorStampsPredecessorsCalls: once ready, a successor tells its sink the calls its
// predecessor's last record timed, at their slots' ends, and the rest of the bound at the lock,
// in its first record; a bound raised by a record of the predecessor read later is counted at
// the lock.
func TestSuccessorStampsPredecessorsCalls(t *testing.T) {
	t0 := time.Unix(1_900_000_000, 0)
	ms := func(d int) time.Time { return t0.Add(time.Duration(d) * time.Millisecond) }
	lock := ms(100)
	sink := &stampSink{}
	c := Config{Member: "b", Budget: 200, Succeeds: "a", SucceedsAt: lock}
	m, err := NewMember(c, sink, c.StartAt(t0))
	if err != nil {
		t.Fatal(err)
	}
	ages := make([]int, 20)
	ages[0], ages[5], ages[19] = 10, 20, 30 // slot 19 lies partly before the window at the lock
	m.Apply(Record{Member: "a", Seq: 5, TS: ms(-50).UnixNano(), Want: 60, Demand: 200, Used: 60, Ages: ages}, t0)
	r, _ := m.Tick(ms(150), 200, 0, nil)
	m.Apply(*r, ms(150))
	if len(sink.preloads) != 0 {
		t.Fatalf("preloaded %v before the member was ready", sink.preloads)
	}
	r, _ = m.Tick(ms(200), 200, 0, nil)
	want := []stamped{{10, ms(-50)}, {20, ms(-300)}, {30, lock}}
	if !slices.Equal(sink.preloads, want) {
		t.Fatalf("preloaded %v, want %v", sink.preloads, want)
	}
	if r.Succeeds != "a" || r.Used < 60 {
		t.Errorf("first ready record %+v: want it to name a with Used covering its bound 60", r)
	}
	m.Apply(Record{Member: "a", Seq: 6, TS: ms(-10).UnixNano(), Held: 60, Want: 60, Demand: 200, Used: 70}, ms(210))
	m.Tick(ms(200).Add(DefaultResend), 200, 0, nil) // the first record never came back: resent
	if want = append(want, stamped{10, lock}); !slices.Equal(sink.preloads, want) {
		t.Errorf("after the bound rose to 70: preloaded %v, want %v", sink.preloads, want)
	}
}
