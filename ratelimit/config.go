package ratelimit

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/metrics"
)

// Defaults of Config.
const (
	DefaultJitterMargin    = 5 * time.Millisecond
	DefaultFreshConnMargin = 20 * time.Millisecond
	DefaultLateArrivalMax  = 25 * time.Millisecond
	DefaultSlowDownAfter   = 3
	DefaultSlowDownFactor  = 0.7
	DefaultRecoverStep     = 0.05
	DefaultRecoverInterval = time.Second
	DefaultMinRateFactor   = 0.1
)

// LateArrivalOff, as Config.LateArrivalMax, turns the late-arrival shift off (any negative
// value does; zero means DefaultLateArrivalMax).
const LateArrivalOff time.Duration = -1

// maxMargin bounds every margin of Config: a larger one would cost more rate than any delay
// between our write and the server's count is worth.
const maxMargin = 500 * time.Millisecond

// Config tunes a Limiter. Zero values take the defaults above.
type Config struct {
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
	// after each oversleep of a millisecond or more. Set it only when the IM server runs in this
	// process (tests, the demo): a starved process then delays the server's count of our calls
	// beyond JitterMargin. Against the real, remote API it would only cost rate.
	WidenOnStall bool
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
	// Standalone starts with the whole budget. Otherwise no call is granted until the first
	// share is set, so a replica that has not learned its share can't overrun the group's budget.
	Standalone bool

	Logger  *zap.Logger
	Metrics *metrics.Metrics
	// Now and Sleep replace the clock in tests. Sleep returns ctx.Err() when ctx ends first.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
}

// setDefaults fills the zero fields with the defaults above.
func (c *Config) setDefaults() {
	c.JitterMargin = cmp.Or(c.JitterMargin, DefaultJitterMargin)
	c.FreshConnMargin = cmp.Or(c.FreshConnMargin, DefaultFreshConnMargin)
	c.LateArrivalMax = cmp.Or(c.LateArrivalMax, DefaultLateArrivalMax)
	c.SlowDownAfter = cmp.Or(c.SlowDownAfter, DefaultSlowDownAfter)
	c.SlowDownFactor = cmp.Or(c.SlowDownFactor, DefaultSlowDownFactor)
	c.RecoverStep = cmp.Or(c.RecoverStep, DefaultRecoverStep)
	c.RecoverInterval = cmp.Or(c.RecoverInterval, DefaultRecoverInterval)
	c.MinRateFactor = cmp.Or(c.MinRateFactor, DefaultMinRateFactor)
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
	check(c.JitterMargin < 0 || c.JitterMargin > maxMargin, "jitter margin: %v outside 0-500ms", c.JitterMargin)
	check(c.FreshConnMargin < 0 || c.FreshConnMargin > maxMargin, "fresh connection margin: %v outside 0-500ms", c.FreshConnMargin)
	check(c.LateArrivalMax > maxMargin, "late arrival max: %v over 500ms", c.LateArrivalMax)
	check(c.SlowDownAfter < 0, "slow-down-after: %d is negative", c.SlowDownAfter)
	check(c.SlowDownFactor <= 0 || c.SlowDownFactor >= 1, "slow-down factor: %g outside (0, 1)", c.SlowDownFactor)
	check(c.MinRateFactor <= 0 || c.MinRateFactor > 1, "min rate factor: %g outside (0, 1]", c.MinRateFactor)
	check(c.RecoverStep <= 0, "recover step: %g must be positive", c.RecoverStep)
	check(c.RecoverInterval < 0, "recover interval: %v must be positive", c.RecoverInterval)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ratelimit config: %w", err)
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
