package ratelimit

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/internal/fakeclock"
)

// member is one replica's create limiter in a fleet simulation: its own clock offset, and wake-ups
// that run late by up to a few milliseconds like real timers.
type member struct {
	l      *Limiter
	offset time.Duration
	wake   time.Time // real time of its next try
}

// runFleet drives members on one real clock for span, every member always having work, and
// returns the real times of all calls, sorted. events run at their real offsets from the start.
func runFleet(t *testing.T, clock *fakeclock.Clock, rng *rand.Rand, members []*member, span time.Duration, events map[time.Duration]func()) []time.Time {
	t.Helper()
	start := clock.Now()
	var calls []time.Time
	var due []time.Duration
	for at := range events {
		due = append(due, at)
	}
	slices.Sort(due)
	for clock.Now().Sub(start) < span {
		now := clock.Now()
		for len(due) > 0 && now.Sub(start) >= due[0] {
			events[due[0]]()
			due = due[1:]
		}
		next := start.Add(span)
		if len(due) > 0 {
			next = earliest(next, start.Add(due[0]))
		}
		for _, m := range members {
			if m.wake.After(now) {
				next = earliest(next, m.wake)
				continue
			}
			for {
				g, wait, _ := m.l.tryGrant()
				if g == nil {
					if wait <= 0 {
						wait = 10 * time.Millisecond // no share yet: look again later
					}
					m.wake = now.Add(wait + time.Duration(rng.Int64N(int64(3*time.Millisecond))))
					next = earliest(next, m.wake)
					break
				}
				local := m.l.cfg.Now()
				m.l.wrote(g, local, local, "")
				m.l.finished(g)
				calls = append(calls, now)
			}
		}
		if !next.After(now) {
			next = now.Add(time.Microsecond)
		}
		clock.Set(next)
	}
	slices.SortFunc(calls, func(a, b time.Time) int { return a.Compare(b) })
	return calls
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func newMember(clock *fakeclock.Clock, budget float64, offset time.Duration) *member {
	cfg := &Config{Now: func() time.Time { return clock.Now().Add(offset) }}
	cfg.setDefaults()
	return &member{l: newLimiter("create_contact_group", budget, cfg), offset: offset}
}

// TestTurnsKeepFleetWithinBudget: with fewer whole calls per second than partitions, a member
// can't have a per-window ceiling of its own below one, so without turns every member with a
// partition makes a call in some window: 6 replicas of 6 partitions under a budget of 5 make
// 6 calls in a second, 256 replicas of one partition each under 200 make 256. With turns no
// second holds more than the budget, with the members' clocks up to 10 ms apart and their timers
// late by up to 3 ms, across a rebalance that moves every partition.
func TestTurnsKeepFleetWithinBudget(t *testing.T) {
	for _, tc := range []struct {
		name    string
		budget  float64
		total   int
		members [][]int // partitions of each member
	}{
		{"budget 5, 6 partitions, 6 replicas", 5, 6, spread(6, 6)},
		{"budget 5, 6 partitions, 2 replicas", 5, 6, spread(6, 2)},
		{"budget 200, 256 partitions, 256 replicas", 200, 256, spread(256, 256)},
		{"budget 200, 256 partitions, 9 replicas", 200, 256, spread(256, 9)},
		{"budget 1, 3 partitions, 3 replicas", 1, 3, spread(3, 3)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			rng := rand.New(rand.NewPCG(7, uint64(tc.total)))
			var ms []*member
			for _, ids := range tc.members {
				m := newMember(clock, tc.budget, time.Duration(rng.Int64N(int64(20*time.Millisecond)))-10*time.Millisecond)
				m.l.SetPartitions(ids, tc.total)
				ms = append(ms, m)
			}
			// At 20s every partition moves to the next member: the losers drop it first, the
			// gainers hear of it up to 200ms later.
			rebalance := func() {
				order := rng.Perm(len(ms))
				for _, i := range order {
					next := tc.members[(i+1)%len(ms)]
					ms[i].l.SetPartitions(intersect(tc.members[i], next), tc.total)
				}
				clock.Advance(time.Duration(rng.Int64N(int64(200 * time.Millisecond))))
				for _, i := range order {
					ms[i].l.SetPartitions(tc.members[(i+1)%len(ms)], tc.total)
				}
			}
			span := 40 * time.Second
			calls := runFleet(t, clock, rng, ms, span, map[time.Duration]func(){20 * time.Second: rebalance})
			if got := maxWindow(calls, time.Second); got > int(tc.budget) {
				t.Errorf("%d calls in one second, budget %v", got, tc.budget)
			}
			util := float64(len(calls)) / (span.Seconds() * tc.budget)
			t.Logf("%d calls in %v: utilisation %.3f of the budget, highest second %d", len(calls), span, util, maxWindow(calls, time.Second))
			if util < 0.85 {
				t.Errorf("utilisation %.3f, want >= 0.85 (turns cost about 7%%, the rebalance one window)", util)
			}
		})
	}
}

// spread deals partitions 0..total-1 round-robin to n members.
func spread(total, n int) [][]int {
	out := make([][]int, n)
	for p := range total {
		out[p%n] = append(out[p%n], p)
	}
	return out
}

func intersect(a, b []int) []int {
	var out []int
	for _, x := range a {
		if slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

func TestTurnsRespectRateFactor(t *testing.T) {
	for _, f := range []float64{1, 0.7, 0.49, 0.1} {
		t.Run(fmt.Sprint(f), func(t *testing.T) {
			n := 0
			for c := range int64(1000) {
				if useCycle(c, f) {
					n++
				}
			}
			if want := int(1000 * f); n < want-1 || n > want+1 {
				t.Errorf("factor %v uses %d of 1000 turns, want %d", f, n, want)
			}
		})
	}
}
