package dispatcher

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
)

// failed decides what a failed attempt means: an outcome, a retry after backoff (nil, nil), a
// pause (nil, nil: the loop then waits), or ctx's error.
func (r *run) failed(ctx context.Context, api string, err error) (*Outcome, error) {
	e := asIMError(api, err)
	if e.Partial {
		return r.failedPartly(ctx, api, e)
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
		r.d.limiterFor(api).SlowDown()
	case im.ClassTransient:
		if api != im.APIGet && e.Ambiguous() {
			// The call may have had its effect: never make it blindly again.
			r.check = true
		}
	default:
		if o, again := r.permanent(api, e); !again {
			return o, nil
		}
	}
	return r.retry(ctx, api, e)
}

// failedPartly handles a partial answer whose failed conversations a retry may fix.
func (r *run) failedPartly(ctx context.Context, api string, e *im.Error) (*Outcome, error) {
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
			r.d.limiterFor(api).SlowDown()
			break
		}
	}
	return r.retry(ctx, api, e)
}

// permanent handles a permanent failure: the rejected outcome, or again when it is worth
// another attempt (after a backoff, or at once with a nil outcome and again false).
func (r *run) permanent(api string, e *im.Error) (o *Outcome, again bool) {
	switch {
	case api == im.APICreate && e.Code == r.d.cfg.DuplicateCode && r.dupErr == nil:
		// The name may exist: look it up and apply the duplicate-name policy, at once
		// (nothing to wait for).
		r.dupErr = e
		r.check = true
		return nil, false
	case api == im.APIUpdate && e.Code == im.CodeGroupNotFound && r.ev.EventType == event.TypeContactGroupCreated:
		// Deleted between our look-up and the update that merges into it: look again (and
		// create it then). Any other type's group is missing: rejected.
		r.check = true
		return nil, true
	case r.groupCheckRetry(e.Code):
		r.groupChecks++
		return nil, true
	}
	rej := r.rejected(e)
	return &rej, false
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
