package imsim

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
)

// The call log records every API call with its account, request and answer, including calls
// applied then failed, 502s and calls the client abandoned.
func TestCallLog(t *testing.T) {
	h := newHarness(t, Config{CallLog: true, Admin: AdminConfig{Enabled: true}})
	h.call(im.PathCreateContactGroup, createReq("alice", "g1", c2c(1)))
	h.call(im.PathCreateContactGroup, createReq("alice", "g1", c2c(2))) // duplicate name
	h.call(im.PathGetContactGroup, im.GetRequest{FromAccount: "bob"})
	if err := h.sim.SetFaults(Faults{ApplyThenFailRate: 1, APIs: []string{im.APICreate}}); err != nil {
		t.Fatal(err)
	}
	h.call(im.PathCreateContactGroup, createReq("alice", "g2", c2c(3)))
	if err := h.sim.SetFaults(Faults{HTTP502Rate: 1}); err != nil {
		t.Fatal(err)
	}
	h.call(im.PathCreateContactGroup, createReq("carol", "g3", c2c(4)))
	if err := h.sim.SetFaults(Faults{}); err != nil {
		t.Fatal(err)
	}

	// A slow account whose client gives up: logged as abandoned, not applied.
	h.sim.SetAccountLatency("slow", time.Hour)
	b, _ := json.Marshal(createReq("slow", "g4", c2c(5)))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.srv.URL+im.PathCreateContactGroup+"?"+h.query().Encode(), bytes.NewReader(b))
	if resp, err := h.srv.Client().Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("call of a slow account answered before the client's deadline")
	}
	cancel()
	var calls []Call
	for range 200 { // the handler notices the client left a little after the client does
		if calls = h.sim.Calls(); len(calls) == 6 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	want := []struct {
		api, account, group string
		code                int
		applied             bool
		info                string
	}{
		{im.APICreate, "alice", "g1", 0, true, ""},
		{im.APICreate, "alice", "g1", im.CodeBadParams, false, "already exists"},
		{im.APIGet, "bob", "", 0, false, ""},
		{im.APICreate, "alice", "g2", im.CodeTimeout, true, "applied"},
		{im.APICreate, "carol", "g3", -502, false, ""},
		{im.APICreate, "slow", "g4", -1, false, ""},
	}
	if len(calls) != len(want) {
		t.Fatalf("%d calls logged, want %d: %+v", len(calls), len(want), calls)
	}
	for i, w := range want {
		c := calls[i]
		if c.API != w.api || c.Account != w.account || c.Group != w.group || c.Code != w.code || c.Applied != w.applied || !strings.Contains(c.Info, w.info) {
			t.Errorf("call %d = %+v, want %+v", i, c, w)
		}
		if c.End.Before(c.Start) || c.Start.IsZero() {
			t.Errorf("call %d: start %v end %v", i, c.Start, c.End)
		}
	}
	if len(calls[0].Contacts) != 1 || calls[0].Contacts[0] != c2c(1) {
		t.Errorf("contacts of the first create: %+v", calls[0].Contacts)
	}

	// The same log over HTTP.
	resp, err := h.srv.Client().Get(h.srv.URL + "/admin/calls")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got []Call
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || len(got) != len(want) {
		t.Fatalf("GET /admin/calls: %d calls, %v", len(got), err)
	}
}

func TestCallLogOff(t *testing.T) {
	h := newHarness(t, Config{Admin: AdminConfig{Enabled: true}})
	h.call(im.PathCreateContactGroup, createReq("alice", "g1", c2c(1)))
	if n := len(h.sim.Calls()); n != 0 {
		t.Fatalf("%d calls logged with the log off", n)
	}
	resp, err := h.srv.Client().Get(h.srv.URL + "/admin/calls")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /admin/calls with the log off: %d", resp.StatusCode)
	}
}

func TestAdminAccountLatency(t *testing.T) {
	h := newHarness(t, Config{Admin: AdminConfig{Enabled: true}})
	for _, tc := range []struct {
		method, body string
		status       int
	}{
		{http.MethodPost, `{"account":"a","latency":"5s"}`, http.StatusNoContent},
		{http.MethodPost, `{"account":"a","latency":""}`, http.StatusNoContent},
		{http.MethodPost, `{"account":"","latency":"5s"}`, http.StatusBadRequest},
		{http.MethodPost, `{"account":"a","latency":"-1s"}`, http.StatusBadRequest},
		{http.MethodPost, `{"account":"a","latency":"soon"}`, http.StatusBadRequest},
		{http.MethodPost, `{"account":"a","lag":"5s"}`, http.StatusBadRequest},
		{http.MethodGet, ``, http.StatusMethodNotAllowed},
	} {
		req, _ := http.NewRequest(tc.method, h.srv.URL+"/admin/account-latency", strings.NewReader(tc.body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := h.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.body, resp.StatusCode, tc.status)
		}
	}
	h.sim.SetAccountLatency("a", time.Second)
	h.sim.SetAccountLatency("a", 0)
	h.sim.cs.mu.Lock()
	n := len(h.sim.cs.latency)
	h.sim.cs.mu.Unlock()
	if n != 0 {
		t.Fatalf("latency of a not removed: %d accounts slow", n)
	}
}
