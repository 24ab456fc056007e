package budget

import (
	"testing"
	"time"
)

// saturated starts three members with a backlog each, as the fleet benches run, and lets
// them settle at their thirds.
func saturated(w *simWorld) []*simMember {
	var ms []*simMember
	for range 3 {
		m := w.join()
		m.backlog = 1e9
		ms = append(ms, m)
	}
	w.run(5 * time.Second)
	return ms
}

// grantLost runs three saturated members for 60 s with every record taking latency (plus
// 1–11 ms, and each reader's lag) to come back and loss of them lost, and returns how often a
// fence tripped and how long some member was without a ceiling meanwhile. dropNth > 0 loses
// every dropNth record of each member: single losses, each resent after Resend.
func grantLost(t *testing.T, latency time.Duration, dropNth uint64) (int, time.Duration) {
	w := newWorld(t, 11, 200)
	w.latency, w.dropNth = latency, dropNth
	ms := saturated(w)
	w.fenceTrips = 0
	var zero time.Duration
	for end := w.now.Add(60 * time.Second); w.now.Before(end); {
		w.step()
		for _, m := range ms {
			if m.lim.share == 0 {
				zero += simStep
				break
			}
		}
	}
	return w.fenceTrips, zero
}

// TestSimulationLiveMemberKeepsItsGrant: a live member confirms a record about every Interval
// plus a round trip, so with the defaults it loses its grant only when round trips take
// hundreds of milliseconds, far above a broker's (the fleet bench: 1 ms median, 5 ms p99 from
// publishing a record to reading it back). What bounds the round trip first is Resend: a record
// not back by then is superseded, and its read-back no longer counts. A lost record is resent
// and confirmed before the fence (two in a row are not: Resend twice is past it). The
// tolerance is logged: a grant lost on a slow broker costs
// the member a window and a round trip, never safety.
func TestSimulationLiveMemberKeepsItsGrant(t *testing.T) {
	for _, tc := range []struct {
		name    string
		latency time.Duration
		dropNth uint64
		keeps   bool
	}{
		{"local broker", 0, 0, true},
		{"100 ms round trips", 100 * time.Millisecond, 0, true},
		{"250 ms round trips", 250 * time.Millisecond, 0, true},
		{"50 ms round trips, every 7th record lost", 50 * time.Millisecond, 7, true},
		{"150 ms round trips, every 7th record lost", 150 * time.Millisecond, 7, true},
		{"400 ms round trips: past resend", 400 * time.Millisecond, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			trips, zero := grantLost(t, tc.latency, tc.dropNth)
			if keeps := trips == 0 && zero == 0; keeps != tc.keeps {
				t.Errorf("fence tripped %d times, a member without a ceiling for %v of 60 s; want the grant kept: %v", trips, zero, tc.keeps)
			}
		})
	}
	tolerance := func(dropNth uint64) time.Duration {
		for l := time.Duration(0); l < 2*time.Second; l += 10 * time.Millisecond {
			if trips, zero := grantLost(t, l, dropNth); trips > 0 || zero > 0 {
				return l - 10*time.Millisecond
			}
		}
		return 2 * time.Second
	}
	t.Logf("fence %v, resend %v: grants kept up to %v of added round trip, %v with every 7th record lost",
		DefaultFence, DefaultResend, tolerance(0), tolerance(7))
}

// TestSimulationCutOffStopsByFence: a member whose records stop coming back keeps its grant
// until the fence of its last confirmed record, its limiter makes no call from then on, and the
// member lowers its ceiling to 0 at its first tick after it. With session 7's fence (1.4 s) it
// could call for up to 1.4 s after the cut.
func TestSimulationCutOffStopsByFence(t *testing.T) {
	for seed := range uint64(20) {
		w := newWorld(t, seed, 200)
		ms := saturated(w)
		cut := ms[seed%3]
		from := w.now
		cut.cutUntil = w.now.Add(5 * time.Second)
		fence := cut.lim.fence.Add(-cut.skew) // its limiter's fence, on the true clock
		for w.now.Sub(from) < 2*time.Second {
			w.step()
			fence = cut.lim.fence.Add(-cut.skew)
			if n := len(cut.lim.calls); n > 0 && !cut.lim.calls[n-1].Before(fence) {
				t.Fatalf("seed %d: a call %v after its fence", seed, cut.lim.calls[n-1].Sub(fence))
			}
			if w.now.After(fence.Add(w.cfg.Interval/2)) && cut.lim.share != 0 {
				t.Fatalf("seed %d: ceiling still %d %v past its fence", seed, cut.lim.share, w.now.Sub(fence))
			}
		}
		if d := fence.Sub(from); d <= 0 || d > 800*time.Millisecond { // DESIGN.md "Fence and TTL"
			t.Errorf("seed %d: fenced %v after the cut, want within 0.8 s", seed, d)
		}
	}
}

// TestSimulationCrashRoomReturns replays fleet-kill's crash: three saturated members, one
// killed. Its grant is held until its entry expires (TTL after its last record), the others
// grow into it at once when they read that. The calls of the survivors in the 4 s after the
// crash, with session 7's durations and with the defaults: the shorter TTL gives back about a
// second of the dead member's third. (On session 7's defaults both rows are the same.)
func TestSimulationCrashRoomReturns(t *testing.T) {
	session7 := Config{TTL: 3500 * time.Millisecond, Fence: 1400 * time.Millisecond, Margin: 500 * time.Millisecond,
		Resend: 500 * time.Millisecond}
	calls := func(cfg Config) (n int, back time.Duration) {
		for seed := range uint64(10) {
			w := newWorld(t, seed, 200)
			w.cfg.TTL, w.cfg.Fence, w.cfg.Margin, w.cfg.Resend = cfg.TTL, cfg.Fence, cfg.Margin, cfg.Resend
			w.cfg.setDefaults()
			ms := saturated(w)
			ms[0].gone = true
			from, start := w.now, len(w.calls)
			var at time.Duration
			for w.now.Sub(from) < 4*time.Second {
				w.step()
				if at == 0 && ms[1].lim.share+ms[2].lim.share >= 195 {
					at = w.now.Sub(from)
				}
			}
			n, back = n+len(w.calls)-start, back+at
		}
		return n / 10, back / 10
	}
	oldN, oldBack := calls(session7)
	newN, newBack := calls(Config{})
	t.Logf("survivors' calls in the 4 s after a crash (mean of 10): %d with TTL %v (back at 195 after %v), %d with TTL %v (after %v)",
		oldN, session7.TTL, oldBack, newN, DefaultTTL, newBack)
	if newBack == 0 || newBack > DefaultTTL+300*time.Millisecond {
		t.Errorf("the survivors were back at the budget %v after the crash, want within TTL %v and a round trip", newBack, DefaultTTL)
	}
	if newN < oldN+50 {
		t.Errorf("%d calls in the 4 s after a crash, session 7's durations %d: want the dead member's room back about a second sooner", newN, oldN)
	}
}
