package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
)

// TestResignRetryTakesASlot runs the real IM client against a server that rejects every other
// request's sig (70001): the client re-signs and sends again inside one call. Both requests
// count at the server, so both must pass the limiter: no second of the server's count may hold
// more than the budget.
func TestResignRetryTakesASlot(t *testing.T) {
	const budget = 10
	var (
		h        *harness
		mu       sync.Mutex
		arrivals []time.Time
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		arrivals = append(arrivals, h.clock.Now())
		n := len(arrivals)
		mu.Unlock()
		if n%2 == 1 {
			fmt.Fprint(w, `{"ActionStatus":"FAIL","ErrorCode":70001,"ErrorInfo":"sig expired"}`)
			return
		}
		fmt.Fprintf(w, `{"ActionStatus":"OK","ErrorCode":0,"GroupResultItem":[{"GroupItem":{"GroupName":"g","GroupId":%d},"ResultItem":[]}]}`, n)
	}))
	defer srv.Close()
	client, err := im.New(im.Config{SDKAppID: 1400000000, SecretKey: "k", BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	h = newHarness(t, func(c *Config) {
		c.API = client
		c.RateLimit = budget
	})
	const events = 30
	for i := range events {
		o, err := h.d.Dispatch(context.Background(), Task{Event: newEvent(fmt.Sprintf("user%d", i), "g")})
		if err != nil || o.Result != Applied {
			t.Fatalf("event %d: %+v %v", i, o, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(arrivals) != 2*events {
		t.Fatalf("%d requests for %d events, want %d (each re-signed once)", len(arrivals), events, 2*events)
	}
	if got := maxWindow(arrivals, time.Second); got > budget {
		t.Errorf("the server counted %d requests in one second, budget %d", got, budget)
	}
}

// TestLeaseCheckedAtTheWrite: the lease is valid when the request passes its grant but has lapsed
// by the time the IM client writes it (the process was paused or starved in between: signing,
// dialing, waiting for the connection's writer). Nothing may reach the server; the dispatch
// waits for the lease and ends with ErrDrained at the drain.
func TestLeaseCheckedAtTheWrite(t *testing.T) {
	client, srv := recordingServer(t)
	h := newHarness(t, func(c *Config) { c.API, c.Now, c.Sleep = client, time.Now, sleep })
	for _, tc := range []struct {
		name      string
		uncertain bool
	}{{"create", false}, {"look-up first", true}} {
		t.Run(tc.name, func(t *testing.T) {
			srv.reset()
			var asked atomic.Int32
			lease := func() bool { return asked.Add(1) == 1 } // valid at the grant only
			drain, drained := context.WithCancel(context.Background())
			defer drained()
			res := make(chan error, 1)
			go func() {
				_, err := h.d.Dispatch(context.Background(), Task{Event: newEvent("alice", "friends"), Uncertain: tc.uncertain, Lease: lease, Drain: drain})
				res <- err
			}()
			time.Sleep(200 * time.Millisecond)
			drained()
			select {
			case err := <-res:
				if !errors.Is(err, ErrDrained) {
					t.Errorf("Dispatch = %v, want ErrDrained", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("Dispatch did not return within 2s of the drain")
			}
			calls := srv.paths()
			if len(calls) != 0 {
				t.Errorf("requests reached the server after the lease lapsed: %v", calls)
			}
			if asked.Load() < 2 {
				t.Errorf("lease asked %d times, want the grant and the write", asked.Load())
			}
		})
	}
}

// maxWindow is the highest number of grants in any sliding window (t-w, t].
func maxWindow(grants []time.Time, w time.Duration) int {
	best, lo := 0, 0
	for hi, t := range grants {
		for !grants[lo].After(t.Add(-w)) {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

// TestFenceCheckedAtTheWrite: the fleet budget's fence (SetFence) holds when the request passes
// its grant but has passed by the time the IM client writes it (the process was frozen in
// between). Nothing may reach the server: the others may already use the room. The dispatch
// waits for a grant again and ends with ErrDrained at the drain. With the fence moved on in
// time (the control), the same dispatch creates.
func TestFenceCheckedAtTheWrite(t *testing.T) {
	client, srv := recordingServer(t)
	for _, tc := range []struct {
		name   string
		fenced bool
	}{{"fence passes before the write", true}, {"fence moved on", false}} {
		t.Run(tc.name, func(t *testing.T) {
			srv.reset()
			h := newHarness(t, func(c *Config) { c.API, c.Now, c.Sleep = client, time.Now, sleep })
			fence := time.Now().Add(100 * time.Millisecond)
			h.d.SetFence(fence)
			var asked atomic.Int32
			lease := func() bool {
				if asked.Add(1) == 1 {
					time.Sleep(300 * time.Millisecond) // frozen between the grant and the write
					if !tc.fenced {
						h.d.SetFence(time.Now().Add(time.Second))
					}
				}
				return true
			}
			drain, drained := context.WithCancel(context.Background())
			defer drained()
			res := make(chan error, 1)
			go func() {
				_, err := h.d.Dispatch(context.Background(), Task{Event: newEvent("alice", "friends"), Lease: lease, Drain: drain})
				res <- err
			}()
			time.Sleep(600 * time.Millisecond)
			drained()
			select {
			case err := <-res:
				if tc.fenced && !errors.Is(err, ErrDrained) {
					t.Errorf("Dispatch = %v, want ErrDrained", err)
				}
				if !tc.fenced && err != nil {
					t.Errorf("Dispatch = %v, want the create", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("Dispatch did not return within 2s of the drain")
			}
			calls := srv.paths()
			if tc.fenced && len(calls) != 0 {
				t.Errorf("requests reached the server after the fence passed: %v", calls)
			}
			if !tc.fenced && len(calls) != 1 {
				t.Errorf("requests %v, want the one create", calls)
			}
		})
	}
}

// pathRecorder is an IM server that answers every request with a created group and records the
// paths it was asked.
type pathRecorder struct {
	mu    sync.Mutex
	calls []string
}

// recordingServer starts a pathRecorder for the test and returns an IM client of it.
func recordingServer(t *testing.T) (*im.Client, *pathRecorder) {
	t.Helper()
	rec := &pathRecorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.calls = append(rec.calls, r.URL.Path)
		rec.mu.Unlock()
		fmt.Fprint(w, `{"ActionStatus":"OK","ErrorCode":0,"GroupResultItem":[{"GroupItem":{"GroupName":"g","GroupId":1},"ResultItem":[]}]}`)
	}))
	t.Cleanup(srv.Close)
	client, err := im.New(im.Config{SDKAppID: 1400000000, SecretKey: "k", BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return client, rec
}

func (p *pathRecorder) reset() {
	p.mu.Lock()
	p.calls = nil
	p.mu.Unlock()
}

func (p *pathRecorder) paths() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.calls)
}
