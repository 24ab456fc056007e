package ratelimit

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/internal/fakeclock"
)

// standalone is a limiter holding the whole budget from the start, on clock.
func standalone(clock *fakeclock.Clock, budget float64, tweak func(*Config)) (*Limiter, *Config) {
	cfg := &Config{Now: clock.Now, Sleep: clock.Sleep, Standalone: true}
	if tweak != nil {
		tweak(cfg)
	}
	cfg.setDefaults()
	return newLimiter(im.APICreate, budget, cfg), cfg
}

// TestFreshConnectionHoldsItsSlotLonger: a call on a newly dialled connection is logged at its
// write time plus FreshConnMargin (the server counts it later than a warm one), a reused one at
// its write time. The trace hooks are fired as the real client's transport would.
func TestFreshConnectionHoldsItsSlotLonger(t *testing.T) {
	for _, reused := range []bool{true, false} {
		clock := newFakeClock()
		l, cfg := standalone(clock, 1000, func(c *Config) { c.FreshConnMargin = 20 * time.Millisecond })
		now := clock.Now()
		c, err := l.Acquire(context.Background(), "alice")
		if err != nil {
			t.Fatal(err)
		}
		tr := httptrace.ContextClientTrace(c.Trace(context.Background()))
		tr.GotConn(httptrace.GotConnInfo{Reused: reused})
		tr.WroteRequest(httptrace.WroteRequestInfo{})
		c.Done()
		c.Done() // a second Done changes nothing
		want := now
		if !reused {
			want = now.Add(20 * time.Millisecond)
		}
		l.mu.Lock()
		if len(l.sent) != 1 || !l.sent[0].at.Equal(want) || l.sent[0].pending {
			t.Errorf("reused=%v: logged %v, want one finished slot at %v", reused, l.sent, want)
		}
		l.mu.Unlock()
		held := testutil.ToFloat64(cfg.Metrics.RateLimitHeld.WithLabelValues(im.APICreate, heldFreshConn))
		if held != want.Sub(now).Seconds() {
			t.Errorf("reused=%v: held fresh_conn %vs, want %vs", reused, held, want.Sub(now).Seconds())
		}
	}
}

// TestNextTakesASlotPerResend: the first request of a call uses the slot Acquire granted; a
// second one (the client re-signed and sends again) waits for a slot of its own, and the first
// slot is finished.
func TestNextTakesASlotPerResend(t *testing.T) {
	clock := newFakeClock()
	l, _ := standalone(clock, 1000, nil)
	c, err := l.Acquire(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	first := c.cur.Load()
	if err := c.Next(context.Background()); err != nil || c.cur.Load() != first {
		t.Fatalf("first Next: %v, slot changed %v", err, c.cur.Load() != first)
	}
	if err := c.Next(context.Background()); err != nil {
		t.Fatal(err)
	}
	second := c.cur.Load()
	if second == first || first.pending || !second.pending {
		t.Errorf("second Next: new slot %v, first pending %v, second pending %v", second != first, first.pending, second.pending)
	}
	if got := l.Used(); got != 2 {
		t.Errorf("used %d, want both requests' slots", got)
	}
	c.Done()
	if second.pending {
		t.Error("Done left the current slot pending")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Next(ctx); err == nil {
		t.Error("Next with an ended context succeeded")
	}
}

// stallConn is a connection whose Writes stall: each advances the fake clock by stall before it
// writes, as a process starved between net/http's WroteRequest hook and the transport's flush
// would. last is the clock when the latest Write returned.
type stallConn struct {
	net.Conn
	clock *fakeclock.Clock
	stall time.Duration
	mu    *sync.Mutex
	last  *time.Time
}

func (c stallConn) Write(p []byte) (int, error) {
	c.clock.Advance(c.stall)
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	*c.last = c.clock.Now()
	c.mu.Unlock()
	return n, err
}

// stallingClient is an IM client whose connections stall every Write by stall on clock, dialled
// through im.StampDial when stamp is set (as the default client is).
func stallingClient(t *testing.T, url string, clock *fakeclock.Clock, stall time.Duration, stamp bool, mu *sync.Mutex, last *time.Time) *im.Client {
	t.Helper()
	var d net.Dialer
	dial := im.DialFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return stallConn{Conn: c, clock: clock, stall: stall, mu: mu, last: last}, nil
	})
	if stamp {
		dial = im.StampDial(dial)
	}
	tr := &http.Transport{DialContext: dial}
	t.Cleanup(tr.CloseIdleConnections)
	client, err := im.New(im.Config{SDKAppID: 1400000000, SecretKey: "k", BaseURL: url, HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// TestSlotNotBeforeTheWrite: the process stalls between WroteRequest and the flush that hands
// the request to the kernel. Each call's slot must lie no earlier than the last Write of its
// request returned, on a fresh and on a reused connection. Without the stamp (the hook's time
// alone) the slot is a stall too early: the control case shows the check catches that.
func TestSlotNotBeforeTheWrite(t *testing.T) {
	const stall = time.Second // far above FreshConnMargin, so the margin cannot hide it
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"ActionStatus":"OK","ErrorCode":0,"GroupResultItem":[{"GroupItem":{"GroupName":"g","GroupId":1},"ResultItem":[]}]}`)
	}))
	defer srv.Close()
	for _, tc := range []struct {
		name      string
		stamp     bool
		wantEarly bool
	}{{"stamped", true, false}, {"hook time only (control)", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			var (
				mu   sync.Mutex
				last time.Time
			)
			clock := newFakeClock()
			client := stallingClient(t, srv.URL, clock, stall, tc.stamp, &mu, &last)
			l, _ := standalone(clock, 1000, nil)
			early := 0
			for i := range 3 { // the first dials, the others reuse the connection
				account := fmt.Sprintf("user%d", i)
				c, err := l.Acquire(context.Background(), account)
				if err != nil {
					t.Fatal(err)
				}
				_, err = client.CreateContactGroup(c.Trace(context.Background()), &im.CreateRequest{FromAccount: account,
					GroupContactItem: []im.GroupContactItem{{GroupName: "g", ContactItem: []im.ContactItem{{Type: 1, ToAccount: "bob"}}}}})
				c.Done()
				if err != nil {
					t.Fatal(err)
				}
				mu.Lock()
				wroteAt := last
				mu.Unlock()
				g := lastWritten(l)
				if g == nil {
					t.Fatalf("call %d: no written slot", i)
				}
				if g.at.Before(wroteAt) || g.wrote.Before(wroteAt) {
					early++
					if !tc.wantEarly {
						t.Errorf("call %d: slot at %v, wrote %v: before the request's last Write returned at %v",
							i, g.at.Sub(wroteAt), g.wrote.Sub(wroteAt), wroteAt)
					}
				}
			}
			if tc.wantEarly && early == 0 {
				t.Error("without the stamp no slot was early: the test no longer sees the gap")
			}
		})
	}
}

// lastWritten is the most recently written grant of l.
func lastWritten(l *Limiter) *grant {
	var last *grant
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, g := range l.sent {
		if !g.wrote.IsZero() && (last == nil || g.wrote.After(last.wrote)) {
			last = g
		}
	}
	return last
}
