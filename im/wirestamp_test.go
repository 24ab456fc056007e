package im

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"testing"
)

// pipeDial dials one end of a net.Pipe whose other end is drained.
func pipeDial(context.Context, string, string) (net.Conn, error) {
	a, b := net.Pipe()
	go func() { _, _ = io.Copy(io.Discard, b) }()
	return a, nil
}

func TestOnWrite(t *testing.T) {
	dial := StampDial(pipeDial)
	conn, err := dial(context.Background(), "tcp", "x")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var a, b atomic.Int32
	stopA, ok := OnWrite(conn, func() { a.Add(1) })
	if !ok {
		t.Fatal("OnWrite refused a StampDial conn")
	}
	stopB, _ := OnWrite(tls.Client(conn, &tls.Config{}), func() { b.Add(1) }) // unwrapped under TLS
	if _, err := conn.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	stopA()
	stopA() // twice is harmless
	if _, err := conn.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	stopB()
	if _, err := conn.Write([]byte("z")); err != nil {
		t.Fatal(err)
	}
	if a.Load() != 1 || b.Load() != 2 {
		t.Errorf("callbacks ran %d and %d times, want 1 (until its stop) and 2", a.Load(), b.Load())
	}

	// A failed Write still runs the callback: some bytes may have left.
	stop, _ := OnWrite(conn, func() { a.Add(1) })
	defer stop()
	conn.Close()
	if _, err := conn.Write([]byte("w")); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("write on closed pipe: %v", err)
	}
	if a.Load() != 2 {
		t.Errorf("callback ran %d times after a failed write, want 2", a.Load())
	}

	plain, _ := pipeDial(context.Background(), "tcp", "x")
	defer plain.Close()
	if _, ok := OnWrite(plain, func() {}); ok {
		t.Error("OnWrite accepted a conn not made by StampDial")
	}
}

// TestDefaultClientStampsHTTP1: the default client speaks HTTP/1.1 even to a server offering
// HTTP/2 over TLS, and the connection its GotConn hook sees (a *tls.Conn) takes OnWrite.
func TestDefaultClientStampsHTTP1(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	hc := newHTTPClient()
	tr := hc.Transport.(*http.Transport)
	tr.TLSClientConfig = srv.Client().Transport.(*http.Transport).TLSClientConfig
	defer tr.CloseIdleConnections()
	var stamped, writes atomic.Int32
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) {
			if _, isTLS := i.Conn.(*tls.Conn); !isTLS {
				t.Errorf("GotConn gave a %T, want *tls.Conn", i.Conn)
			}
			if _, ok := OnWrite(i.Conn, func() { writes.Add(1) }); ok {
				stamped.Add(1)
			}
		},
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.ProtoMajor != 1 {
		t.Errorf("default client spoke %s to a server offering HTTP/2, want HTTP/1.1", res.Proto)
	}
	if stamped.Load() != 1 || writes.Load() == 0 {
		t.Errorf("OnWrite accepted %d conns and saw %d writes, want 1 and some", stamped.Load(), writes.Load())
	}
}
