package ratelimit

import (
	"context"
	"net"
	"net/http/httptrace"
	"slices"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/im"
)

// rttSamples is how many recent round trips the median is taken over; minRTTSamples are needed
// before a round trip counts as slow.
const (
	rttSamples    = 64
	minRTTSamples = 8
)

// Reasons of metrics.RateLimitHeld.
const (
	heldFreshConn   = "fresh_conn"
	heldLateArrival = "late_arrival"
)

// Call is one API call's place in a Limiter's window log. Its first request uses the slot
// Acquire granted; every later one (the IM client re-signs and sends again after 70001/70052)
// reaches the server too, so Next takes a slot of its own and finishes the previous one. Each
// slot moves to the time its request was written (Trace).
type Call struct {
	l       *Limiter
	account string
	cur     atomic.Pointer[grant] // the slot of the request being sent; read by the trace hooks
	extra   bool                  // the first request has passed Next
	fresh   atomic.Bool           // GotConn runs on the caller's goroutine, WroteRequest on the transport's
	conn    atomic.Pointer[net.Conn]
	unstamp atomic.Pointer[func()] // stops the current request's write stamps
	done    atomic.Bool
}

// Acquire blocks until this replica may make one call for account (named in debug logs), or
// ctx ends. The caller must call Done once the call is over.
func (l *Limiter) Acquire(ctx context.Context, account string) (*Call, error) {
	g, waited, err := l.acquire(ctx)
	l.m.RateLimitWait.Observe(waited.Seconds())
	if err != nil {
		return nil, err
	}
	c := &Call{l: l, account: account}
	c.cur.Store(g)
	return c, nil
}

// Next admits the call's next request: the first passes at once with the slot Acquire
// granted, each later one waits for a slot of its own. It suits im.Gate.
func (c *Call) Next(ctx context.Context) error {
	if !c.extra {
		c.extra = true
		return nil
	}
	g, waited, err := c.l.acquire(ctx)
	c.l.m.RateLimitWait.Observe(waited.Seconds())
	if err != nil {
		return err
	}
	c.l.finished(c.cur.Swap(g))
	return nil
}

// Trace returns ctx with HTTP trace hooks that move the current slot to its request's write:
// WroteRequest's time, FreshConnMargin later on a newly dialled connection, and later still
// to each write that reaches the kernel after it (im.OnWrite, on connections im.StampDial made).
func (c *Call) Trace(ctx context.Context) context.Context {
	l := c.l
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			c.fresh.Store(!info.Reused)
			c.conn.Store(&info.Conn)
		},
		WroteRequest: func(httptrace.WroteRequestInfo) {
			g := c.cur.Load()
			var margin time.Duration
			if c.fresh.Load() {
				margin = l.cfg.FreshConnMargin
			}
			// WroteRequest fires before the transport flushes its buffer: the slot moves to
			// each Write that completes after it (im.OnWrite), armed before now is taken, so it
			// is never earlier than the request's last byte reaching the kernel.
			if conn := c.conn.Load(); conn != nil {
				if stop, ok := im.OnWrite(*conn, func() { l.flushed(g, l.cfg.Now(), margin) }); ok {
					if prev := c.unstamp.Swap(&stop); prev != nil {
						(*prev)()
					}
				}
			}
			now := l.cfg.Now()
			l.wrote(g, now, now.Add(margin), c.account)
		},
	})
}

// Done ends the call (answered, failed, or never sent): later writes on its connection are
// another request's, and a slot never written ages out from its grant time. Calls after the
// first do nothing.
func (c *Call) Done() {
	if c.done.Swap(true) {
		return
	}
	if stop := c.unstamp.Swap(nil); stop != nil {
		(*stop)()
	}
	c.l.finished(c.cur.Load())
}

// finished marks g's call as over: a grant never written now ages out from its grant time, and
// one written is no longer moved by later writes on its connection (the next request's, before
// its own trace takes over).
// A written call whose round trip (write to now) exceeded the median of recent ones moves later
// by the excess, up to LateArrivalMax (see Config.LateArrivalMax).
func (l *Limiter) finished(g *grant) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g.pending = false
	// Written and over, its time moves no more once the late arrival below is applied. One
	// never written may still be (its context ended while the transport held it).
	g.final = !g.wrote.IsZero()
	if g.wrote.IsZero() || l.cfg.LateArrivalMax <= 0 {
		return
	}
	rtt := l.cfg.Now().Sub(g.wrote)
	if len(l.rtts) >= minRTTSamples {
		if late := min(rtt-l.medianRTT(), l.cfg.LateArrivalMax); late > 0 {
			if held := l.moveLocked(g, g.wrote.Add(late)); held > 0 {
				l.m.RateLimitHeld.WithLabelValues(l.api, heldLateArrival).Add(held.Seconds())
			}
		}
	}
	if len(l.rtts) < rttSamples {
		l.rtts = append(l.rtts, rtt)
	} else {
		l.rtts[l.rttNext] = rtt
		l.rttNext = (l.rttNext + 1) % rttSamples
	}
}

// medianRTT is the median of the recent round trips. Callers hold mu.
func (l *Limiter) medianRTT() time.Duration {
	var buf [rttSamples]time.Duration
	r := buf[:len(l.rtts)]
	copy(r, l.rtts)
	slices.Sort(r)
	return r[len(r)/2]
}

// wrote records that g's request was written at now, and moves g to t (now, or later for a
// fresh connection).
func (l *Limiter) wrote(g *grant, now, t time.Time, account string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g.pending = false
	g.wrote = now
	l.moveLocked(g, t)
	if t.After(now) {
		l.m.RateLimitHeld.WithLabelValues(l.api, heldFreshConn).Add(t.Sub(now).Seconds())
	}
	// At debug level every write is logged, so that a budget window the API saw crossed can be
	// joined with what each replica wrote and when (the chaos suite's evidence); off by default.
	if ce := l.log.Check(zap.DebugLevel, "request written"); ce != nil {
		ce.Write(zap.String("api", l.api), zap.String("account", account), zap.Time("wrote", now),
			zap.Int("n", l.n), zap.Float64("share", l.share), zap.Bool("growing", l.growing),
			zap.Int("in_window", l.inWindowLocked(now)), zap.Bool("turns", l.turns != nil))
	}
}

// flushed records that bytes of g's request reached the kernel at now: g.wrote and g move later
// to now (and margin after it, for a fresh connection), never earlier.
func (l *Limiter) flushed(g *grant, now time.Time, margin time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if g.final {
		return // over: these bytes are the next request's
	}
	if now.After(g.wrote) {
		g.wrote = now
	}
	l.moveLocked(g, now.Add(margin))
}

// inWindowLocked is how many logged calls lie within the window ending at now, pending ones
// included. Callers hold mu.
func (l *Limiter) inWindowLocked(now time.Time) int {
	cut := now.Add(-l.windowAt(now))
	n := 0
	for _, g := range l.sent {
		if g.pending || g.at.After(cut) {
			n++
		}
	}
	return n
}

// moveLocked moves g to t if that is later, keeping sent ordered, and returns how much later.
// A grant already pruned is put back. Callers hold mu.
func (l *Limiter) moveLocked(g *grant, t time.Time) time.Duration {
	if !t.After(g.at) {
		return 0
	}
	moved := t.Sub(g.at)
	g.at = t
	i := len(l.sent) - 1
	for i >= 0 && l.sent[i] != g {
		i--
	}
	if i >= 0 {
		l.sent = append(l.sent[:i], l.sent[i+1:]...)
	}
	j := len(l.sent)
	for j > 0 && l.sent[j-1].at.After(t) {
		j--
	}
	l.sent = append(l.sent, nil)
	copy(l.sent[j+1:], l.sent[j:])
	l.sent[j] = g
	return moved
}
