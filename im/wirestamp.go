package im

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
)

// DialFunc dials a connection, as http.Transport.DialContext does.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// StampDial wraps dial so that every connection it makes can report, through OnWrite, when a
// Write on it completed. net/http fires httptrace's WroteRequest before its transport flushes
// the request's buffer to the socket, so a hook that takes WroteRequest as "sent" is early by
// however long our process stalls before the flush; OnWrite tells it when the bytes really
// reached the kernel. The transport puts TLS on top of the dialed conn, so for https the stamp
// is taken at the raw conn's Write of each TLS record.
func StampDial(dial DialFunc) DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &stampConn{Conn: c}, nil
	}
}

// stampConn calls its armed callbacks after every Write that returns, whatever it returned:
// some bytes may have reached the kernel even when the Write failed.
type stampConn struct {
	net.Conn
	mu    sync.Mutex
	armed map[uint64]func()
	next  uint64
}

func (c *stampConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	if len(c.armed) == 0 {
		c.mu.Unlock()
		return n, err
	}
	fns := make([]func(), 0, len(c.armed))
	for _, fn := range c.armed {
		fns = append(fns, fn)
	}
	c.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
	return n, err
}

// OnWrite arranges for fn to run after every Write on conn that returns from now until cancel
// is called, and reports whether it could: conn is what an httptrace GotConn hook was given
// (the *tls.Conn over it for https), and only connections made by a StampDial dialer can.
//
// A hook that calls OnWrite in WroteRequest, then takes the time, and cancels once the
// response was read, holds a stamp no earlier than the Write that carried the request's last
// byte: a Write that completed before OnWrite is older than the time taken after it, one that
// completes later runs fn (the server cannot answer a request it has not received). On
// HTTP/1.1 that Write is the transport's flush, on the goroutine that ran WroteRequest, right
// after it. fn may run more than once (a request larger than the buffer, several TLS records,
// other streams' frames on HTTP/2, a TLS alert on close), so a caller moves its stamp only
// later. fn runs on the writing goroutine and must not block.
func OnWrite(conn net.Conn, fn func()) (cancel func(), ok bool) {
	if tc, isTLS := conn.(*tls.Conn); isTLS {
		conn = tc.NetConn()
	}
	sc, ok := conn.(*stampConn)
	if !ok {
		return func() {}, false
	}
	sc.mu.Lock()
	if sc.armed == nil {
		sc.armed = make(map[uint64]func())
	}
	sc.next++
	key := sc.next
	sc.armed[key] = fn
	sc.mu.Unlock()
	return func() {
		sc.mu.Lock()
		delete(sc.armed, key)
		sc.mu.Unlock()
	}, true
}
