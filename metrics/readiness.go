package metrics

import (
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Readiness combines named conditions ("group", "credentials", ...) into one answer for
// /readyz, and keeps the chatgroupd_ready gauge equal to it, so the probe and the alert on the
// gauge can never disagree. It is safe for concurrent use.
type Readiness struct {
	mu      sync.Mutex
	failing map[string]error
	gauge   prometheus.Gauge
}

// NewReadiness returns a Readiness whose initial conditions are failing with "starting", so a
// process is not ready before each owner has reported. gauge (usually Metrics.Ready) may be nil.
func NewReadiness(gauge prometheus.Gauge, initial ...string) *Readiness {
	r := &Readiness{failing: map[string]error{}, gauge: gauge}
	for _, c := range initial {
		r.failing[c] = errors.New("starting")
	}
	r.update()
	return r
}

// Set records condition cond as met (err nil) or failing with err.
func (r *Readiness) Set(cond string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		delete(r.failing, cond)
	} else {
		r.failing[cond] = err
	}
	r.update()
}

// Check returns nil when every condition is met, else one error naming each failing condition
// in name order. Its signature fits NewServer's ready argument.
func (r *Readiness) Check() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.failing) == 0 {
		return nil
	}
	names := make([]string, 0, len(r.failing))
	for c := range r.failing {
		names = append(names, c)
	}
	sort.Strings(names)
	errs := make([]error, len(names))
	for i, c := range names {
		errs[i] = fmt.Errorf("%s: %w", c, r.failing[c])
	}
	return errors.Join(errs...)
}

// update sets the gauge; r.mu is held.
func (r *Readiness) update() {
	if r.gauge == nil {
		return
	}
	if len(r.failing) == 0 {
		r.gauge.Set(1)
	} else {
		r.gauge.Set(0)
	}
}
