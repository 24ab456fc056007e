package im

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
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
