package imsim

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestAdminAPIGuards: the admin endpoints are off unless enabled; then a foreign Host (DNS
// rebinding), a missing or wrong token and a non-JSON POST (a cross-site form) are refused.
func TestAdminAPIGuards(t *testing.T) {
	base := Config{SDKAppID: 1400000000, SecretKey: "k"}
	on := base
	on.Admin = AdminConfig{Enabled: true, Hosts: []string{"imsim.internal"}}
	tok := on
	tok.Admin.Token = "s3cret"
	const faults = `{"latency":"1ms"}`
	cases := []struct {
		name        string
		cfg         Config
		method      string
		path        string
		host        string
		contentType string
		auth        string
		body        string
		want        int
	}{
		{"disabled get", base, "GET", "/admin/stats", "127.0.0.1:8080", "", "", "", 404},
		{"disabled post", base, "POST", "/admin/faults", "127.0.0.1:8080", "application/json", "", faults, 404},
		{"loopback v4", on, "GET", "/admin/stats", "127.0.0.1:8080", "", "", "", 200},
		{"loopback v6", on, "GET", "/admin/stats", "[::1]:8080", "", "", "", 200},
		{"localhost", on, "GET", "/admin/stats", "localhost:8080", "", "", "", 200},
		{"configured host", on, "GET", "/admin/stats", "IMSIM.internal:9", "", "", "", 200},
		{"rebound host", on, "GET", "/admin/stats", "evil.example:8080", "", "", "", 403},
		{"rebound host post", on, "POST", "/admin/invalidate-sigs", "evil.example", "application/json", "", "", 403},
		{"lan ip", on, "GET", "/admin/stats", "192.168.1.5:8080", "", "", "", 403},
		{"json post", on, "POST", "/admin/faults", "127.0.0.1", "application/json; charset=utf-8", "", faults, 200},
		{"text post", on, "POST", "/admin/faults", "127.0.0.1", "text/plain", "", faults, 415},
		{"form post", on, "POST", "/admin/invalidate-sigs", "127.0.0.1", "application/x-www-form-urlencoded", "", "", 415},
		{"no content type", on, "POST", "/admin/invalidate-sigs", "127.0.0.1", "", "", "", 415},
		{"token missing", tok, "GET", "/admin/stats", "127.0.0.1", "", "", "", 401},
		{"token wrong", tok, "GET", "/admin/stats", "127.0.0.1", "", "Bearer nope", "", 401},
		{"token right", tok, "POST", "/admin/faults", "127.0.0.1", "application/json", "Bearer s3cret", faults, 200},
		{"latency over cap", on, "POST", "/admin/faults", "127.0.0.1", "application/json", "", `{"latency":"31s"}`, 400},
		{"lognormal over cap", on, "POST", "/admin/faults", "127.0.0.1", "application/json", "", `{"lognormal_mean":"20s","lognormal_p99":"40s"}`, 400},
		{"account latency over cap", on, "POST", "/admin/account-latency", "127.0.0.1", "application/json", "", `{"account":"a","latency":"31s"}`, 400},
		{"account latency at cap", on, "POST", "/admin/account-latency", "127.0.0.1", "application/json", "", `{"account":"a","latency":"30s"}`, 204},
		{"account latency cross-site", on, "POST", "/admin/account-latency", "127.0.0.1", "text/plain", "", `{"account":"a","latency":"1s"}`, 415},
		{"api unaffected when disabled", base, "GET", "/v4/recentcontact/get_contact_group", "evil.example", "", "", "", 405},
		{"unknown path", on, "GET", "/nothing", "127.0.0.1", "", "", "", 404},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := New(c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
			r.Host = c.host
			if c.contentType != "" {
				r.Header.Set("Content-Type", c.contentType)
			}
			if c.auth != "" {
				r.Header.Set("Authorization", c.auth)
			}
			w := httptest.NewRecorder()
			s.ServeHTTP(w, r)
			if w.Code != c.want {
				t.Fatalf("status %d, want %d: %s", w.Code, c.want, w.Body)
			}
		})
	}
}

func TestLatencyCapInConfig(t *testing.T) {
	err := Config{SDKAppID: 1, SecretKey: "k", Faults: Faults{Latency: 20 * time.Second, Jitter: 11 * time.Second}}.Validate()
	if err == nil || !strings.Contains(err.Error(), "latency over") {
		t.Fatalf("latency 31s accepted: %v", err)
	}
	if err := (Config{SDKAppID: 1, SecretKey: "k", Faults: Faults{Latency: MaxLatency}}).Validate(); err != nil {
		t.Fatalf("latency at the cap refused: %v", err)
	}
}

// TestServerTimeouts: the HTTP server Serve runs bounds reading headers, reading a body and
// writing an answer, and the write bound outlasts the longest answer the simulator holds back.
func TestServerTimeouts(t *testing.T) {
	s, err := New(Config{SDKAppID: 1, SecretKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	srv := s.httpServer(http.NotFoundHandler())
	if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 {
		t.Fatalf("timeouts %v %v %v %v", srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout)
	}
	if srv.WriteTimeout <= DefaultMaxHang+2*MaxLatency {
		t.Fatalf("write timeout %v cuts a held answer (hang %v + account and injected latency 2×%v)", srv.WriteTimeout, DefaultMaxHang, MaxLatency)
	}
}
