package dispatcher

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/im"
)

// Pause reasons, as in metrics.Paused{reason}.
const (
	ReasonConfig = "config"
	ReasonOutage = "outage"
)

// ErrConfig is wrapped by Ready while the API refuses our configuration or credentials.
var ErrConfig = errors.New("im api refuses our configuration")

// ErrUnverified is wrapped by Ready until the API has accepted a call of ours.
var ErrUnverified = errors.New("im api credentials not verified yet")

// state is the dispatcher-wide run/pause switch. Dispatch waits on resumed while paused; the
// prober in Run is the only one that resumes.
type state struct {
	mu       sync.Mutex
	reason   string // "" while running
	since    time.Time
	cause    error
	account  string // probed while paused: the account whose call caused the pause
	resumed  chan struct{}
	verified bool  // the API accepted a call of ours since the last config pause
	lastErr  error // the last probe failure while unverified
	// probeWaits: the probe waits for a slot of the get budget (a replica whose share is
	// still zero: it holds no partitions yet, or no fleet grant).
	probeWaits bool
	kick       chan struct{}
	outage     outageDetector
}

// paused reports the pause reason ("" while running) and a channel closed on resume.
func (d *Dispatcher) paused() (string, <-chan struct{}) {
	d.st.mu.Lock()
	defer d.st.mu.Unlock()
	return d.st.reason, d.st.resumed
}

// pause stops new calls. A config pause overrides an outage pause, never the other way round.
func (d *Dispatcher) pause(reason string, cause error, account string) {
	st := &d.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.reason == reason || (st.reason == ReasonConfig && reason == ReasonOutage) {
		return
	}
	if st.reason == "" {
		st.resumed = make(chan struct{})
		st.since = d.cfg.Now()
	} else {
		d.cfg.Metrics.Paused.WithLabelValues(st.reason).Set(0)
	}
	st.reason, st.cause, st.account = reason, cause, account
	if reason == ReasonConfig {
		st.verified = false
	}
	st.outage.reset()
	d.cfg.Metrics.Paused.WithLabelValues(reason).Set(1)
	if reason == ReasonConfig {
		d.log.Error("im api refuses our configuration or credentials: paused, nothing is dead-lettered; fix the sdkappid, admin, key or region and it resumes by itself",
			zap.Error(cause), zap.Duration("probe_interval", d.cfg.ProbeInterval))
	} else {
		d.log.Error("im api outage: most calls fail transiently for many accounts; paused, probing until it answers",
			zap.Error(cause), zap.Duration("probe_interval", d.cfg.ProbeInterval))
	}
	select {
	case st.kick <- struct{}{}:
	default:
	}
}

// resume lets everyone call again; only a probe the API accepted calls it.
func (d *Dispatcher) resume() {
	st := &d.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.reason == "" {
		return
	}
	d.cfg.Metrics.Paused.WithLabelValues(st.reason).Set(0)
	d.log.Info("im api accepts us again: resumed", zap.String("reason", st.reason),
		zap.Duration("paused_for", d.cfg.Now().Sub(st.since)))
	st.reason, st.cause = "", nil
	st.verified, st.lastErr = true, nil
	close(st.resumed)
}

// accepted records that the API accepted a call (success or an answer about the request itself).
func (d *Dispatcher) accepted() {
	st := &d.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.verified || st.reason == ReasonConfig {
		return
	}
	st.verified, st.lastErr = true, nil
}

// Ready returns nil when the API accepts our credentials, else an error wrapping ErrConfig (paused
// on a config/auth failure) or ErrUnverified (no call accepted yet). An outage does not make a
// replica unready: nothing about it is wrong, and it resumes by itself.
func (d *Dispatcher) Ready() error {
	d.st.mu.Lock()
	defer d.st.mu.Unlock()
	return d.readyLocked()
}

func (d *Dispatcher) readyLocked() error {
	st := &d.st
	switch {
	case st.reason == ReasonConfig:
		return fmt.Errorf("dispatcher: %w: %v", ErrConfig, st.cause)
	case !st.verified && st.lastErr != nil:
		return fmt.Errorf("dispatcher: %w: %v", ErrUnverified, st.lastErr)
	case !st.verified && st.probeWaits:
		return fmt.Errorf("dispatcher: %w: the probe waits for a share of the get budget", ErrUnverified)
	case !st.verified:
		return fmt.Errorf("dispatcher: %w", ErrUnverified)
	}
	return nil
}

// recordCall feeds the outage detector; it pauses when the detector says so.
func (d *Dispatcher) recordCall(account string, e *im.Error) {
	failed := e != nil && !e.Partial && e.Class == im.ClassTransient
	st := &d.st
	st.mu.Lock()
	trip := st.reason == "" && st.outage.record(d.cfg.Now(), account, failed)
	st.mu.Unlock()
	if trip {
		d.pause(ReasonOutage, e, account)
	}
}

// outageDetector is a ring of the last calls' health.
type outageDetector struct {
	size     int
	span     time.Duration
	ratio    float64
	accounts int

	ring  []sample
	next  int
	count int
}

type sample struct {
	at      time.Time
	failed  bool
	account string
}

func (o *outageDetector) reset() { o.next, o.count = 0, 0 }

// record adds a call and reports whether the window now shows an outage.
func (o *outageDetector) record(now time.Time, account string, failed bool) bool {
	if o.size <= 0 {
		return false
	}
	if o.ring == nil {
		o.ring = make([]sample, o.size)
	}
	o.ring[o.next] = sample{at: now, failed: failed, account: account}
	o.next = (o.next + 1) % o.size
	o.count = min(o.count+1, o.size)
	if !failed || o.count < o.size {
		return false
	}
	cut := now.Add(-o.span)
	failures := 0
	seen := make(map[string]struct{}, o.accounts)
	for _, s := range o.ring {
		if s.at.Before(cut) {
			return false
		}
		if s.failed {
			failures++
			seen[s.account] = struct{}{}
		}
	}
	return float64(failures) >= o.ratio*float64(o.size) && len(seen) >= o.accounts
}
