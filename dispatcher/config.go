package dispatcher

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/metrics"
	"github.com/chatgroupd/chatgroupd/ratelimit"
)

// API is the part of the IM client the dispatcher calls; *im.Client implements it. Failures are
// *im.Error values (any other error counts as a transient network failure).
type API interface {
	CreateContactGroup(ctx context.Context, req *im.CreateRequest) (*im.CreateResponse, error)
	// GetContactGroup is one page; the dispatcher pages itself so every page passes the limiter.
	GetContactGroup(ctx context.Context, req *im.GetRequest) (*im.GetResponse, error)
	UpdateContactGroup(ctx context.Context, req *im.UpdateRequest) (*im.UpdateResponse, error)
	DelContactGroup(ctx context.Context, req *im.DeleteRequest) (*im.DeleteResponse, error)
	// RefreshSig regenerates the admin UserSig.
	RefreshSig()
}

// Duplicate-name policies (Config.DuplicateNames): what an event naming a group its user
// already has does. Groups are addressed by name in the API, so a name identifies a user's group.
const (
	// DuplicateMerge (the default) adds the event's missing conversations to the existing group
	// and ends applied. It is what an uncertain or replayed event must do anyway: its own earlier
	// create can't be told from a group the user made.
	DuplicateMerge = "merge"
	// DuplicateReject dead-letters the event as rejected with Config.DuplicateCode, unless the
	// existing group already holds every conversation of the event (then it is applied: that is
	// the event's own earlier create, or indistinguishable from it).
	DuplicateReject = "reject"
)

// Defaults of Config.
const (
	// DefaultRateLimit is the documented quota of create_contact_group (im.RateLimitPerAPI).
	// Each API has its own quota of the same documented size, so it is also the default of
	// GetRateLimit, UpdateRateLimit and DeleteRateLimit.
	DefaultRateLimit         = im.RateLimitPerAPI
	DefaultRetryBudget       = time.Hour
	DefaultBackoffBase       = 200 * time.Millisecond
	DefaultBackoffMax        = 30 * time.Second
	DefaultProbeInterval     = 2 * time.Second
	DefaultProbeAccount      = "administrator"
	DefaultOutageWindow      = 20
	DefaultOutageSpan        = 10 * time.Second
	DefaultOutageRatio       = 0.8
	DefaultOutageAccounts    = 3
	DefaultGroupCheckRetries = 2
	DefaultDuplicateNames    = DuplicateMerge
	DefaultDuplicateCode     = im.CodeBadParams
	DefaultAdmitAhead        = 32
)

// Config configures a Dispatcher. API is required; zero values of the other fields take the
// defaults above.
type Config struct {
	// API is the IM client. Required.
	API API
	// RateLimit is the create_contact_group budget of the whole consumer group in calls/s; this
	// replica uses the share SetPartitions gives it.
	RateLimit float64
	// GetRateLimit, UpdateRateLimit and DeleteRateLimit are the budgets, shared the same way, of
	// get_contact_group, update_contact_group and del_contact_group: each API has its own quota.
	GetRateLimit    float64
	UpdateRateLimit float64
	DeleteRateLimit float64
	// RetryBudget bounds the time an event spends retrying transient failures; time spent paused
	// (config/auth failure, outage) does not count.
	RetryBudget time.Duration
	// BackoffBase and BackoffMax shape the exponential backoff with full jitter between retries.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// ProbeInterval is how often Run checks, while paused, whether the API accepts us again.
	ProbeInterval time.Duration
	// ProbeAccount is the From_Account of the startup probe (later probes use the account of the
	// event that caused the pause). The admin identifier is a good choice.
	ProbeAccount string
	// OutageWindow, OutageSpan, OutageRatio and OutageAccounts define an outage: among the last
	// OutageWindow calls, all made within OutageSpan, at least OutageRatio failed transiently,
	// for at least OutageAccounts different accounts.
	OutageWindow   int
	OutageSpan     time.Duration
	OutageRatio    float64
	OutageAccounts int
	// GroupCheckRetries is how often 51007 (a group conversation failed its check) is retried
	// before it is taken as permanent.
	GroupCheckRetries int
	// DuplicateNames is the one policy for an event naming a group its user already has, on
	// every path: a plain create the API refuses with DuplicateCode, the look-up before creating
	// of an uncertain event, and a replay. DuplicateMerge (default) or DuplicateReject. A group
	// the user renamed no longer has the event's name: the event creates its group again.
	DuplicateNames string
	// DuplicateCode is the code the API answers a create naming an existing group (what
	// `chatgroupd imcheck` reports; default 50002, which also means other bad parameters: the
	// dispatcher looks the group up before it takes the code for a duplicate).
	DuplicateCode int
	// AdmitAhead is the least number of events admitted by Task.Admit and still waiting for
	// their first rate-limit grant. Admission comes before the grant so that its wait (a commit
	// round trip in the consumer, twice when one is in flight) holds no slot of the window;
	// the bound keeps what a crash leaves uncertain (every admitted event: the consumer's
	// commits list it as possibly written) to about one admission's calls beyond those in
	// flight. Above it the bound grows to the calls the create ceiling lets out in three
	// average admission waits, so that slow commits do not cap the write rate.
	AdmitAhead int
	// FleetBudget: every limiter's ceiling comes from SetCeiling (package budget, shared
	// through Kafka; the get, update and delete limiters take the grant scaled to their budgets)
	// instead of from the partitions, and SetPartitions sets none. Until the first SetCeiling
	// no call is made.
	FleetBudget bool
	// Limiter tunes the rate limiter of each API (package ratelimit). Its Standalone starts
	// with the whole budget; otherwise no call is made until the first SetPartitions, so a
	// replica that has not learned its share can't overrun the group's budget. Its Logger,
	// Metrics, Now and Sleep default to the dispatcher's.
	Limiter ratelimit.Config

	Logger  *zap.Logger
	Metrics *metrics.Metrics
	// Now and Sleep replace the clock in tests. Sleep returns ctx.Err() when ctx ends first.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
}

// budget is the budget of api in calls/s (RateLimit for create and for an unknown api).
func (c *Config) budget(api string) float64 {
	switch api {
	case im.APIGet:
		return c.GetRateLimit
	case im.APIUpdate:
		return c.UpdateRateLimit
	case im.APIDelete:
		return c.DeleteRateLimit
	}
	return c.RateLimit
}

// setDefaults fills the zero fields with the defaults above.
func (c *Config) setDefaults() {
	c.RateLimit = cmp.Or(c.RateLimit, DefaultRateLimit)
	c.GetRateLimit = cmp.Or(c.GetRateLimit, DefaultRateLimit)
	c.UpdateRateLimit = cmp.Or(c.UpdateRateLimit, DefaultRateLimit)
	c.DeleteRateLimit = cmp.Or(c.DeleteRateLimit, DefaultRateLimit)
	c.RetryBudget = cmp.Or(c.RetryBudget, DefaultRetryBudget)
	c.BackoffBase = cmp.Or(c.BackoffBase, DefaultBackoffBase)
	c.BackoffMax = cmp.Or(c.BackoffMax, DefaultBackoffMax)
	c.ProbeInterval = cmp.Or(c.ProbeInterval, DefaultProbeInterval)
	c.ProbeAccount = cmp.Or(c.ProbeAccount, DefaultProbeAccount)
	c.OutageWindow = cmp.Or(c.OutageWindow, DefaultOutageWindow)
	c.OutageSpan = cmp.Or(c.OutageSpan, DefaultOutageSpan)
	c.OutageRatio = cmp.Or(c.OutageRatio, DefaultOutageRatio)
	c.OutageAccounts = cmp.Or(c.OutageAccounts, DefaultOutageAccounts)
	c.GroupCheckRetries = cmp.Or(c.GroupCheckRetries, DefaultGroupCheckRetries)
	c.DuplicateNames = cmp.Or(c.DuplicateNames, DefaultDuplicateNames)
	c.DuplicateCode = cmp.Or(c.DuplicateCode, DefaultDuplicateCode)
	c.AdmitAhead = cmp.Or(c.AdmitAhead, DefaultAdmitAhead)
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewNop()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Sleep == nil {
		c.Sleep = sleep
	}
	l := &c.Limiter
	l.Logger = cmp.Or(l.Logger, c.Logger)
	l.Metrics = cmp.Or(l.Metrics, c.Metrics)
	if l.Now == nil {
		l.Now = c.Now
	}
	if l.Sleep == nil {
		l.Sleep = c.Sleep
	}
}

// Validate reports every problem of c, defaults applied, joined, each naming its field.
func (c Config) Validate() error {
	c.setDefaults()
	var errs []error
	check := func(bad bool, format string, args ...any) {
		if bad {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.API == nil, "api: API is required")
	check(c.RateLimit < 0, "rate limit: rate limits must be positive, got %g", c.RateLimit)
	check(c.GetRateLimit < 0, "get rate limit: rate limits must be positive, got %g", c.GetRateLimit)
	check(c.UpdateRateLimit < 0, "update rate limit: rate limits must be positive, got %g", c.UpdateRateLimit)
	check(c.DeleteRateLimit < 0, "delete rate limit: rate limits must be positive, got %g", c.DeleteRateLimit)
	check(c.RetryBudget < 0, "retry budget: %v is negative", c.RetryBudget)
	check(c.BackoffBase < 0, "backoff base: %v is negative", c.BackoffBase)
	check(c.BackoffBase >= 0 && c.BackoffMax < c.BackoffBase, "backoff max: %v below backoff base %v (want 0 < base <= max)", c.BackoffMax, c.BackoffBase)
	check(c.ProbeInterval < 0, "probe interval: %v is negative", c.ProbeInterval)
	check(c.OutageWindow < 0, "outage window: %d must be positive", c.OutageWindow)
	check(c.OutageSpan < 0, "outage span: %v must be positive", c.OutageSpan)
	check(c.OutageAccounts < 0, "outage accounts: %d must be positive", c.OutageAccounts)
	check(c.OutageRatio < 0 || c.OutageRatio > 1, "outage ratio: %g outside 0-1", c.OutageRatio)
	check(c.AdmitAhead < 0, "admit ahead: %d is negative", c.AdmitAhead)
	check(c.GroupCheckRetries < 0, "group check retries: %d is negative", c.GroupCheckRetries)
	check(c.DuplicateNames != DuplicateMerge && c.DuplicateNames != DuplicateReject,
		"duplicate names: %q: want merge or reject", c.DuplicateNames)
	if err := c.Limiter.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dispatcher config: %w", err)
	}
	return nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
