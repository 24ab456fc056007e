package httpserve

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func TestServeAndShutdown(t *testing.T) {
	ln := listen(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hi") })}
	ctx, cancel := context.WithCancel(context.Background())
	var before atomic.Bool
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, srv, ln, time.Second, func() { before.Store(true) }) }()
	resp, err := http.Get("http://" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "hi" {
		t.Fatalf("body %q", b)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve after cancel: %v", err)
	}
	if !before.Load() {
		t.Fatal("beforeShutdown not called")
	}
	if _, err := http.Get("http://" + ln.Addr().String()); err == nil {
		t.Fatal("still serving after shutdown")
	}
}

func TestShutdownTimeoutClosesStuckRequests(t *testing.T) {
	ln := listen(t)
	release := make(chan struct{})
	defer close(release)
	srv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release })}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, srv, ln, 50*time.Millisecond, nil) }()
	go http.Get("http://" + ln.Addr().String()) //nolint:errcheck // held open on purpose
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "shutdown") {
			t.Fatalf("err = %v, want a shutdown timeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its shutdown timeout")
	}
}

func TestServeFailure(t *testing.T) {
	ln := listen(t)
	ln.Close() // serving a closed listener fails at once
	err := Serve(context.Background(), &http.Server{}, ln, time.Second, nil)
	if err == nil || !strings.Contains(err.Error(), "serve") || errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("err = %v", err)
	}
}
