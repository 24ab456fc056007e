// Package dispatcher turns a validated contact-group event into IM API calls and an Outcome,
// within this replica's share of the consumer group's rate budget. It retries, pauses and looks
// before it creates according to the failure class, so that only events the API will never
// accept are dead-lettered and no group is created twice.
package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/dlq"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// errPaused ends an attempt that found the dispatcher paused after its rate-limiter wait.
var errPaused = errors.New("paused")

// errLeaseLapsed aborts a request whose Task.Lease expired between the lease check and the
// moment its bytes were to be written (see slotGate.Send); it was not sent.
var errLeaseLapsed = errors.New("membership lease lapsed before the request was written")

// Dispatcher applies events to the IM API. It is safe for concurrent use: the consumer calls
// Dispatch from one goroutine per account. Run must be running for paused dispatchers to
// resume.
//
// Rate: each API (create, get, update) has its own limiter holding this replica's share of
// the budget, set by SetPartitions. Until the first SetPartitions no call is made (unless
// Config.Standalone). Probes made by Run (one get_contact_group page per ProbeInterval, only at
// startup and while paused) bypass the limiters.
//
// Pauses: a config/auth failure, or an outage (most recent calls failing transiently for many
// accounts), pauses every Dispatch — each keeps its event and produces no outcome — until a
// probe is accepted. Time spent paused does not count against an event's retry budget. Probes
// use get_contact_group: if only creates fail, the dispatcher resumes after a probe and pauses
// again after OutageWindow failed calls, which bounds what an outage of one API costs.
//
// The im client re-signs and retries once on 70001/70052 inside one call; that second request
// takes a slot of its own through the call's im.Gate.
type Dispatcher struct {
	cfg    Config
	log    *zap.Logger
	create *limiter
	get    *limiter
	update *limiter
	st     state
}

// New applies cfg's defaults, validates it and returns a Dispatcher.
func New(cfg Config) (*Dispatcher, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Dispatcher{cfg: cfg, log: cfg.Logger.Named("dispatcher")}
	d.cfg.Logger = d.log
	d.create = newLimiter(im.APICreate, cfg.RateLimit, &d.cfg, true)
	d.get = newLimiter(im.APIGet, cfg.GetRateLimit, &d.cfg, false)
	d.update = newLimiter(im.APIUpdate, cfg.GetRateLimit, &d.cfg, false)
	d.st.kick = make(chan struct{}, 1)
	d.st.outage = outageDetector{size: cfg.OutageWindow, span: cfg.OutageSpan, ratio: cfg.OutageRatio,
		accounts: cfg.OutageAccounts}
	// Export every label value from the start, so alerts and dashboards see zeros, not gaps.
	// (chatgroupd_ready is the service's: it also needs the consumer group; see Ready.)
	m := d.cfg.Metrics
	m.Paused.WithLabelValues(ReasonConfig).Set(0)
	m.Paused.WithLabelValues(ReasonOutage).Set(0)
	m.LimiterChanges.WithLabelValues("down").Add(0)
	m.LimiterChanges.WithLabelValues("up").Add(0)
	for _, l := range []*limiter{d.create, d.get, d.update} {
		m.RateLimitHeld.WithLabelValues(l.api, heldFreshConn).Add(0)
		m.RateLimitHeld.WithLabelValues(l.api, heldLateArrival).Add(0)
	}
	m.UncertainChecks.WithLabelValues("true").Add(0)
	m.UncertainChecks.WithLabelValues("false").Add(0)
	return d, nil
}

// SetPartitions gives this replica the share of every API's budget that the partitions it owns
// (ids in [0, total)) carry; the consumer calls it on each rebalance. total <= 0 means
// standalone: the whole budget. A smaller share applies at once, a larger one (including the
// first) one second later, when the calls the partitions' previous owner made have left every
// window this replica's calls can share. Partitions get whole calls per second, the remainder
// going to the lowest ids, so the members' shares use the whole budget: three members of six
// partitions and a budget of 200 get 68, 66 and 66 rather than 66 each.
func (d *Dispatcher) SetPartitions(ids []int, total int) {
	for _, l := range d.partitionLimiters() {
		l.setPartitions(ids, total)
	}
	d.log.Info("rate share set", zap.Ints("partitions", ids), zap.Int("total", total),
		zap.Float64("create_calls_per_s", d.create.rateNow()), zap.Float64("create_calls_per_s_in_1s", d.create.target()))
}

// partitionLimiters are the limiters whose share follows the partitions owned: none in fleet
// mode, where every API's ceiling follows the replica's grant (SetCeiling).
func (d *Dispatcher) partitionLimiters() []*limiter {
	if d.cfg.FleetBudget {
		return nil
	}
	return []*limiter{d.create, d.get, d.update}
}

// SetCeiling sets the create limiter's ceiling in calls per window, in fleet mode (see
// Config.FleetBudget; it implements budget.Sink). A smaller ceiling applies at once; a larger
// one up to now at once and the rest a window later, which is what the fleet protocol's safety
// rests on.
//
// The get and update budgets are quotas of their own, of the same kind: the grant, scaled to
// their budget, is a share of them too, and the members' shares add up to at most their budget
// as the grants add up to at most the create budget. They follow it with the window's wait on
// growth (now is room measured in create calls), so budget also flows to a replica whose work
// is existence checks: a successor re-checking the uncertain records of a crashed replica's
// partitions made its gets at the static share of those partitions while the others idled.
func (d *Dispatcher) SetCeiling(n, now int) {
	n, now = max(n, 0), max(now, 0)
	d.create.setCeiling(float64(n), float64(now))
	for _, l := range []*limiter{d.get, d.update} {
		l.setCeiling(math.Floor(float64(n)*l.budget/d.create.budget+1e-9), 0)
	}
	d.log.Debug("fleet ceiling set", zap.Int("create_calls_per_window", n), zap.Int("at_once", now))
}

// Used is how many create calls this replica made in the last window (budget.Source).
func (d *Dispatcher) Used() int { return d.create.used() }

// Demand is how many calls per window of the create budget this replica could use now
// (budget.Source): the whole budget while calls queue at a saturated limiter (of any API, its
// demand scaled to the create budget), else its recent use with headroom.
func (d *Dispatcher) Demand() int {
	dm := d.create.demand()
	for _, l := range []*limiter{d.get, d.update} {
		dm = max(dm, int(math.Ceil(float64(l.demand())*d.create.budget/l.budget-1e-9)))
	}
	return min(dm, int(math.Floor(d.create.budget+1e-9)))
}

// Run probes the API at startup and, while paused, every ProbeInterval, resuming Dispatch
// when a probe is accepted. It returns nil when ctx ends.
func (d *Dispatcher) Run(ctx context.Context) error {
	d.probe(ctx)
	for ctx.Err() == nil {
		if !d.needProbe() {
			select {
			case <-ctx.Done():
				return nil
			case <-d.st.kick:
			}
		}
		if err := d.cfg.Sleep(ctx, d.cfg.ProbeInterval); err != nil {
			return nil
		}
		if d.needProbe() {
			d.probe(ctx)
		}
	}
	return nil
}

func (d *Dispatcher) needProbe() bool {
	d.st.mu.Lock()
	defer d.st.mu.Unlock()
	return d.st.reason != "" || !d.st.verified
}

// probe makes one cheap call and moves the state according to its class.
func (d *Dispatcher) probe(ctx context.Context) {
	d.st.mu.Lock()
	account := d.st.account
	if d.st.reason == "" || account == "" {
		account = d.cfg.ProbeAccount
	}
	d.st.mu.Unlock()
	_, err := d.cfg.API.GetContactGroup(ctx, &im.GetRequest{FromAccount: account})
	if ctx.Err() != nil {
		return
	}
	e := asIMError(im.APIGet, err)
	switch {
	case e == nil || e.Partial || e.Class == im.ClassPermanent:
		// Any answer about the request itself means the API accepts who we are.
		d.resume()
		d.accepted()
	case e.Class == im.ClassConfig:
		d.pause(ReasonConfig, e, account)
	case e.Class == im.ClassCredentials:
		d.cfg.API.RefreshSig()
		d.pause(ReasonConfig, e, account)
	default:
		d.st.mu.Lock()
		if !d.st.verified {
			d.st.lastErr = e
		}
		d.st.mu.Unlock()
		d.log.Debug("probe failed", zap.Error(e))
	}
}

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
		e := &im.Error{API: im.APICreate, Class: im.ClassPermanent, Code: im.CodeBadParams, Info: "not sent: " + err.Error()}
		r := &run{d: d, ev: ev}
		o := r.rejected(e)
		o.Info = e.Info
		return o, nil
	}
	r := &run{d: d, ev: ev, check: t.Uncertain || t.ReplayCount > 0, start: d.cfg.Now(), wait: ctx, lease: t.Lease, stallLimit: t.StallLimit, parkNow: t.ParkNow}
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
	d           *Dispatcher
	ev          *event.Event
	check       bool // look the group up before creating
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
	lease func() bool // Task.Lease
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
			o, api, err = r.checkExisting(ctx)
		}
		if o == nil && err == nil {
			o, api, err = r.create(ctx)
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

// call makes one rate-limited API call and feeds its result to readiness and outage detection.
func (r *run) call(ctx context.Context, l *limiter, fn func(context.Context) error) error {
	g, waited, err := l.acquire(r.wait)
	r.d.cfg.Metrics.RateLimitWait.Observe(waited.Seconds())
	if err != nil {
		return context.Cause(r.wait)
	}
	gate := &slotGate{l: l, m: r.d.cfg.Metrics, lease: r.lease}
	gate.cur.Store(g)
	defer func() { l.finished(gate.cur.Load()) }()
	if r.wait.Err() != nil {
		// Drained as the grant came: not sent yet, so not sent at all.
		return context.Cause(r.wait)
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
	r.attempts++
	var (
		fresh   atomic.Bool // GotConn runs on this goroutine, WroteRequest on the transport's
		conn    atomic.Pointer[net.Conn]
		unstamp atomic.Pointer[func()] // stops the current request's write stamps
	)
	trace := &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			fresh.Store(!info.Reused)
			conn.Store(&info.Conn)
		},
		WroteRequest: func(httptrace.WroteRequestInfo) {
			g := gate.cur.Load()
			var margin time.Duration
			if fresh.Load() {
				margin = r.d.cfg.FreshConnMargin
			}
			// WroteRequest fires before the transport flushes its buffer: the slot moves to
			// each Write that completes after it (im.OnWrite), armed before now is taken, so it
			// is never earlier than the request's last byte reaching the kernel.
			if c := conn.Load(); c != nil {
				if stop, ok := im.OnWrite(*c, func() { l.flushed(g, r.d.cfg.Now(), margin) }); ok {
					if prev := unstamp.Swap(&stop); prev != nil {
						(*prev)()
					}
				}
			}
			now := r.d.cfg.Now()
			l.wrote(g, now, now.Add(margin), r.ev.FromAccount)
		},
	}
	err = fn(im.WithGate(httptrace.WithClientTrace(ctx, trace), gate))
	if stop := unstamp.Load(); stop != nil {
		(*stop)() // answered (or failed): later writes on the conn are another request's
	}
	if errors.Is(err, errLeaseLapsed) {
		// Refused at the write: nothing reached the server. Wait for the lease (or the drain)
		// like a request held before its grant.
		r.attempts--
		return errPaused
	}
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	e := asIMError(l.api, err)
	if e == nil || e.Partial || e.Class == im.ClassPermanent {
		r.d.accepted()
	}
	r.d.recordCall(r.ev.FromAccount, e)
	return err
}

// slotGate is the im.Gate of one call. Its first request uses the slot the call acquired;
// every later one (the client re-signs and sends again after 70001/70052) reaches the server
// too, so it takes a slot of its own, and the previous one is finished.
type slotGate struct {
	l     *limiter
	m     *metrics.Metrics
	cur   atomic.Pointer[grant] // the slot of the request being sent; read by the trace hooks
	extra bool                  // the first request has passed
	lease func() bool           // Task.Lease, asked again as each request is written
}

// Send is asked by the IM client right before a request's bytes are written. The lease was
// checked after the grant, but signing, connecting and queueing for the connection's writer
// come between: a process paused there (GC, SIGSTOP, a frozen VM) past its session would
// otherwise wake and send what it queued while a successor owns the account. Checked here the
// gap is the copy of one small body into the connection's buffer.
func (s *slotGate) Send() error {
	if s.lease != nil && !s.lease() {
		return errLeaseLapsed
	}
	return nil
}

// Wait admits the call's next request.
func (s *slotGate) Wait(ctx context.Context) error {
	if !s.extra {
		s.extra = true
		return nil
	}
	g, waited, err := s.l.acquire(ctx)
	s.m.RateLimitWait.Observe(waited.Seconds())
	if err != nil {
		return err
	}
	s.l.finished(s.cur.Swap(g))
	return nil
}

// create sends create_contact_group. It returns an outcome, or the failure to handle.
func (r *run) create(ctx context.Context) (*Outcome, string, error) {
	req := &im.CreateRequest{FromAccount: r.ev.FromAccount, GroupContactItem: []im.GroupContactItem{{
		GroupName: r.ev.GroupName, ContactItem: contactItems(r.ev.Contacts)}}}
	err := r.call(ctx, r.d.create, func(ctx context.Context) error {
		resp, err := r.d.cfg.API.CreateContactGroup(ctx, req)
		if err == nil && resp != nil {
			// *im.Client reports a partial answer itself; an API implementation may not.
			err = resp.PartialError()
		}
		return err
	})
	if err == nil {
		return r.applied(), "", nil
	}
	if e := asIMError(im.APICreate, err); e.Partial && ctx.Err() == nil && !r.retryablePartial(e) {
		return r.partial(e), "", nil
	}
	return nil, im.APICreate, err
}

// checkExisting looks the group up. Found: the event was applied; missing conversations are
// added. Not found: check is cleared so the caller creates.
func (r *run) checkExisting(ctx context.Context) (*Outcome, string, error) {
	groups, contacts, err := r.getAll(ctx)
	if err != nil {
		if e := asIMError(im.APIGet, err); ctx.Err() == nil && !e.Partial && e.Class == im.ClassPermanent {
			// The account itself is unusable (e.g. not imported); a create would fail the same way.
			o := r.rejected(e)
			return &o, "", nil
		}
		return nil, im.APIGet, err
	}
	var group *im.GroupItem
	for i := range groups {
		if groups[i].GroupName == r.ev.GroupName {
			group = &groups[i]
			break
		}
	}
	r.d.cfg.Metrics.UncertainChecks.WithLabelValues(strconv.FormatBool(group != nil)).Inc()
	if group == nil {
		if r.dupErr != nil {
			// Refused with the duplicate code, yet no group has the name: the code meant
			// other bad parameters.
			o := r.rejected(r.dupErr)
			return &o, "", nil
		}
		r.check = false
		return nil, "", nil
	}
	missing := missingContacts(r.ev.Contacts, contacts, group.GroupID)
	if len(missing) == 0 {
		return r.applied(), "", nil
	}
	if r.d.cfg.DuplicateNames == DuplicateReject {
		o := r.duplicate(group, missing)
		return &o, "", nil
	}
	req := &im.UpdateRequest{FromAccount: r.ev.FromAccount, UpdateType: im.UpdateTypeGroup, UpdateGroup: im.UpdateGroup{
		UpdateGroupType: im.UpdateGroupTypeAddDel, OldGroupName: r.ev.GroupName}}
	for _, c := range missing {
		req.UpdateGroup.ContactUpdateItem = append(req.UpdateGroup.ContactUpdateItem,
			im.ContactUpdateItem{ContactOptType: im.ContactOptAdd, ContactItem: c})
	}
	err = r.call(ctx, r.d.update, func(ctx context.Context) error {
		resp, err := r.d.cfg.API.UpdateContactGroup(ctx, req)
		if err == nil && resp != nil {
			err = resp.PartialError()
		}
		return err
	})
	if err == nil {
		return r.applied(), "", nil
	}
	e := asIMError(im.APIUpdate, err)
	switch {
	case ctx.Err() != nil:
	case e.Partial && !r.retryablePartial(e):
		if e.Group == nil || e.Group.GroupID == 0 {
			e.Group = group
		}
		return r.partial(e), "", nil
	case !e.Partial && e.Class == im.ClassPermanent && !r.groupCheckRetry(e.Code) && e.Code != im.CodeGroupNotFound:
		// The group exists without these conversations: partly applied.
		e.Group = group
		e.Results = nil
		for _, c := range missing {
			e.Results = append(e.Results, im.ContactResult{ContactItem: c, ResultCode: e.Code, ResultInfo: e.Info})
		}
		return r.partial(e), "", nil
	}
	return nil, im.APIUpdate, err
}

// getAll walks get_contact_group's pages the way im does (im.WalkContactGroups), each page
// passing the get limiter.
func (r *run) getAll(ctx context.Context) ([]im.GroupItem, []im.ContactInfo, error) {
	var (
		groups   []im.GroupItem
		contacts []im.ContactInfo
	)
	get := func(ctx context.Context, req *im.GetRequest) (page *im.GetResponse, err error) {
		err = r.call(ctx, r.d.get, func(ctx context.Context) error {
			var err error
			page, err = r.d.cfg.API.GetContactGroup(ctx, req)
			if err == nil && page == nil {
				err = im.MalformedError(im.APIGet, "empty answer")
			}
			return err
		})
		return page, err
	}
	err := im.WalkContactGroups(ctx, r.ev.FromAccount, get, func(page *im.GetResponse) {
		groups = append(groups, page.GroupItem...)
		contacts = append(contacts, page.ContactItem...)
	})
	if err != nil {
		return nil, nil, err
	}
	return groups, contacts, nil
}

// failed decides what a failed attempt means: an outcome, a retry after backoff (nil, nil), a
// pause (nil, nil: the loop then waits), or ctx's error.
func (r *run) failed(ctx context.Context, api string, err error) (*Outcome, error) {
	e := asIMError(api, err)
	if e.Partial {
		// Only retryable conversations failed: look again, and add what is missing.
		r.check = true
		for _, res := range e.Results {
			if res.ResultCode == im.CodeGroupCheckFailed {
				r.groupChecks++
				break
			}
		}
		// A frequency-limit code on an item is the server saying the same thing as one on the
		// whole call: the call counted, and we are over the quota.
		for _, res := range e.Results {
			if im.Classify(res.ResultCode) == im.ClassRateLimited {
				r.d.limiterFor(api).slowDown()
				break
			}
		}
		return r.retry(ctx, api, e)
	}
	switch e.Class {
	case im.ClassConfig:
		r.countRetry(api, e)
		r.d.pause(ReasonConfig, e, r.ev.FromAccount)
		return nil, nil
	case im.ClassCredentials:
		// The client already re-signed and retried once; try a fresh sig once more, then take it
		// as a configuration problem (wrong key, clock far off).
		r.d.cfg.API.RefreshSig()
		r.countRetry(api, e)
		if !r.credRetried {
			r.credRetried = true
			return nil, nil
		}
		r.d.pause(ReasonConfig, e, r.ev.FromAccount)
		return nil, nil
	case im.ClassRateLimited:
		r.d.limiterFor(api).slowDown()
	case im.ClassTransient:
		if api == im.APICreate && e.Ambiguous() {
			// The group may exist now: never create blindly again.
			r.check = true
		}
	default:
		switch {
		case api == im.APICreate && e.Code == r.d.cfg.DuplicateCode && r.dupErr == nil:
			// The name may exist: look it up and apply the duplicate-name policy, at once
			// (nothing to wait for).
			r.dupErr = e
			r.check = true
			return nil, nil
		case api == im.APIUpdate && e.Code == im.CodeGroupNotFound:
			// Deleted between our look-up and the update: look again (and create it then).
			r.check = true
		case r.groupCheckRetry(e.Code):
			r.groupChecks++
		default:
			o := r.rejected(e)
			return &o, nil
		}
	}
	return r.retry(ctx, api, e)
}

// retry sleeps a full-jitter exponential backoff, or ends the event as exhausted when the
// budget is spent. Only this event waits: no lock is held while sleeping.
func (r *run) retry(ctx context.Context, api string, e *im.Error) (*Outcome, error) {
	active := r.d.cfg.Now().Sub(r.start) - r.paused
	left := r.d.cfg.RetryBudget - active
	if left <= 0 {
		o := r.exhausted(e)
		return &o, nil
	}
	transient := e.Class == im.ClassTransient || e.Partial
	stalled := func() *Outcome {
		return &Outcome{Result: Stalled, Code: errCode(e), Attempts: r.attempts, RetryStart: r.start,
			Info: fmt.Sprintf("failing for %v after %d attempts; last: %v", active.Round(time.Millisecond), r.attempts, e)}
	}
	if transient && (r.stallLimit > 0 && active >= r.stallLimit || r.parkNow != nil && r.parkNow.Err() != nil) {
		return stalled(), nil
	}
	r.countRetry(api, e)
	ceil := r.d.cfg.BackoffBase
	for i := 0; i < r.failures && ceil < r.d.cfg.BackoffMax; i++ {
		ceil *= 2
	}
	r.failures++
	wait := min(rand.N(min(ceil, r.d.cfg.BackoffMax)+1), left)
	r.d.log.Debug("retrying", zap.String("api", api), zap.String("code", e.MetricCode()),
		zap.String("account", r.ev.FromAccount), zap.Int("attempts", r.attempts), zap.Duration("backoff", wait))
	if transient && r.parkNow != nil {
		sctx, cancel := context.WithCancel(r.wait)
		defer cancel()
		defer context.AfterFunc(r.parkNow, cancel)()
		err := r.d.cfg.Sleep(sctx, wait)
		if err != nil && r.wait.Err() == nil && r.parkNow.Err() != nil {
			return stalled(), nil
		}
		return nil, err
	}
	return nil, r.d.cfg.Sleep(r.wait, wait)
}

func (r *run) countRetry(api string, e *im.Error) {
	r.d.cfg.Metrics.Retries.WithLabelValues(api, e.MetricCode()).Inc()
}

// groupCheckRetry reports whether code is 51007 with retries left.
func (r *run) groupCheckRetry(code int) bool {
	return code == im.CodeGroupCheckFailed && r.groupChecks < r.d.cfg.GroupCheckRetries
}

// retryablePartial reports whether some conversation of a partial result failed in a way a
// retry may fix (transient codes, or 51007 with retries left).
func (r *run) retryablePartial(e *im.Error) bool {
	for _, res := range e.Results {
		switch c := im.Classify(res.ResultCode); {
		case res.ResultCode == 0:
		case c == im.ClassTransient || c == im.ClassRateLimited:
			return true
		case r.groupCheckRetry(res.ResultCode):
			return true
		}
	}
	return false
}

func (d *Dispatcher) limiterFor(api string) *limiter {
	switch api {
	case im.APIGet:
		return d.get
	case im.APIUpdate:
		return d.update
	}
	return d.create
}

func (r *run) applied() *Outcome { return &Outcome{Result: Applied, Attempts: r.attempts} }

// rejected is the outcome of a permanent failure: no group was created.
func (r *run) rejected(e *im.Error) Outcome {
	det := ResultDetail{GroupName: r.ev.GroupName, Failed: failedResults(e.Results)}
	if e.Group != nil && e.Group.GroupID != 0 {
		det.GroupID = e.Group.GroupID
	}
	if len(det.Failed) == 0 {
		for _, c := range contactItems(r.ev.Contacts) {
			det.Failed = append(det.Failed, failedContact(c, errCode(e), e.Info))
		}
	}
	return Outcome{Result: Rejected, Code: errCode(e), Info: e.Error(), Attempts: r.attempts, Detail: mustJSON(det)}
}

// duplicate is the outcome under DuplicateReject of an event naming group, which its user
// already has without the missing conversations.
func (r *run) duplicate(group *im.GroupItem, missing []im.ContactItem) Outcome {
	code := r.d.cfg.DuplicateCode
	info := fmt.Sprintf("group %q already exists for %q without %d of the event's conversations (duplicate names: reject)",
		r.ev.GroupName, r.ev.FromAccount, len(missing))
	det := ResultDetail{GroupName: r.ev.GroupName, GroupID: group.GroupID}
	for _, c := range missing {
		det.Failed = append(det.Failed, failedContact(c, code, "group name already exists"))
	}
	return Outcome{Result: Rejected, Code: code, Info: info, Attempts: r.attempts, Detail: mustJSON(det)}
}

// partial is the outcome of a group that exists without some of its conversations.
func (r *run) partial(e *im.Error) *Outcome {
	det := ResultDetail{GroupName: r.ev.GroupName, Failed: failedResults(e.Results)}
	if e.Group != nil {
		det.GroupID = e.Group.GroupID
		if e.Group.GroupName != "" {
			det.GroupName = e.Group.GroupName
		}
	}
	code, info := errCode(e), e.Info
	if len(det.Failed) > 0 {
		code, info = det.Failed[0].ResultCode, det.Failed[0].ResultInfo
	}
	return &Outcome{Result: Partial, Code: code, Attempts: r.attempts, Detail: mustJSON(det),
		Info: fmt.Sprintf("group %q exists but %d of %d conversations failed: first code %d: %s",
			det.GroupName, len(det.Failed), len(r.ev.Contacts), code, info)}
}

// exhausted is the outcome of transient failures past the retry budget.
func (r *run) exhausted(e *im.Error) Outcome {
	return Outcome{Result: Exhausted, Code: exhaustedCode(e), Attempts: r.attempts,
		Info: fmt.Sprintf("retry budget %v spent after %d attempts; last: %v", r.d.cfg.RetryBudget, r.attempts, e)}
}

// exhaustedCode is errCode, except that a last failure with no answer at all gets
// dlq.CodeTimeout or dlq.CodeNetwork: 0 is the code of invalid events.
func exhaustedCode(e *im.Error) int {
	if c := errCode(e); c != 0 {
		return c
	}
	var ne net.Error
	if errors.Is(e, context.DeadlineExceeded) || errors.As(e, &ne) && ne.Timeout() {
		return dlq.CodeTimeout
	}
	return dlq.CodeNetwork
}

// errCode is the IM code of e, or its HTTP status when there is none (0 for network failures).
func errCode(e *im.Error) int {
	switch {
	case e.Code != 0:
		return e.Code
	case e.HTTPStatus != 0 && e.HTTPStatus != http.StatusOK:
		return e.HTTPStatus
	}
	return 0
}

func asIMError(api string, err error) *im.Error {
	if err == nil {
		return nil
	}
	var e *im.Error
	if errors.As(err, &e) {
		return e
	}
	return &im.Error{API: api, Class: im.ClassTransient, Network: true, Err: err}
}

func contactItems(cs []event.Contact) []im.ContactItem {
	out := make([]im.ContactItem, len(cs))
	for i, c := range cs {
		out[i] = im.ContactItem{Type: c.Type, ToAccount: c.ToAccount, ToGroupID: c.ToGroupID}
	}
	return out
}

// missingContacts lists the event's conversations (deduplicated) that are not in group gid.
func missingContacts(want []event.Contact, have []im.ContactInfo, gid int64) []im.ContactItem {
	in := make(map[string]bool, len(have))
	for _, c := range have {
		for _, id := range c.ContactGroupID {
			if id == gid {
				in[c.Item().Key()] = true
				break
			}
		}
	}
	var out []im.ContactItem
	for _, c := range contactItems(want) {
		if k := c.Key(); !in[k] {
			in[k] = true
			out = append(out, c)
		}
	}
	return out
}

func failedResults(res []im.ContactResult) []FailedContact {
	var out []FailedContact
	for _, x := range res {
		if x.ResultCode != 0 {
			out = append(out, failedContact(x.ContactItem, x.ResultCode, x.ResultInfo))
		}
	}
	return out
}

func failedContact(c im.ContactItem, code int, info string) FailedContact {
	return FailedContact{Type: c.Type, ToAccount: c.ToAccount, ToGroupID: c.ToGroupID, ResultCode: code, ResultInfo: info}
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("dispatcher: marshal %T: %v", v, err)) // plain structs of strings and ints
	}
	return b
}
