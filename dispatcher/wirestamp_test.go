package dispatcher

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/internal/fakeclock"
)

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
			h := newHarness(t, func(c *Config) { c.API, c.Now, c.Sleep = client, clock.Now, clock.Sleep })
			early := 0
			for i := range 3 { // the first dials, the others reuse the connection
				if _, err := h.d.Dispatch(context.Background(), Task{Event: newEvent(fmt.Sprintf("user%d", i), "g")}); err != nil {
					t.Fatal(err)
				}
				mu.Lock()
				wroteAt := last
				mu.Unlock()
				g := lastWritten(h.d)
				if g == nil {
					t.Fatalf("call %d: no written slot in any limiter", i)
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

// lastWritten is the most recently written grant of d's limiters.
func lastWritten(d *Dispatcher) *grant {
	var last *grant
	for _, l := range d.partitionLimiters() {
		l.mu.Lock()
		for _, g := range l.sent {
			if !g.wrote.IsZero() && (last == nil || g.wrote.After(last.wrote)) {
				last = g
			}
		}
		l.mu.Unlock()
	}
	return last
}
