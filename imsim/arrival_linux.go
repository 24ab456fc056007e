//go:build linux

package imsim

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// arrivalListener stamps what each accepted connection reads with the kernel's receive time of
// the bytes (SO_TIMESTAMPNS), so the call log can say when a request reached the server, not
// only when the simulator's goroutine got round to it. On a loaded machine the two differ by
// tens of milliseconds: the simulator's own CPU starvation, which a real API's counter does not
// inherit from its clients' host.
type arrivalListener struct {
	net.Listener
}

func newArrivalListener(ln net.Listener) net.Listener {
	// Set on the listening socket too: the kernel turns stamping on for the whole stack a little
	// after the first socket asks for it (a deferred switch), and segments received before then
	// carry none. Asking at listen time gets that done before the first call arrives.
	if tl, ok := ln.(*net.TCPListener); ok {
		if raw, err := tl.SyscallConn(); err == nil {
			_ = raw.Control(func(fd uintptr) {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
			})
		}
	}
	return arrivalListener{ln}
}

func (l arrivalListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c, nil
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil || serr != nil {
		return c, nil // no kernel stamps: Arrived stays zero and the handler's start counts
	}
	return &arrivalConn{TCPConn: tc, raw: raw}, nil
}

// arrivalConn is a TCP connection whose reads record the kernel receive time of the last
// segment read.
type arrivalConn struct {
	*net.TCPConn
	raw interface {
		Read(func(uintptr) bool) error
	}
	last atomic.Int64 // unix ns of the last segment read; 0 before the first
	oob  [128]byte    // only the reading goroutine uses it
}

// Read reads with recvmsg to receive the timestamp; deadlines apply as to any read.
func (c *arrivalConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n, oobn int
	var rerr error
	err := c.raw.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = unix.Recvmsg(int(fd), p, c.oob[:], 0)
		return !errors.Is(rerr, unix.EAGAIN)
	})
	if err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, rerr
	}
	if n == 0 {
		return 0, io.EOF
	}
	if t, ok := rxTime(c.oob[:oobn]); ok {
		c.last.Store(t.UnixNano())
	}
	return n, nil
}

// arrived is the kernel receive time of the last segment read, zero if none was stamped.
func (c *arrivalConn) arrived() time.Time {
	if ns := c.last.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// rxTime finds the SCM_TIMESTAMPNS control message in oob.
func rxTime(oob []byte) (time.Time, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Time{}, false
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_TIMESTAMPNS {
			continue
		}
		// A struct timespec of two native longs.
		switch len(m.Data) {
		case 16:
			return time.Unix(int64(binary.NativeEndian.Uint64(m.Data)), int64(binary.NativeEndian.Uint64(m.Data[8:]))), true
		case 8:
			return time.Unix(int64(int32(binary.NativeEndian.Uint32(m.Data))), int64(int32(binary.NativeEndian.Uint32(m.Data[4:])))), true
		}
	}
	return time.Time{}, false
}
