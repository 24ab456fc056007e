package dispatcher

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
)

// Dispatch applies t and returns its outcome. It blocks while the API can't be used and returns
// an error only when ctx ends first; the event then did not end (it may have been applied, so
// it must be treated as uncertain when dispatched again).
func (d *Dispatcher) Dispatch(ctx context.Context, t Task) (Outcome, error) {
	ev := t.Event
	if ev == nil {
		return Outcome{Result: Rejected, Code: im.CodeBadParams, Info: "not sent: no event"}, nil
	}
	if err := ev.Validate(); err != nil {
		// The consumer parses before dispatching, so this is a bug upstream: still, never spend
		// quota on a call that must fail.
		e := &im.Error{API: cmp.Or(ev.Call().API, im.APICreate), Class: im.ClassPermanent, Code: im.CodeBadParams, Info: "not sent: " + err.Error()}
		r := &run{d: d, ev: ev}
		o := r.rejected(e)
		o.Info = e.Info
		return o, nil
	}
	r := &run{d: d, ev: ev, op: opFor(ev.EventType), check: t.Uncertain || t.ReplayCount > 0, start: d.cfg.Now(), wait: ctx,
		lease: t.Lease, admit: t.Admit, stallLimit: t.StallLimit, parkNow: t.ParkNow}
	if !t.RetryStart.IsZero() && t.RetryStart.Before(r.start) {
		r.start = t.RetryStart
	}
	if t.Drain != nil {
		// Waits (grant, pause, backoff) end with Drain as well as ctx; API calls only with ctx.
		wctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		stop := context.AfterFunc(t.Drain, func() { cancel(ErrDrained) })
		defer stop()
		r.wait = wctx
	}
	return r.do(ctx)
}

// run is the state of one Dispatch.
type run struct {
	d     *Dispatcher
	ev    *event.Event
	op    op   // how ev's type is applied
	check bool // look the user's groups up before the call (op.look)
	// items is what a look-up left for a contacts_added or contacts_removed event to send (the
	// conversations not yet in the group, or those still in it); nil: all of the event's.
	items       []im.ContactItem
	attempts    int
	failures    int // retries so far, for the backoff exponent
	groupChecks int // 51007 retries so far
	credRetried bool
	// dupErr is a create refused with Config.DuplicateCode: the look-up it triggers decides
	// whether the name exists (the policy applies) or the code meant other bad parameters.
	dupErr *im.Error
	start  time.Time
	paused time.Duration
	// stallLimit is Task.StallLimit: transient failures this long end the dispatch as Stalled.
	stallLimit time.Duration
	parkNow    context.Context // Task.ParkNow
	// wait is ctx, ended also by Task.Drain: every wait before a request is sent uses it.
	wait  context.Context
	lease func() bool                     // Task.Lease
	admit func(ctx context.Context) error // Task.Admit
	// admitted: Task.Admit returned for this event (admitAhead); later calls need no token.
	admitted bool
}

// leasePoll is how often a request held by an expired Task.Lease looks again.
const leasePoll = 20 * time.Millisecond

// drained returns the error to end the dispatch with once the wait context ended, else nil.
func (r *run) drained() error {
	if r.wait.Err() == nil {
		return nil
	}
	return fmt.Errorf("dispatcher: %w", context.Cause(r.wait))
}

func (r *run) do(ctx context.Context) (Outcome, error) {
	for {
		if err := r.waitRunning(r.wait); err != nil {
			return Outcome{}, fmt.Errorf("dispatcher: %w", context.Cause(r.wait))
		}
		var (
			o   *Outcome
			api string
			err error
		)
		if r.check {
			o, api, err = r.op.look(ctx, r)
		}
		if o == nil && err == nil {
			o, api, err = r.op.send(ctx, r)
		}
		if o != nil {
			return *o, nil
		}
		if ctx.Err() != nil {
			return Outcome{}, fmt.Errorf("dispatcher: %w", ctx.Err())
		}
		if err := r.drained(); err != nil {
			return Outcome{}, err
		}
		if errors.Is(err, errPaused) {
			continue
		}
		if o, err = r.failed(ctx, api, err); o != nil {
			return *o, nil
		}
		if err := r.drained(); err != nil {
			return Outcome{}, err
		}
		if err != nil {
			return Outcome{}, fmt.Errorf("dispatcher: %w", err)
		}
	}
}

// waitRunning blocks while the dispatcher is paused; the time does not count against the budget.
func (r *run) waitRunning(ctx context.Context) error {
	for {
		reason, resumed := r.d.paused()
		if reason == "" {
			return nil
		}
		t0 := r.d.cfg.Now()
		select {
		case <-ctx.Done():
			r.paused += r.d.cfg.Now().Sub(t0)
			return ctx.Err()
		case <-resumed:
			r.paused += r.d.cfg.Now().Sub(t0)
		}
	}
}
