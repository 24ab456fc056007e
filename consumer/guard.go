package consumer

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// What the consumer does with a valid event whose record key is not its from_account.
const (
	// KeyMismatchCount applies it and counts it (chatgroupd_key_mismatch_total) and logs the
	// account once. The default: the event is fine, only its partition may be the wrong one.
	KeyMismatchCount = "count"
	// KeyMismatchDeadLetter dead-letters it as invalid: one account's events in two partitions
	// have no order between them, which a deployment may prefer to refuse outright.
	KeyMismatchDeadLetter = "dead-letter"
)

// maxLoggedAccounts bounds the memory of which accounts' key mismatches were already logged;
// past it the set starts over, so a flood of distinct keys costs at most one line per account
// per maxLoggedAccounts, and at most logBurst lines at once and one per second after that.
const (
	maxLoggedAccounts = 4096
	logBurst          = 20
)

// keyGuard finds records keyed by another account than their event's. It lives as long as the
// Consumer, so an account is logged once however many generations pass.
type keyGuard struct {
	mode string
	m    *metrics.Metrics
	log  *zap.Logger

	mu         sync.Mutex
	logged     map[string]struct{}
	lines      *rate.Limiter
	suppressed int
}

func newKeyGuard(cfg *Config) *keyGuard {
	return &keyGuard{mode: cfg.KeyMismatch, m: cfg.Metrics, log: cfg.Logger, logged: map[string]struct{}{},
		lines: rate.NewLimiter(rate.Every(time.Second), logBurst)}
}

// check returns ev and verr unchanged, unless ev's record key differs from its from_account and
// the mode is dead-letter: then the event is invalid, with the reason in verr.
func (g *keyGuard) check(m kafka.Message, ev *event.Event, verr error) (*event.Event, error) {
	if ev == nil || string(m.Key) == ev.FromAccount {
		return ev, verr
	}
	g.m.KeyMismatches.Inc()
	g.logOnce(m, ev)
	if g.mode != KeyMismatchDeadLetter {
		return ev, verr
	}
	return nil, keyMismatchErr(m.Key, ev.FromAccount)
}

// keyMismatchErr is the validation error of a record whose key is not its from_account under
// --key-mismatch=dead-letter (also for records coming back from the retry lane).
func keyMismatchErr(key []byte, account string) error {
	return &event.ValidationError{Field: "key", Reason: fmt.Sprintf(
		"record key %.64q is not from_account %q: the producer must key records by account (--key-mismatch=dead-letter)", key, account)}
}

func (g *keyGuard) logOnce(m kafka.Message, ev *event.Event) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.logged[ev.FromAccount]; ok {
		return
	}
	if !g.lines.Allow() {
		g.suppressed++
		return // not remembered: a later record of this account may still get its line
	}
	if len(g.logged) >= maxLoggedAccounts {
		clear(g.logged)
	}
	g.logged[ev.FromAccount] = struct{}{}
	g.log.Warn("record key is not from_account: this account's order across partitions is not guaranteed (logged once per account)",
		zap.String("account", ev.FromAccount), zap.String("key", fmt.Sprintf("%.64q", m.Key)),
		zap.Int("partition", m.Partition), zap.Int64("offset", m.Offset), zap.String("event_id", ev.EventID),
		zap.Int("suppressed_lines", g.suppressed), zap.String("mode", g.mode))
	g.suppressed = 0
}

// dlqHealth tracks dead letters that could not be written: while any waits, its partition makes
// no progress past it, which the consumer reports as not ready (with the reason) and as
// chatgroupd_dlq_blocked_partitions.
type dlqHealth struct {
	m *metrics.Metrics

	mu      sync.Mutex
	waiting map[int]int // partition → dead letters retrying
	since   time.Time   // when the oldest current failure began
	last    error
}

func newDLQHealth(m *metrics.Metrics) *dlqHealth {
	return &dlqHealth{m: m, waiting: map[int]int{}}
}

// failing records that a dead letter of partition p failed with err (first failure of that
// letter when first is true).
func (h *dlqHealth) failing(p int, err error, first bool, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if first {
		if len(h.waiting) == 0 {
			h.since = now
		}
		h.waiting[p]++
	}
	h.last = err
	h.m.DLQBlockedParts.Set(float64(len(h.waiting)))
}

// done records that a dead letter of partition p that had failed ended: written, or abandoned
// with its generation.
func (h *dlqHealth) done(p int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.waiting[p]--; h.waiting[p] <= 0 {
		delete(h.waiting, p)
	}
	if len(h.waiting) == 0 {
		h.last = nil
	}
	h.m.DLQBlockedParts.Set(float64(len(h.waiting)))
}

// errDLQBlocked is matched by the error DeadLetterHealth returns.
var errDLQBlocked = errors.New("dead letters can't be written")

func (h *dlqHealth) err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.waiting) == 0 {
		return nil
	}
	ps := make([]string, 0, len(h.waiting))
	for p := range h.waiting {
		ps = append(ps, fmt.Sprint(p))
	}
	slices.Sort(ps)
	return fmt.Errorf("%w: partitions %s blocked since %s: %v", errDLQBlocked, strings.Join(ps, ","),
		h.since.UTC().Format(time.RFC3339), h.last)
}
