package consumer

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/internal/fakeclock"
)

// stallConn advances the fake clock by stall in every Write before it writes, as a process
// starved between WroteRequest and the transport's flush would; last is the clock when the latest
// Write returned.
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

// TestHandoverWriteStampAfterFlush: a request the server never answers is written through a
// connection that stalls before the flush. The hand-over statement must reach at least the
// request's last Write + hold; with the hook's time alone (the control, a dialer without
// im.StampDial) it ends a stall early, which the check must see.
func TestHandoverWriteStampAfterFlush(t *testing.T) {
	const (
		stall = time.Second
		hold  = 6 * time.Second
	)
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		arrived <- struct{}{}
		<-release
	}))
	defer srv.Close()
	defer close(release)
	for _, tc := range []struct {
		name      string
		stamp     bool
		wantEarly bool
	}{{"stamped", true, false}, {"hook time only (control)", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			var (
				mu   sync.Mutex
				last time.Time
				d    net.Dialer
			)
			clock := fakeclock.New(time.Unix(1800000000, 0))
			dial := im.DialFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := d.DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return stallConn{Conn: c, clock: clock, stall: stall, mu: &mu, last: &last}, nil
			})
			if tc.stamp {
				dial = im.StampDial(dial)
			}
			tr := &http.Transport{DialContext: dial}
			defer tr.CloseIdleConnections()

			var w callWatch
			ctx, cancel := context.WithCancel(context.Background())
			ctx, returned := w.trace(ctx, hold, clock.Now, -1)
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, strings.NewReader(`{"x":1}`))
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				res, err := (&http.Client{Transport: tr}).Do(req)
				if err == nil {
					res.Body.Close()
				}
				done <- err
			}()
			<-arrived
			cancel()
			if err := <-done; err == nil {
				t.Fatal("cancelled request returned no error")
			}
			returned()
			mu.Lock()
			want := last.Add(hold)
			mu.Unlock()
			got := w.statement(time.Time{}, clock.Now())
			if got == nil {
				t.Fatal("no statement")
			}
			early := time.UnixMilli(got.until).Before(want)
			if early != tc.wantEarly {
				t.Errorf("statement until %v, last write + hold %v: early = %v, want %v",
					time.UnixMilli(got.until), want, early, tc.wantEarly)
			}
		})
	}
}
