package imsim

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
)

// TestAccountFault: a faulty account's calls answer its code without applying anything, for
// its duration only; other accounts are served as usual, and removing the fault ends it.
func TestAccountFault(t *testing.T) {
	h := newHarness(t, Config{})
	h.sim.SetAccountFault("stuck", 50004, 10*time.Minute)
	if r := h.call(im.PathCreateContactGroup, createReq("stuck", "g1", c2c(1))); r.ErrorCode != 50004 {
		t.Fatalf("stuck account: code %d, want 50004", r.ErrorCode)
	}
	if r := h.call(im.PathGetContactGroup, im.GetRequest{FromAccount: "stuck"}); r.ErrorCode != 50004 {
		t.Fatalf("stuck account's get: code %d, want 50004", r.ErrorCode)
	}
	if r := h.call(im.PathCreateContactGroup, createReq("other", "g1", c2c(1))); r.ErrorCode != 0 {
		t.Fatalf("other account: code %d %s, want 0", r.ErrorCode, r.ErrorInfo)
	}
	if n := len(h.sim.Groups("stuck")); n != 0 {
		t.Fatalf("the faulty account got %d groups", n)
	}
	h.clock.Advance(10*time.Minute - time.Second)
	if r := h.call(im.PathCreateContactGroup, createReq("stuck", "g1", c2c(1))); r.ErrorCode != 50004 {
		t.Fatalf("a second before the end: code %d, want 50004", r.ErrorCode)
	}
	h.clock.Advance(time.Second)
	if r := h.call(im.PathCreateContactGroup, createReq("stuck", "g1", c2c(1))); r.ErrorCode != 0 {
		t.Fatalf("after the fault: code %d %s, want 0", r.ErrorCode, r.ErrorInfo)
	}
	h.sim.SetAccountFault("other", 70001, time.Hour)
	h.sim.SetAccountFault("other", 0, 0)
	if r := h.call(im.PathCreateContactGroup, createReq("other", "g2", c2c(2))); r.ErrorCode != 0 {
		t.Fatalf("fault removed: code %d, want 0", r.ErrorCode)
	}
}

// TestAdminAccountFault: the admin endpoint sets and removes a fault, refuses each bad input
// with 400 and changes nothing then, and is off without the admin API.
func TestAdminAccountFault(t *testing.T) {
	h := newHarness(t, Config{Admin: AdminConfig{Enabled: true}})
	post := func(method, body, ctype string) int {
		t.Helper()
		req, _ := http.NewRequest(method, h.srv.URL+"/admin/account-fault", strings.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := h.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		name, method, body, ctype string
		status                    int
	}{
		{"no account", http.MethodPost, `{"code":50004,"duration":"1m"}`, "application/json", http.StatusBadRequest},
		{"code 0", http.MethodPost, `{"account":"a","code":0,"duration":"1m"}`, "application/json", http.StatusBadRequest},
		{"no code", http.MethodPost, `{"account":"a","duration":"1m"}`, "application/json", http.StatusBadRequest},
		{"negative code", http.MethodPost, `{"account":"a","code":-1,"duration":"1m"}`, "application/json", http.StatusBadRequest},
		{"code too large", http.MethodPost, `{"account":"a","code":1000000,"duration":"1m"}`, "application/json", http.StatusBadRequest},
		{"code a string", http.MethodPost, `{"account":"a","code":"50004","duration":"1m"}`, "application/json", http.StatusBadRequest},
		{"no duration", http.MethodPost, `{"account":"a","code":50004}`, "application/json", http.StatusBadRequest},
		{"bad duration", http.MethodPost, `{"account":"a","code":50004,"duration":"ten minutes"}`, "application/json", http.StatusBadRequest},
		{"negative duration", http.MethodPost, `{"account":"a","code":50004,"duration":"-1m"}`, "application/json", http.StatusBadRequest},
		{"duration over the cap", http.MethodPost, `{"account":"a","code":50004,"duration":"25h"}`, "application/json", http.StatusBadRequest},
		{"unknown field", http.MethodPost, `{"account":"a","code":50004,"duration":"1m","apis":["get"]}`, "application/json", http.StatusBadRequest},
		{"not JSON", http.MethodPost, `account=a`, "application/json", http.StatusBadRequest},
		{"not a JSON POST", http.MethodPost, `{"account":"a","code":50004,"duration":"1m"}`, "text/plain", http.StatusUnsupportedMediaType},
		{"GET", http.MethodGet, ``, "", http.StatusMethodNotAllowed},
	} {
		if got := post(tc.method, tc.body, tc.ctype); got != tc.status {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.status)
		}
	}
	h.sim.mu.Lock()
	n := len(h.sim.acctFaults)
	h.sim.mu.Unlock()
	if n != 0 {
		t.Fatalf("a refused request set %d faults", n)
	}
	if got := post(http.MethodPost, `{"account":"a","code":50004,"duration":"10m"}`, "application/json"); got != http.StatusNoContent {
		t.Fatalf("set: %d", got)
	}
	if r := h.call(im.PathCreateContactGroup, createReq("a", "g", c2c(1))); r.ErrorCode != 50004 {
		t.Fatalf("after set: code %d, want 50004", r.ErrorCode)
	}
	if got := post(http.MethodPost, `{"account":"a","duration":"0s"}`, "application/json"); got != http.StatusNoContent {
		t.Fatalf("remove: %d", got)
	}
	if r := h.call(im.PathCreateContactGroup, createReq("a", "g", c2c(1))); r.ErrorCode != 0 {
		t.Fatalf("after remove: code %d, want 0", r.ErrorCode)
	}

	off := newHarness(t, Config{})
	req, _ := http.NewRequest(http.MethodPost, off.srv.URL+"/admin/account-fault", strings.NewReader(`{"account":"a","code":50004,"duration":"1m"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := off.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("admin API off: %d, want 404", resp.StatusCode)
	}
}
