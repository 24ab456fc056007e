package budget

import (
	"testing"
	"time"
)

func TestEntryBound(t *testing.T) {
	for _, tc := range []struct {
		name             string
		e                entry
		want, wantPeaked int
	}{
		{"steady at its grant", entry{held: 100, want: 100, grant: 100, used: 100, peak: 100}, 100, 100},
		// Shrank from 100 to 67: its window still holds 90 calls from before, and it makes
		// none until fewer than 67 remain; the peak held others off for the whole window.
		{"shrinking", entry{held: 67, want: 67, grant: 67, used: 90, peak: 100}, 90, 100},
		{"shrunk, old calls aged out", entry{held: 67, want: 67, grant: 67, used: 60, peak: 100}, 67, 100},
		{"left, window draining", entry{used: 40, peak: 100}, 40, 40},
		{"left, window empty", entry{peak: 100}, 0, 0},
		{"asking to grow", entry{held: 50, want: 120, grant: 50, used: 50, peak: 50}, 120, 120},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.e.bound(); got != tc.want {
				t.Errorf("bound = %d, want %d", got, tc.want)
			}
			tc.e.peakBound = true
			if got := tc.e.bound(); got != tc.wantPeaked {
				t.Errorf("former bound = %d, want %d", got, tc.wantPeaked)
			}
		})
	}
}

// joinRamp runs two members with a backlog, lets a third with a backlog join, and returns the
// group's calls in each of the three seconds after the join and the highest one-second window.
func joinRamp(t *testing.T, seed uint64, peakBound bool) (perSecond [3]int, worst int) {
	w := newWorld(t, seed, 200)
	join := func() {
		m := w.join()
		m.m.ledger.peakBound = peakBound
		m.backlog = 1e9
	}
	join()
	join()
	w.run(5 * time.Second)
	start, from := len(w.calls), w.now
	join()
	w.run(3 * time.Second)
	for _, c := range w.calls[start:] {
		perSecond[int(c.Sub(from)/time.Second)]++
	}
	worst, _ = maxWindow(w.calls)
	return perSecond, worst
}

// TestSimulationJoinRamp: when a member with a backlog joins two that use the whole budget, the
// two shrink at once and the newcomer grows into the room their records show free. With the
// bound max(Used, claim) that room appears as their calls from before the shrink age out, so
// the group stays near the budget; with the former bound (their last window's peak) the
// newcomer waited a whole window for room already free, and the group's first second after the
// join fell by about a third of the budget.
func TestSimulationJoinRamp(t *testing.T) {
	const seeds = 50
	var sum, sumPeaked [3]int
	for seed := range uint64(seeds) {
		got, worst := joinRamp(t, seed, false)
		peaked, worstPeaked := joinRamp(t, seed, true)
		if worst > 200 || worstPeaked > 200 {
			t.Fatalf("seed %d: %d (former bound %d) calls in one second, budget 200", seed, worst, worstPeaked)
		}
		for i := range got {
			sum[i] += got[i]
			sumPeaked[i] += peaked[i]
		}
	}
	for i := range sum {
		t.Logf("second %d after the join: %d calls on average (former bound: %d)", i+1, sum[i]/seeds, sumPeaked[i]/seeds)
	}
	if first := sum[0] / seeds; first < 190 {
		t.Errorf("%d calls in the first second after the join on average, want >= 190", first)
	}
	if first := sumPeaked[0] / seeds; first >= 190 {
		t.Errorf("the former bound made %d calls in the first second after the join: this schedule no longer shows the wait", first)
	}
}
