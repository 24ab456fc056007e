package dispatcher

import (
	"context"
	"net/http/httptrace"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/ratelimit"
)

// tracingAPI fires the HTTP trace hooks the real client's transport would, reporting whether
// the call reused a keep-alive connection.
type tracingAPI struct {
	*fakeAPI
	reused bool
}

func (a tracingAPI) CreateContactGroup(ctx context.Context, req *im.CreateRequest) (*im.CreateResponse, error) {
	if tr := httptrace.ContextClientTrace(ctx); tr != nil {
		tr.GotConn(httptrace.GotConnInfo{Reused: a.reused})
		tr.WroteRequest(httptrace.WroteRequestInfo{})
	}
	return a.fakeAPI.CreateContactGroup(ctx, req)
}

// TestFreshConnectionHoldsItsSlotLonger: Dispatch hands the API the limiter's write hooks, so
// a call on a newly dialled connection is logged at its write time plus FreshConnMargin (the
// server counts it later than a warm one), a reused one at its write time: at a budget of one
// call per second the next call comes one window after that slot.
func TestFreshConnectionHoldsItsSlotLonger(t *testing.T) {
	for _, reused := range []bool{true, false} {
		h := newHarness(t, func(c *Config) {
			c.API = tracingAPI{fakeAPI: newFakeAPI(), reused: reused}
			c.RateLimit = 1
			c.Limiter.FreshConnMargin = 20 * time.Millisecond
		})
		now := h.clock.Now()
		for _, user := range []string{"alice", "bob"} {
			out, err := h.d.Dispatch(context.Background(), Task{Event: newEvent(user, "g")})
			if err != nil || out.Result != Applied {
				t.Fatalf("reused=%v: %v %v", reused, out, err)
			}
		}
		want := now
		if !reused {
			want = now.Add(20 * time.Millisecond)
		}
		window := time.Second + ratelimit.DefaultJitterMargin
		if got := h.clock.Now().Sub(now); got < want.Sub(now)+window || got > want.Sub(now)+window+time.Millisecond {
			t.Errorf("reused=%v: second call %v after the first, want a window after its slot (%v)", reused, got, want.Sub(now)+window)
		}
		held := testutil.ToFloat64(h.m.RateLimitHeld.WithLabelValues(im.APICreate, "fresh_conn"))
		if want := 2 * want.Sub(now).Seconds(); held != want {
			t.Errorf("reused=%v: held fresh_conn %vs, want %vs", reused, held, want)
		}
	}
}
