// Package dispatcher turns a validated contact-group event into IM API calls and an Outcome,
// within this replica's share of the consumer group's rate budget. It retries, pauses and looks
// before it creates according to the failure class, so that only events the API will never
// accept are dead-lettered and no group is created twice.
package dispatcher

import (
	"cmp"
	"context"
	"math"
	"time"

	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/ratelimit"
)

// Dispatcher applies events to the IM API. It is safe for concurrent use: the consumer calls
// Dispatch from one goroutine per account. Run must be running for paused dispatchers to
// resume.
//
// Rate: each API (create, get, update, delete) has its own limiter holding this replica's
// share of its budget, set by SetPartitions (or by the fleet budget, Config.FleetBudget). Until
// the first SetPartitions no call is made (unless Config.Limiter.Standalone). Probes made by Run (one get_contact_group page per ProbeInterval, only at
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
	create *ratelimit.Limiter
	get    *ratelimit.Limiter
	update *ratelimit.Limiter
	delete *ratelimit.Limiter
	st     state
	// hold keeps the demand the fleet budget reads from collapsing across a rebalance (fleet
	// mode; SetPartitions feeds it).
	hold ratelimit.DemandHold
	// admits bounds the events admitted by their Task.Admit and not yet granted their first
	// call (Config.AdmitAhead).
	admits admitGate
}

// New applies cfg's defaults, validates it and returns a Dispatcher.
func New(cfg Config) (*Dispatcher, error) {
	cfg.Logger = cmp.Or(cfg.Logger, zap.NewNop()).Named("dispatcher")
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Dispatcher{cfg: cfg, log: cfg.Logger}
	for _, l := range []struct {
		to  **ratelimit.Limiter
		api string
	}{{&d.create, im.APICreate}, {&d.get, im.APIGet}, {&d.update, im.APIUpdate}, {&d.delete, im.APIDelete}} {
		var err error
		if *l.to, err = ratelimit.New(cfg.Limiter, l.api, cfg.budget(l.api)); err != nil {
			return nil, err
		}
	}
	d.create.ExportShare(cfg.Metrics.RateLimitLimit)
	d.st.kick = make(chan struct{}, 1)
	d.admits.least = cfg.AdmitAhead
	d.st.outage = outageDetector{size: cfg.OutageWindow, span: cfg.OutageSpan, ratio: cfg.OutageRatio,
		accounts: cfg.OutageAccounts}
	// Export every label value from the start, so alerts and dashboards see zeros, not gaps.
	// (chatgroupd_ready is the service's: it also needs the consumer group; see Ready. The
	// limiters export theirs.)
	m := d.cfg.Metrics
	m.Paused.WithLabelValues(ReasonConfig).Set(0)
	m.Paused.WithLabelValues(ReasonOutage).Set(0)
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
//
// In fleet mode the partitions set no limiter; they tell Demand when a generation ends and the
// next is set up, so that the demand does not collapse in between (ratelimit.DemandHold).
func (d *Dispatcher) SetPartitions(ids []int, total int) {
	if d.cfg.FleetBudget {
		d.hold.Partitions(d.cfg.Now(), len(ids), d.liveDemand())
	}
	for _, l := range d.partitionLimiters() {
		l.SetPartitions(ids, total)
	}
	d.log.Info("rate share set", zap.Ints("partitions", ids), zap.Int("total", total),
		zap.Float64("create_calls_per_s", d.create.Rate()), zap.Float64("create_calls_per_s_in_1s", d.create.Target()))
}

// partitionLimiters are the limiters whose share follows the partitions owned: none in fleet
// mode, where every API's ceiling follows the replica's grant (SetCeiling).
func (d *Dispatcher) partitionLimiters() []*ratelimit.Limiter {
	if d.cfg.FleetBudget {
		return nil
	}
	return []*ratelimit.Limiter{d.create, d.get, d.update, d.delete}
}

// limiterFor is the limiter of api.
func (d *Dispatcher) limiterFor(api string) *ratelimit.Limiter {
	switch api {
	case im.APIGet:
		return d.get
	case im.APIUpdate:
		return d.update
	case im.APIDelete:
		return d.delete
	}
	return d.create
}

// scaled are the limiters whose fleet ceiling is the create grant scaled to their budget.
func (d *Dispatcher) scaled() map[string]*ratelimit.Limiter {
	return map[string]*ratelimit.Limiter{im.APIGet: d.get, im.APIUpdate: d.update, im.APIDelete: d.delete}
}

// SetCeiling sets the create limiter's ceiling in calls per window, in fleet mode (see
// Config.FleetBudget; it implements budget.Sink). A smaller ceiling applies at once; a larger
// one up to now at once and the rest a window later, which is what the fleet protocol's safety
// rests on.
//
// The get, update and delete budgets are quotas of their own, of the same kind: the grant,
// scaled to their budget, is a share of them too, and the members' shares add up to at most
// their budget as the grants add up to at most the create budget. They follow it with the
// window's wait on growth (now is room measured in create calls), so budget also flows to a
// replica whose work is existence checks: a successor re-checking the uncertain records of a
// crashed replica's partitions made its gets at the static share of those partitions while the
// others idled.
func (d *Dispatcher) SetCeiling(n, now int) {
	n, now = max(n, 0), max(now, 0)
	d.create.SetCeiling(float64(n), float64(now))
	for api, l := range d.scaled() {
		l.SetCeiling(math.Floor(float64(n)*d.cfg.budget(api)/d.cfg.RateLimit+1e-9), 0)
	}
	d.log.Debug("fleet ceiling set", zap.Int("create_calls_per_window", n), zap.Int("at_once", now),
		zap.Int("waiting", d.create.Waiting()))
}

// SetFence ends every fleet grant of this replica's limiters at until (budget.Sink): past it
// none grants a call or lets a granted one write its request, until the budget confirms a grant
// again. A frozen process wakes with its old ceilings, and its callers may run before the budget
// member lowers them.
func (d *Dispatcher) SetFence(until time.Time) {
	d.create.SetFence(until)
	for _, l := range d.scaled() {
		l.SetFence(until)
	}
}

// Preload counts n create calls of a dead predecessor as made now (budget.Sink): they hold room
// in the create limiter's window, and count in Used, until they age out. The other APIs need
// none: their growth always waits a window, by when the predecessor's calls are gone.
func (d *Dispatcher) Preload(n int, at time.Time) { d.create.Preload(n, at) }

// Used is how many create calls this replica made in the last window (budget.Source).
func (d *Dispatcher) Used() int { return d.create.Used() }

// UsedByAge is when this replica made the create calls of the last window (budget.Source).
func (d *Dispatcher) UsedByAge(at time.Time, step time.Duration) []int {
	return d.create.UsedByAge(at, step)
}

// Demand is how many calls per window of the create budget this replica could use now
// (budget.Source): the whole budget while calls queue at a saturated limiter (of any API, its
// demand scaled to the create budget), else its recent use with headroom. Across a rebalance it
// is at least what it was when the generation ended, until shortly after the next one is set
// up (see ratelimit.DemandHold): the consumer's dispatches stop waiting meanwhile, and a grant
// shrunk on that gap would regrow only a window later.
func (d *Dispatcher) Demand() int {
	return d.hold.Demand(d.cfg.Now(), d.liveDemand())
}

// Stopping tells Demand that the consumer's generation ends because the replica stops
// (consumer.ShareStopper): no hold then, so the others' targets rise into this replica's share
// while it drains.
func (d *Dispatcher) Stopping() { d.hold.Release() }

// liveDemand is Demand without the hold.
func (d *Dispatcher) liveDemand() int {
	if d.admits.queued() {
		// Events wait to be admitted ahead of their grants: a backlog the limiter's own queue
		// does not show when admissions are slow and every place waits in one.
		return int(math.Floor(d.cfg.RateLimit + 1e-9))
	}
	dm := d.create.Demand()
	for api, l := range d.scaled() {
		ld := l.Demand()
		if api == im.APIGet && d.onlyProbeWaits() {
			// The readiness probe is one call. A get limiter reports the whole budget while a
			// caller waits at its ceiling, and at start-up the probe waits a window for the
			// first get ceiling (a grant's growth onto get always waits one): every starting
			// replica then asked for the whole budget for that second, a rebalance's demand
			// hold kept it up to 2 s, and members whose probe went out first shrank to their
			// idle demand under the others' claims — the fleet runs' first second held one
			// member's share. One get call is what the probe needs.
			ld = 1
		}
		dm = max(dm, int(math.Ceil(float64(ld)*d.cfg.RateLimit/d.cfg.budget(api)-1e-9)))
	}
	return min(dm, int(math.Floor(d.cfg.RateLimit+1e-9)))
}

// onlyProbeWaits reports whether the readiness probe is the only caller waiting for a get slot.
func (d *Dispatcher) onlyProbeWaits() bool {
	d.st.mu.Lock()
	probe := d.st.probeWaits
	d.st.mu.Unlock()
	return probe && d.get.Waiting() == 1
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
	d.st.probeWaits = true
	d.st.mu.Unlock()
	// The probe is a get call like any other: it waits for a slot of the get budget. Sent
	// outside it, a replica starting up (its share still zero) or probing while paused added
	// a call to a second the others had filled (chaos seeds 16 and 24: 201 gets in a second).
	c, err := d.get.Acquire(ctx, account)
	d.st.mu.Lock()
	d.st.probeWaits = false
	d.st.mu.Unlock()
	if err != nil {
		return
	}
	_, err = d.cfg.API.GetContactGroup(im.WithGate(c.Trace(ctx), &slotGate{call: c}), &im.GetRequest{FromAccount: account})
	c.Done()
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
