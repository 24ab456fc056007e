package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
)

// TestDrainStopsCallsNotSent: once Task.Drain ends, a dispatch that has not sent its request
// (waiting for a grant, a pause or a backoff) returns ErrDrained at once without calling the API,
// while ctx, which bounds calls already sent, is still alive.
func TestDrainStopsCallsNotSent(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tweak func(*Config)
		setup func(*fakeAPI)
	}{
		{"paused", nil, func(f *fakeAPI) {
			f.setAlways(im.APICreate, imErr(im.APICreate, im.CodeSigKeyMismatch))
			f.setAlways(im.APIGet, imErr(im.APIGet, im.CodeSigKeyMismatch))
		}},
		{"backing off", func(c *Config) {
			c.Sleep = sleep // real time: a 10-minute backoff
			c.BackoffBase, c.BackoffMax = 10*time.Minute, 10*time.Minute
		}, func(f *fakeAPI) { f.setAlways(im.APICreate, imErr(im.APICreate, 60008)) }},
		{"queued in the limiter", func(c *Config) { c.Limiter.Standalone = false }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.tweak)
			if tc.setup != nil {
				tc.setup(h.api)
			}
			h.run()
			time.Sleep(20 * time.Millisecond) // the startup probe
			before := h.api.count(im.APICreate)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			drain, drained := context.WithCancel(context.Background())
			res := h.async(ctx, Task{Event: newEvent("alice", "friends"), Drain: drain})
			time.Sleep(50 * time.Millisecond)
			after := h.api.count(im.APICreate)
			drained()
			select {
			case r := <-res:
				if !errors.Is(r.err, ErrDrained) {
					t.Fatalf("Dispatch after drain = %+v, %v; want ErrDrained", r.o, r.err)
				}
			case <-time.After(time.Second):
				t.Fatal("Dispatch did not return within 1s of the drain")
			}
			if n := h.api.count(im.APICreate); n != after {
				t.Errorf("creates went from %d to %d after the drain (%d before the dispatch)", after, n, before)
			}
		})
	}
}

// TestDrainLetsASentCallFinish: a request already on its way when Drain ends gets its answer,
// and an applied answer is returned as the outcome, not dropped.
func TestDrainLetsASentCallFinish(t *testing.T) {
	h := newHarness(t, nil)
	gate := make(chan struct{})
	h.api.gate = gate
	h.run()
	drain, drained := context.WithCancel(context.Background())
	res := h.async(context.Background(), Task{Event: newEvent("alice", "friends"), Drain: drain})
	testwait.For(t, 5*time.Second, "create sent", func() bool {
		h.api.mu.Lock()
		defer h.api.mu.Unlock()
		return h.api.entered == 1
	})
	drained()
	select {
	case r := <-res:
		t.Fatalf("Dispatch returned %+v, %v while its request was in flight", r.o, r.err)
	case <-time.After(100 * time.Millisecond):
	}
	close(gate)
	wantApplied(t, "dispatch in flight at the drain", res, 2*time.Second)
	if h.api.group("alice", "friends") == nil {
		t.Error("group not created")
	}
}

// TestZeroShareStopsNewGrants: SetPartitions with no partitions (what the consumer does the
// moment a generation ends) gives no grant to a new call until a share is set again.
func TestZeroShareStopsNewGrants(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Limiter.Standalone, c.Now, c.Sleep = false, time.Now, sleep })
	h.run()
	h.d.SetPartitions([]int{0, 1}, 4)
	testwait.For(t, 5*time.Second, "first share in force", func() bool { return h.d.create.Rate() > 0 })
	wantApplied(t, "dispatch with a share", h.async(context.Background(), Task{Event: newEvent("alice", "a")}), 2*time.Second)
	h.d.SetPartitions(nil, 4)
	if r := h.d.create.Rate(); r != 0 {
		t.Fatalf("rate after the share was dropped = %v, want 0", r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := h.async(ctx, Task{Event: newEvent("bob", "b")})
	time.Sleep(200 * time.Millisecond)
	if n := h.api.count(im.APICreate); n != 1 {
		t.Fatalf("creates = %d with no share, want 1 (the one before)", n)
	}
	h.d.SetPartitions([]int{2}, 4)
	wantApplied(t, "dispatch after the share came back", res, 3*time.Second)
}

// TestLeaseHoldsRequests: while Task.Lease reports false (the consumer's membership went
// unconfirmed, as when its process was paused past its session) no request is sent; it goes
// when the lease is back, and a drain meanwhile ends the dispatch unsent.
func TestLeaseHoldsRequests(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Now, c.Sleep = time.Now, sleep })
	h.run()
	time.Sleep(20 * time.Millisecond) // the startup probe
	var ok atomic.Bool
	lease := ok.Load
	res := h.async(context.Background(), Task{Event: newEvent("alice", "friends"), Lease: lease})
	time.Sleep(150 * time.Millisecond)
	if n := h.api.count(im.APICreate); n != 0 {
		t.Fatalf("%d creates sent without a lease", n)
	}
	ok.Store(true)
	wantApplied(t, "dispatch once the lease is back", res, 2*time.Second)

	ok.Store(false)
	drain, drained := context.WithCancel(context.Background())
	res = h.async(context.Background(), Task{Event: newEvent("bob", "friends"), Lease: lease, Drain: drain})
	time.Sleep(50 * time.Millisecond)
	drained()
	wantDrained(t, "held by the lease", res)
	if n := h.api.count(im.APICreate); n != 1 {
		t.Errorf("creates = %d, want 1 (bob's never sent)", n)
	}
}

// TestAdmitHoldsRequests: Task.Admit is asked before a call has its grant, and nothing is sent
// until it returns (the consumer waits there for a commit that lists the record); a refusal
// sends nothing and the call queues for a grant again; a drain while it waits ends the dispatch
// with ErrDrained, unsent.
func TestAdmitHoldsRequests(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Now, c.Sleep = time.Now, sleep })
	h.run()
	time.Sleep(20 * time.Millisecond) // the startup probe
	asked, release := make(chan struct{}, 4), make(chan error)
	admitter := func() func(context.Context) error {
		var done atomic.Bool // once admitted, admitted again at once (Task.Admit's contract)
		return func(ctx context.Context) error {
			if done.Load() {
				return nil
			}
			asked <- struct{}{}
			select {
			case err := <-release:
				done.Store(err == nil)
				return err
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
	}
	res := h.async(context.Background(), Task{Event: newEvent("alice", "friends"), Admit: admitter()})
	<-asked
	if n := h.api.count(im.APICreate); n != 0 {
		t.Fatalf("%d creates sent before the admission", n)
	}
	release <- errors.New("not yet") // refused: nothing sent, asked again
	<-asked
	if n := h.api.count(im.APICreate); n != 0 {
		t.Fatalf("%d creates sent after a refused admission", n)
	}
	release <- nil
	wantApplied(t, "dispatch once admitted", res, 2*time.Second)

	drain, drained := context.WithCancel(context.Background())
	res = h.async(context.Background(), Task{Event: newEvent("bob", "friends"), Admit: admitter(), Drain: drain})
	<-asked
	drained()
	wantDrained(t, "waiting for its admission", res)
	if n := h.api.count(im.APICreate); n != 1 {
		t.Errorf("creates = %d, want 1 (bob's never sent)", n)
	}
}

// TestAdmitBeforeGrant: Task.Admit is asked before the grant, so its wait holds no slot of the
// window, and only Config.AdmitAhead admitted events wait for their first grant at a time (each
// is listed by the consumer as possibly written, hence uncertain after a crash). With no grant
// to be had (fleet mode before its first ceiling) exactly AdmitAhead of ten events are admitted;
// once calls are granted, the rest are admitted as the first ones take their grants, and each
// event is admitted once, however many calls it makes.
func TestAdmitBeforeGrant(t *testing.T) {
	const ahead = 4
	h := newHarness(t, func(c *Config) {
		c.Limiter.Standalone = false
		c.FleetBudget, c.RateLimit, c.AdmitAhead = true, 200, ahead
		c.Now, c.Sleep = time.Now, sleep
	})
	var mu sync.Mutex
	admitted := map[string]int{}
	admit := func(account string) func(context.Context) error {
		return func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			admitted[account]++
			return nil
		}
	}
	count := func() (events, asks int) {
		mu.Lock()
		defer mu.Unlock()
		for _, n := range admitted {
			events, asks = events+1, asks+n
		}
		return events, asks
	}
	var res []<-chan result
	for i := range 10 {
		a := fmt.Sprintf("u%d", i)
		res = append(res, h.async(context.Background(), Task{Event: newEvent(a, "friends"), Admit: admit(a)}))
	}
	testwait.For(t, 5*time.Second, "admitted events waiting at the limiter", func() bool { return h.d.create.Waiting() == ahead })
	time.Sleep(50 * time.Millisecond) // room for a wrong admission
	if events, _ := count(); events != ahead {
		t.Fatalf("%d events admitted with no grant to be had, want AdmitAhead = %d", events, ahead)
	}
	if n := h.api.count(im.APICreate); n != 0 {
		t.Fatalf("%d creates sent with no ceiling", n)
	}
	h.d.SetCeiling(200, 200)
	for i, r := range res {
		wantApplied(t, fmt.Sprintf("event %d", i), r, 5*time.Second)
	}
	// Each admitted once before its grant and once again before its write (at once).
	if events, asks := count(); events != 10 || asks != 20 {
		t.Errorf("%d events admitted, %d admissions; want 10 and 20", events, asks)
	}
}

// wantDrained checks that a dispatch (what it was doing: "held by the lease") returns
// ErrDrained within a second of its drain.
func wantDrained(t *testing.T, what string, res <-chan result) {
	t.Helper()
	select {
	case r := <-res:
		if !errors.Is(r.err, ErrDrained) {
			t.Fatalf("Dispatch drained while %s = %+v, %v; want ErrDrained", what, r.o, r.err)
		}
	case <-time.After(time.Second):
		t.Fatalf("Dispatch %s did not return within 1s of the drain", what)
	}
}
