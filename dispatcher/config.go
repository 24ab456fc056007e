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
)

// API is the part of the IM client the dispatcher calls; *im.Client implements it. Failures are
// *im.Error values (any other error counts as a transient network failure).
type API interface {
	CreateContactGroup(ctx context.Context, req *im.CreateRequest) (*im.CreateResponse, error)
	// GetContactGroup is one page; the dispatcher pages itself so every page passes the limiter.
	GetContactGroup(ctx context.Context, req *im.GetRequest) (*im.GetResponse, error)
	UpdateContactGroup(ctx context.Context, req *im.UpdateRequest) (*im.UpdateResponse, error)
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
	DefaultRateLimit = im.RateLimitPerAPI
	// DefaultGetRateLimit is the quota of get_contact_group and, separately, of
	// update_contact_group. Each API has its own quota of the same documented size, so it is
	// DefaultRateLimit, and a caller that sizes one budget (chatgroupd's --rate-limit) sizes
	// the other the same.
	DefaultGetRateLimit      = DefaultRateLimit
	DefaultRetryBudget       = time.Hour
	DefaultBackoffBase       = 200 * time.Millisecond
	DefaultBackoffMax        = 30 * time.Second
	DefaultProbeInterval     = 2 * time.Second
	DefaultProbeAccount      = "administrator"
	DefaultJitterMargin      = 5 * time.Millisecond
	DefaultFreshConnMargin   = 20 * time.Millisecond
	DefaultLateArrivalMax    = 25 * time.Millisecond
	DefaultOutageWindow      = 20
	DefaultOutageSpan        = 10 * time.Second
	DefaultOutageRatio       = 0.8
	DefaultOutageAccounts    = 3
	DefaultGroupCheckRetries = 2
	DefaultSlowDownAfter     = 3
	DefaultSlowDownFactor    = 0.7
	DefaultRecoverStep       = 0.05
	DefaultRecoverInterval   = time.Second
	DefaultMinRateFactor     = 0.1
	DefaultDuplicateNames    = DuplicateMerge
	DefaultDuplicateCode     = im.CodeBadParams
)

// LateArrivalOff, as Config.LateArrivalMax, turns the late-arrival shift off (any negative
// value does; zero means DefaultLateArrivalMax).
const LateArrivalOff time.Duration = -1

// Config configures a Dispatcher. API is required; zero values of the other fields take the
// defaults above.
type Config struct {
	// API is the IM client. Required.
	API API
	// RateLimit is the create_contact_group budget of the whole consumer group in calls/s; this
	// replica uses the share SetPartitions gives it.
	RateLimit float64
	// GetRateLimit is the budget, shared the same way, of get_contact_group and (separately, as
	// each API has its own quota) of update_contact_group.
	GetRateLimit float64
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
	// JitterMargin widens the limiter's window beyond one second, so that differences in delay
	// between our write of a request and its arrival at the server can't squeeze one window's
	// calls into a shorter one. Utilisation is at most 1s/(1s+JitterMargin). A request delayed
	// by more than the margin can land in the server's previous second; its 60007 is retried,
	// and isolated ones don't slow the limiter down (see SlowDownAfter).
	JitterMargin time.Duration
	// FreshConnMargin is added to the write time of a call made on a newly dialled connection:
	// the server accepts, reads and counts such a request later than one on a warm keep-alive
	// connection, so a window that mixes both is squeezed at the server. Only the pool's
	// warm-up (the first seconds of a run, or a pool that grows) pays it.
	FreshConnMargin time.Duration
	// LateArrivalMax bounds how much later than its write a call's slot is held when its round
	// trip was slower than usual. A request that reached the server late comes back late, so a
	// round trip longer than the median of recent ones by d may mean it was counted up to d
	// after we wrote it; its time in the window log moves d later, up to LateArrivalMax. Where
	// round trips vary little (a steady API) this costs next to nothing and covers arrival
	// delays beyond JitterMargin (traced in the benchmarks: every late read of 43,000 calls,
	// up to 21 ms, showed in the round trip). Where they vary a lot, slow processing is taken
	// for late arrival and rate is lost while the limiter is saturated: at worst, every call
	// that late, the rate falls to 1s/(1s+JitterMargin+LateArrivalMax), 97% of the share.
	// Negative (LateArrivalOff) turns it off.
	LateArrivalMax time.Duration
	// WidenOnStall widens the limiter's window by how late its timers fire, for a few seconds
	// after each oversleep of a millisecond or more. Set it when the IM server runs in this
	// process (tests, the demo): a starved process then delays the server's count of our calls
	// beyond JitterMargin. Against the real, remote API it would only cost rate.
	WidenOnStall bool
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
	// SlowDownAfter frequency-limit answers within one window (and at least 5% of the window's
	// calls) multiply the rate by SlowDownFactor, at most once per window; fewer answers are
	// retried without slowing down.
	// The rate then grows back by RecoverStep of the share every RecoverInterval, and never
	// falls below MinRateFactor of the share.
	SlowDownAfter   int
	SlowDownFactor  float64
	RecoverStep     float64
	RecoverInterval time.Duration
	MinRateFactor   float64
	// DuplicateNames is the one policy for an event naming a group its user already has, on
	// every path: a plain create the API refuses with DuplicateCode, the look-up before creating
	// of an uncertain event, and a replay. DuplicateMerge (default) or DuplicateReject. A group
	// the user renamed no longer has the event's name: the event creates its group again.
	DuplicateNames string
	// DuplicateCode is the code the API answers a create naming an existing group (what
	// `chatgroupd imcheck` reports; default 50002, which also means other bad parameters: the
	// dispatcher looks the group up before it takes the code for a duplicate).
	DuplicateCode int
	// FleetBudget: every limiter's ceiling comes from SetCeiling (package budget, shared
	// through Kafka; the get and update limiters take the grant scaled to their budgets)
	// instead of from the partitions, and SetPartitions sets none. Until the first SetCeiling
	// no call is made.
	FleetBudget bool
	// Standalone starts with the whole budget. Otherwise no call is made until the first
	// SetPartitions, so a replica that has not learned its share can't overrun the group's budget.
	Standalone bool

	Logger  *zap.Logger
	Metrics *metrics.Metrics
	// Now and Sleep replace the clock in tests. Sleep returns ctx.Err() when ctx ends first.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
}

// setDefaults fills the zero fields with the defaults above.
func (c *Config) setDefaults() {
	c.RateLimit = cmp.Or(c.RateLimit, DefaultRateLimit)
	c.GetRateLimit = cmp.Or(c.GetRateLimit, DefaultGetRateLimit)
	c.RetryBudget = cmp.Or(c.RetryBudget, DefaultRetryBudget)
	c.BackoffBase = cmp.Or(c.BackoffBase, DefaultBackoffBase)
	c.BackoffMax = cmp.Or(c.BackoffMax, DefaultBackoffMax)
	c.ProbeInterval = cmp.Or(c.ProbeInterval, DefaultProbeInterval)
	c.ProbeAccount = cmp.Or(c.ProbeAccount, DefaultProbeAccount)
	c.JitterMargin = cmp.Or(c.JitterMargin, DefaultJitterMargin)
	c.FreshConnMargin = cmp.Or(c.FreshConnMargin, DefaultFreshConnMargin)
	c.LateArrivalMax = cmp.Or(c.LateArrivalMax, DefaultLateArrivalMax)
	c.OutageWindow = cmp.Or(c.OutageWindow, DefaultOutageWindow)
	c.OutageSpan = cmp.Or(c.OutageSpan, DefaultOutageSpan)
	c.OutageRatio = cmp.Or(c.OutageRatio, DefaultOutageRatio)
	c.OutageAccounts = cmp.Or(c.OutageAccounts, DefaultOutageAccounts)
	c.GroupCheckRetries = cmp.Or(c.GroupCheckRetries, DefaultGroupCheckRetries)
	c.SlowDownAfter = cmp.Or(c.SlowDownAfter, DefaultSlowDownAfter)
	c.SlowDownFactor = cmp.Or(c.SlowDownFactor, DefaultSlowDownFactor)
	c.RecoverStep = cmp.Or(c.RecoverStep, DefaultRecoverStep)
	c.RecoverInterval = cmp.Or(c.RecoverInterval, DefaultRecoverInterval)
	c.MinRateFactor = cmp.Or(c.MinRateFactor, DefaultMinRateFactor)
	c.DuplicateNames = cmp.Or(c.DuplicateNames, DefaultDuplicateNames)
	c.DuplicateCode = cmp.Or(c.DuplicateCode, DefaultDuplicateCode)
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
	const maxMargin = 500 * time.Millisecond
	check(c.API == nil, "api: API is required")
	check(c.RateLimit < 0, "rate limit: rate limits must be positive, got %g", c.RateLimit)
	check(c.GetRateLimit < 0, "get rate limit: rate limits must be positive, got %g", c.GetRateLimit)
	check(c.RetryBudget < 0, "retry budget: %v is negative", c.RetryBudget)
	check(c.BackoffBase < 0, "backoff base: %v is negative", c.BackoffBase)
	check(c.BackoffBase >= 0 && c.BackoffMax < c.BackoffBase, "backoff max: %v below backoff base %v (want 0 < base <= max)", c.BackoffMax, c.BackoffBase)
	check(c.ProbeInterval < 0, "probe interval: %v is negative", c.ProbeInterval)
	check(c.JitterMargin < 0 || c.JitterMargin > maxMargin, "jitter margin: %v outside 0-500ms", c.JitterMargin)
	check(c.FreshConnMargin < 0 || c.FreshConnMargin > maxMargin, "fresh connection margin: %v outside 0-500ms", c.FreshConnMargin)
	check(c.LateArrivalMax > maxMargin, "late arrival max: %v over 500ms", c.LateArrivalMax)
	check(c.OutageWindow < 0, "outage window: %d must be positive", c.OutageWindow)
	check(c.OutageSpan < 0, "outage span: %v must be positive", c.OutageSpan)
	check(c.OutageAccounts < 0, "outage accounts: %d must be positive", c.OutageAccounts)
	check(c.OutageRatio < 0 || c.OutageRatio > 1, "outage ratio: %g outside 0-1", c.OutageRatio)
	check(c.GroupCheckRetries < 0, "group check retries: %d is negative", c.GroupCheckRetries)
	check(c.SlowDownAfter < 0, "slow-down-after: %d is negative", c.SlowDownAfter)
	check(c.SlowDownFactor <= 0 || c.SlowDownFactor >= 1, "slow-down factor: %g outside (0, 1)", c.SlowDownFactor)
	check(c.MinRateFactor <= 0 || c.MinRateFactor > 1, "min rate factor: %g outside (0, 1]", c.MinRateFactor)
	check(c.RecoverStep <= 0, "recover step: %g must be positive", c.RecoverStep)
	check(c.RecoverInterval < 0, "recover interval: %v must be positive", c.RecoverInterval)
	check(c.DuplicateNames != DuplicateMerge && c.DuplicateNames != DuplicateReject,
		"duplicate names: %q: want merge or reject", c.DuplicateNames)
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
