//go:build linux

package imsim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
)

// The rate limit counts a call when its bytes arrived (the kernel's stamp), not when a starved
// handler got round to it: calls that arrived more than a second apart never share a window,
// however close their handlers start. Calls without a usable stamp count at the handler.
func TestGateCountsAtArrival(t *testing.T) {
	t0 := time.Unix(1_900_000_000, 0)
	now := t0
	sim, err := New(Config{SDKAppID: testAppID, SecretKey: testKey, Seed: 1, RateLimit: 2, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	sig, err := im.GenUserSig(testKey, testAppID, DefaultAdmin, t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	q := url.Values{"sdkappid": {fmt.Sprint(testAppID)}, "identifier": {DefaultAdmin}, "usersig": {sig}, "random": {"1"},
		"contenttype": {"json"}}
	call := func(handler, arrived time.Duration, stamped bool) int {
		t.Helper()
		now = t0.Add(handler)
		ac := &arrivalConn{}
		if stamped {
			ac.last.Store(t0.Add(arrived).UnixNano())
		}
		b, _ := json.Marshal(im.GetRequest{FromAccount: "a"})
		req := httptest.NewRequest(http.MethodPost, im.PathGetContactGroup+"?"+q.Encode(), bytes.NewReader(b))
		req = req.WithContext(context.WithValue(req.Context(), connKey{}, ac))
		rec := httptest.NewRecorder()
		sim.ServeHTTP(rec, req)
		var r struct {
			ErrorCode int
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
			t.Fatalf("answer %q: %v", rec.Body.String(), err)
		}
		return r.ErrorCode
	}
	// Arrived at 0, 0.1 and 1.05 s; handlers started at 0.95, 0.96 and 1.06 s. By handler
	// start the third is the third call in one second (60007); by arrival it shares its
	// second with the second call only.
	for i, c := range []struct {
		handler, arrived time.Duration
		stamped          bool
		want             int
	}{
		{950 * time.Millisecond, 0, true, 0},
		{960 * time.Millisecond, 100 * time.Millisecond, true, 0},
		{1060 * time.Millisecond, 1050 * time.Millisecond, true, 0},
		// No stamp: counted at its handler (1.07 s), with the calls that arrived at 0.1 and
		// 1.05 s: the third in its second.
		{1070 * time.Millisecond, 0, false, im.CodeFrequency},
		// A stamp from after the handler's start, or a second or more before it, is not this
		// request's: counted at the handler (1.08 s and 3 s).
		{1080 * time.Millisecond, 1500 * time.Millisecond, true, im.CodeFrequency},
		{3 * time.Second, 1900 * time.Millisecond, true, 0},
	} {
		if got := call(c.handler, c.arrived, c.stamped); got != c.want {
			t.Errorf("call %d (handler %v, arrived %v, stamped %v): code %d, want %d", i, c.handler, c.arrived, c.stamped, got, c.want)
		}
		if i == 2 {
			// MaxWindow measures the client by arrival too: 2, where the handlers' starts
			// would put all three in one second.
			if st := sim.Stats().APIs[im.APIGet]; st.MaxWindow != 2 {
				t.Errorf("max window %d after the first three calls, want 2", st.MaxWindow)
			}
		}
	}
}
