package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatgroupd/chatgroupd/metrics"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestServerEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, "v1.2.3", true)
	m.EventsConsumed.Add(3)
	m.APIRequests.WithLabelValues("create_contact_group", "0").Inc()

	var readyErr atomic.Pointer[error]
	ready := func() error {
		if p := readyErr.Load(); p != nil {
			return *p
		}
		return nil
	}
	h := metrics.NewServer("127.0.0.1:0", reg, ready, nil).Handler()

	tests := []struct {
		name     string
		path     string
		notReady error
		wantCode int
		want     []string
		wantNot  []string
	}{
		{"metrics", "/metrics", nil, 200, []string{
			"chatgroupd_events_consumed_total 3",
			`chatgroupd_api_requests_total{api="create_contact_group",code="0"} 1`,
			`chatgroupd_build_info{goversion="go`,
			"go_goroutines ",
			"process_resident_memory_bytes ",
		}, nil},
		{"healthz", "/healthz", nil, 200, []string{"ok"}, nil},
		{"healthz while not ready", "/healthz", errors.New("not in group"), 200, []string{"ok"}, nil},
		{"readyz", "/readyz", nil, 200, []string{"ready"}, nil},
		{"readyz not ready", "/readyz", errors.New("IM rejects credentials (70001)"), 503,
			[]string{"not ready: IM rejects credentials (70001)"}, nil},
		{"readyz never shows a sig", "/readyz",
			errors.New(`check: Post "https://h/v4/x?usersig=SECRETSIG&random=1": EOF`), 503,
			[]string{"usersig=REDACTED"}, []string{"SECRETSIG"}},
		{"unknown path", "/debug/pprof/", nil, 404, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.notReady != nil {
				readyErr.Store(&tt.notReady)
			} else {
				readyErr.Store(nil)
			}
			code, body := get(t, h, tt.path)
			if code != tt.wantCode {
				t.Fatalf("GET %s = %d, want %d; body %q", tt.path, code, tt.wantCode, body)
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("GET %s body lacks %q", tt.path, w)
				}
			}
			for _, w := range tt.wantNot {
				if strings.Contains(body, w) {
					t.Errorf("GET %s body contains %q: %s", tt.path, w, body)
				}
			}
		})
	}
}

func TestServerNilReadyMeansReady(t *testing.T) {
	h := metrics.NewServer(":0", prometheus.NewRegistry(), nil, nil).Handler()
	if code, body := get(t, h, "/readyz"); code != 200 {
		t.Fatalf("readyz = %d %q", code, body)
	}
}

func TestServerRejectsWrongMethod(t *testing.T) {
	h := metrics.NewServer(":0", prometheus.NewRegistry(), nil, nil).Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/healthz", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST /healthz = %d, want 405", rec.Code)
	}
}

// TestServerRunAndShutdown serves on a real loopback port, then cancels and checks Run returns
// nil promptly and the port is closed.
func TestServerRunAndShutdown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	reg := prometheus.NewRegistry()
	metrics.New(reg, "test", false)
	srv := metrics.NewServer(addr, reg, nil, nil)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()

	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `chatgroupd_build_info{goversion=`) {
		t.Fatalf("scrape: %d %s", resp.StatusCode, body)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := client.Get("http://" + addr + "/healthz"); err == nil {
		t.Fatal("server still answers after shutdown")
	}
}

// TestServerRunListenError checks a busy port is reported, not swallowed.
func TestServerRunListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = metrics.NewServer(ln.Addr().String(), prometheus.NewRegistry(), nil, nil).Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "metrics: listen") {
		t.Fatalf("Run on a busy port = %v, want a listen error", err)
	}
}

// TestServerRunServesUntilCancelled exercises Run itself (not Serve) end to end.
func TestServerRunServesUntilCancelled(t *testing.T) {
	// Pick a free port, release it, let Run bind it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- metrics.NewServer(addr, prometheus.NewRegistry(), nil, nil).Run(ctx) }()

	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := client.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("healthz = %d", resp.StatusCode)
			}
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("server never came up: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
}

func ExampleNewServer() {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, "v1.0.0", true)
	m.RateLimitLimit.Set(100)

	ready := func() error { return errors.New("not in the consumer group yet") }
	srv := metrics.NewServer(":9090", reg, ready, nil)

	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	fmt.Print(rec.Code, " ", rec.Body.String())
	// A service runs it beside its other components: g.Go(func() error { return srv.Run(ctx) }).
	// Output: 503 not ready: not in the consumer group yet
}
