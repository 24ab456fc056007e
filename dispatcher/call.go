package dispatcher

import (
	"context"
	"errors"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/ratelimit"
)

// errPaused ends an attempt that found the dispatcher paused after its rate-limiter wait.
var errPaused = errors.New("paused")

// errLeaseLapsed aborts a request whose Task.Lease expired between the lease check and the
// moment its bytes were to be written (see slotGate.Send); it was not sent.
var errLeaseLapsed = errors.New("membership lease lapsed before the request was written")

// errFenced aborts a request whose fleet budget grant ended (ratelimit.Limiter.SetFence) between
// its grant and the moment its bytes were to be written; it was not sent.
var errFenced = errors.New("fleet budget grant ended before the request was written")

// call makes one call of api through its limiter and feeds the result to readiness and outage
// detection.
func (r *run) call(ctx context.Context, api string, fn func(context.Context) error) error {
	granted, err := r.admitAhead()
	if err != nil {
		return err
	}
	c, err := r.d.limiterFor(api).Acquire(r.wait, r.ev.FromAccount)
	granted()
	if err != nil {
		return context.Cause(r.wait)
	}
	defer c.Done()
	if err := r.maySend(); err != nil {
		return err
	}
	r.attempts++
	err = fn(im.WithGate(c.Trace(ctx), &slotGate{call: c, lease: r.lease}))
	c.Done() // answered (or failed): later writes on the conn are another request's
	if errors.Is(err, errLeaseLapsed) || errors.Is(err, errFenced) {
		// Refused at the write: nothing reached the server. Wait for the lease or a grant (or
		// the drain) like a request held before its grant.
		r.attempts--
		return errPaused
	}
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	e := asIMError(api, err)
	if e == nil || e.Partial || e.Class == im.ClassPermanent {
		r.d.accepted()
	}
	r.d.recordCall(r.ev.FromAccount, e)
	return err
}

// admitAhead asks Task.Admit before the event's first grant, holding a place of the admitGate
// from before the admission until the grant; the caller calls granted once Acquire returns.
// Admitting after the grant held the grant's slot through the admission's wait, a commit round
// trip: a slot counts from its grant until it is written and a window after, so every call's
// slot lasted a window plus that wait, which cost the real broker's fleet 2-3 % of the budget
// where commits take tens of milliseconds. Admitted early, the event is listed by the
// consumer's commits as possibly written while it waits for its grant; the gate bounds how
// many such events a crash leaves uncertain that were never written.
func (r *run) admitAhead() (granted func(), err error) {
	if r.admit == nil || r.admitted {
		return func() {}, nil
	}
	if err := r.d.admits.enter(r.wait, r.d.create.Rate); err != nil {
		return nil, context.Cause(r.wait)
	}
	t0 := r.d.cfg.Now()
	if err := r.admit(r.wait); err != nil {
		r.d.admits.leave()
		if r.wait.Err() != nil {
			return nil, context.Cause(r.wait)
		}
		return nil, errPaused // not admitted; ask again
	}
	r.d.admits.admitted(r.d.cfg.Now().Sub(t0))
	r.admitted = true
	return r.d.admits.leave, nil
}

// maySend waits, once a call has its grant, until the task admits it and its lease holds, and
// reports why it must not be sent: drained (the wait context's cause) or paused (errPaused).
func (r *run) maySend() error {
	if r.wait.Err() != nil {
		// Drained as the grant came: not sent yet, so not sent at all.
		return context.Cause(r.wait)
	}
	if r.admit != nil {
		if err := r.admit(r.wait); err != nil {
			if r.wait.Err() != nil {
				return context.Cause(r.wait)
			}
			return errPaused // not sent; queue for a grant again
		}
	}
	for r.lease != nil && !r.lease() {
		if err := r.d.cfg.Sleep(r.wait, leasePoll); err != nil {
			return context.Cause(r.wait)
		}
	}
	if reason, _ := r.d.paused(); reason != "" {
		// Paused while we queued: with a backlog, hundreds of events wait here, and each would
		// otherwise spend a call on an API we know refuses us. The unused grant only slows us.
		return errPaused
	}
	return nil
}

// slotGate is the im.Gate of one call. Its first request uses the slot the call acquired;
// every later one (the client re-signs and sends again after 70001/70052) reaches the server
// too, so it takes a slot of its own (ratelimit.Call.Next).
type slotGate struct {
	call  *ratelimit.Call
	lease func() bool // Task.Lease, asked again as each request is written
}

// Send is asked by the IM client right before a request's bytes are written. The lease was
// checked after the grant, but signing, connecting and queueing for the connection's writer
// come between: a process paused there (GC, SIGSTOP, a frozen VM) past its session would
// otherwise wake and send what it queued while a successor owns the account. Checked here the
// gap is the copy of one small body into the connection's buffer.
//
// The same gap is why the fleet budget's fence is checked here too: the grant was inside it, but
// a process frozen since would otherwise write into room the others took when its budget entry
// expired.
func (s *slotGate) Send() error {
	if s.lease != nil && !s.lease() {
		return errLeaseLapsed
	}
	if !s.call.InForce() {
		return errFenced
	}
	return nil
}

// Wait admits the call's next request.
func (s *slotGate) Wait(ctx context.Context) error { return s.call.Next(ctx) }
