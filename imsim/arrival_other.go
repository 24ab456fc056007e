//go:build !linux

package imsim

import (
	"net"
	"time"
)

// newArrivalListener leaves ln as it is: kernel receive stamps are read on Linux only, and
// Call.Arrived stays zero elsewhere.
func newArrivalListener(ln net.Listener) net.Listener { return ln }

// arrivalConn is never made off Linux.
type arrivalConn struct{ net.Conn }

func (c *arrivalConn) arrived() time.Time { return time.Time{} }
