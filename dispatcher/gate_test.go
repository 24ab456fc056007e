package dispatcher

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
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
