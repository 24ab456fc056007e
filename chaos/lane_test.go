package chaos

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"
)

// A lane schedule fails accounts (each fault ended by its own end step), triggers some stops,
// kills and pauses on the lane's log events, and still produces every account's events in seq
// order across steps: the trickle drawn ahead of its time reserves its accounts.
func TestScheduleRetryLane(t *testing.T) {
	triggered := 0
	for seed := uint64(1); seed <= 40; seed++ {
		s := NewSchedule(Options{Seed: seed, Duration: 60 * time.Second, RetryLane: true})
		if again := NewSchedule(s.Options); again.String() != s.String() {
			t.Fatalf("seed %d: two draws differ", seed)
		}
		if s.StallLimit != 2*time.Second || s.Count(KindFail) == 0 || s.Count(KindFail) != s.Count(KindFailEnd) {
			t.Errorf("seed %d: stall limit %v, %d fail and %d fail-end steps\n%s", seed, s.StallLimit, s.Count(KindFail), s.Count(KindFailEnd), s)
		}
		failing, slow := map[string]bool{}, map[string]bool{}
		last := map[string]int64{} // each account's highest seq of the steps before
		for i, st := range s.Steps {
			switch st.Kind {
			case KindFail, KindFailEnd:
				if failing[st.Account] == (st.Kind == KindFail) || slow[st.Account] {
					t.Fatalf("seed %d: %s of %s at %v overlaps or ends nothing\n%s", seed, st.Kind, st.Account, st.At, s)
				}
				failing[st.Account] = st.Kind == KindFail
			case KindSlow, KindSlowEnd:
				slow[st.Account] = st.Kind == KindSlow
			}
			if st.On != "" {
				triggered++
				if st.Within <= 0 || !slices.Contains([]Kind{KindStop, KindKill, KindPause}, st.Kind) {
					t.Fatalf("seed %d: step %d %s on %s within %v", seed, i, st.Kind, st.On, st.Within)
				}
			}
			for _, r := range st.Records {
				if r.Seq > 0 && r.Seq <= last[r.Account] {
					t.Fatalf("seed %d: %s seq %d at %v after seq %d was produced\n%s", seed, r.Account, r.Seq, st.At, last[r.Account], s)
				}
			}
			for _, r := range st.Records {
				last[r.Account] = max(last[r.Account], r.Seq)
			}
		}
	}
	if triggered == 0 {
		t.Error("no triggered step in 40 lane schedules")
	}
	// Without RetryLane a seed draws what it always did.
	if a, b := NewSchedule(Options{Seed: 5}).String(), NewSchedule(Options{Seed: 5, StallLimit: time.Second}).String(); a != b {
		t.Error("StallLimit without RetryLane changed the schedule")
	}
}

// TestChaosShortLane runs one short lane seed in the default suite (`make test`); -short skips it.
func TestChaosShortLane(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no fleet runs")
	}
	c := broker(t)
	o := options(t, c, 4, 20*time.Second, 3)
	o.RetryLane = true
	s := NewSchedule(o)
	res := play(t, c, s)
	verify(t, s, res)
	if res.Parks == 0 {
		t.Errorf("no account was parked: the run did not exercise the lane\n%s", s)
	}
}

// TestChaosCatchesUngatedLane is the suite's own test of the lane's admission gate: replicas
// whose lane copies are written before a commit states their main-topic records ended
// (CHATGROUPD_TEST_BREAK=ungated-lane) are killed the moment they unpark an account, after the
// lane applied the copy of an event forwarded moments before. The successor reads that event at
// main as never sent and applies it again: the checker must see the duplicate creates.
func TestChaosCatchesUngatedLane(t *testing.T) {
	c := selfTestBroker(t)
	s := laneKillSchedule(95)
	res := play(t, c, s, "CHATGROUPD_TEST_BREAK=ungated-lane")
	r := res.Report
	t.Logf("parks %d unparks %d, kills on an unpark %d of %d", res.Parks, res.Unparks, res.Triggered, res.Triggered+res.TriggerMissed)
	mustCatch(t, s, r, r.DuplicateCreates > 0, "lane copies written before their main records are stated ended")
}

// TestChaosUngatedLaneControl runs that self-test's schedule without the break: it must pass.
// With the seeds of `make chaos`.
func TestChaosUngatedLaneControl(t *testing.T) {
	if os.Getenv(envSeeds) == "" {
		t.Skipf("%s not set (make chaos sets it)", envSeeds)
	}
	c := controlBroker(t)
	s := laneKillSchedule(95)
	res := play(t, c, s)
	verify(t, s, res)
	if res.Parks == 0 || res.Triggered == 0 {
		t.Errorf("parks %d, kills on an unpark %d: the control did not exercise the lane", res.Parks, res.Triggered)
	}
}

// laneKillSchedule: three replicas with the lane on (stall limit 1 s). Three times, eight
// accounts fail for 3 s with three events each queued (their heads park them), then get one event
// each every 150 ms from 2 s to 6 s after the fault began, so events are forwarded while the lane
// drains them; a replica is SIGKILLed as soon as it logs an unpark (else 5 s later) and restarted
// at once. Episodes are 13 s apart, so the rebalance after a kill (the dead member leaves a
// session later) is over before the next fault. Eight other accounts get an event every 250 ms
// while the accounts fail: without them the failing accounts' calls read as an API outage, which
// pauses dispatch instead of parking anyone. They stop before the lane drains, so a replica
// whose accounts are all parked commits only every second then (no record of it waits for an
// admission, which asks for a commit): the event forwarded just before an unpark is seldom
// stated when the kill comes, which is what the broken gate needs to be seen.
func laneKillSchedule(seed uint64) *Schedule {
	o := Options{Seed: seed, Duration: 39 * time.Second, Replicas: 3, SessionTimeout: 4 * time.Second,
		RetryLane: true, StallLimit: time.Second}.withDefaults()
	g := &generator{o: o, rng: rand.New(rand.NewPCG(seed, seed)), seq: map[string]int64{}}
	var steps []Step
	for ep := range 3 {
		e0 := time.Duration(ep)*13*time.Second + 500*time.Millisecond
		for at := e0; at < e0+3*time.Second; at += 250 * time.Millisecond {
			var recs []Record
			for i := range 8 {
				recs = append(recs, g.valid(fmt.Sprintf("%s%02d", userPrefix, 24+(int(at/(250*time.Millisecond))+i)%16)))
			}
			steps = append(steps, Step{At: at, Kind: KindBurst, Records: recs, Note: "background"})
		}
		var accts []string
		var recs []Record
		for i := range 8 {
			a := fmt.Sprintf("%s%02d", userPrefix, ep*8+i)
			accts = append(accts, a)
			steps = append(steps, Step{At: e0, Kind: KindFail, Account: a, For: 3 * time.Second},
				Step{At: e0 + 3*time.Second, Kind: KindFailEnd, Account: a})
			for range 3 {
				recs = append(recs, g.valid(a))
			}
		}
		steps = append(steps, Step{At: e0, Kind: KindBurst, Records: recs, Note: "queued behind the failing heads"})
		for at := e0 + 2*time.Second; at < e0+6*time.Second; at += 150 * time.Millisecond {
			recs = nil
			for _, a := range accts {
				recs = append(recs, g.valid(a))
			}
			steps = append(steps, Step{At: at, Kind: KindBurst, Records: recs, Note: "lane trickle"})
		}
		steps = append(steps,
			Step{At: e0 + 2500*time.Millisecond, Kind: KindKill, Slot: ep % 3, On: OnUnpark, Within: 5 * time.Second},
			Step{At: e0 + 7600*time.Millisecond, Kind: KindStart, Slot: ep % 3})
	}
	slices.SortStableFunc(steps, func(a, b Step) int { return int(a.At - b.At) })
	return &Schedule{Options: o, Steps: steps}
}
