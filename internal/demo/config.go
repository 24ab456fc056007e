package demo

import (
	"errors"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/loadgen"
)

// Defaults of Config (and of `chatgroupd demo`'s flags).
const (
	DefaultEvents        = 3000
	DefaultPartitions    = 6
	DefaultLatency       = 20 * time.Millisecond
	DefaultJitter        = 20 * time.Millisecond
	DefaultFaultRate     = 0.03
	DefaultReorderWindow = 200 * time.Millisecond
	DefaultTimeout       = 3 * time.Minute
	DefaultMetricsAddr   = "127.0.0.1:0"
	// DefaultForeverRate is the produce rate of a Forever run that names none.
	DefaultForeverRate = 150
	// MaxFaultRate is the highest share of API calls the demo lets fail transiently.
	MaxFaultRate = 0.5
)

// DefaultRateLimit is the create calls per second the demo's simulator enforces and its budget's
// default: the simulator's default, which states the documented quota (im.RateLimitPerAPI) on
// its own.
const DefaultRateLimit = imsim.DefaultRateLimit

// windowTolerance is the highest one-second count of create calls the demo accepts from its
// in-process simulator: 5% over DefaultRateLimit (see summary).
const windowTolerance = DefaultRateLimit * 105 / 100

// Config shapes a demo run. Out, SecretKey and NewService are required; a zero field takes the
// default its comment names. Latency, Jitter and FaultRate have no default here: their zero is
// meaningful (no latency, no faults), so the flags carry theirs.
type Config struct {
	// Events is how many records to produce (DefaultEvents); a Forever run ignores it.
	Events int
	// Forever keeps producing at ProduceRate (DefaultForeverRate when 0) until ctx ends.
	Forever bool
	// ProduceRate is events/s; 0 produces all Events up front, a backlog.
	ProduceRate float64
	// Partitions of the event topic (DefaultPartitions).
	Partitions int
	// RateLimit is the service's create calls/s budget (DefaultRateLimit); the simulator
	// enforces DefaultRateLimit whatever it is.
	RateLimit float64
	// Latency and Jitter: each simulated API call takes Latency plus up to Jitter.
	Latency, Jitter time.Duration
	// FaultRate is the share of API calls that fail transiently (50004, HTTP 502, applied then
	// 50005), at most MaxFaultRate.
	FaultRate float64
	// ReorderWindow is the service's seq reorder window (DefaultReorderWindow).
	ReorderWindow time.Duration
	// Timeout gives up when the pipeline hasn't drained by then (DefaultTimeout); a Forever run
	// only restarts it.
	Timeout time.Duration
	// Seed drives the load, the simulator's faults and latencies (time-based when 0).
	Seed uint64
	// Load shapes the generated events; its Seed is Seed.
	Load loadgen.Config
	// MetricsAddr is where the service serves /metrics, /healthz, /readyz (DefaultMetricsAddr).
	MetricsAddr string
	// SecretKey is the simulator's and the service's IM secret key.
	SecretKey string
	// Log is the service's logger (nop when nil).
	Log *zap.Logger
	// Out receives the progress and the summary.
	Out io.Writer
	// TTY says Out is a terminal: progress redraws one line instead of printing one a sample.
	TTY bool
	// Width is the column count of Out's terminal, asked at each redraw so a resized window is
	// followed (80 when nil).
	Width func() int
	// Version is reported by the service's chatgroupd_build_info.
	Version string
	// NewService builds the service the demo runs between its broker and its simulator.
	NewService func(ServiceConfig) (Service, error)
}

func (c *Config) setDefaults() {
	if c.Events == 0 {
		c.Events = DefaultEvents
	}
	if c.Forever && c.ProduceRate == 0 {
		c.ProduceRate = DefaultForeverRate
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.RateLimit == 0 {
		c.RateLimit = DefaultRateLimit
	}
	if c.ReorderWindow == 0 {
		c.ReorderWindow = DefaultReorderWindow
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano())
	}
	c.Load.Seed = c.Seed
	if c.MetricsAddr == "" {
		c.MetricsAddr = DefaultMetricsAddr
	}
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
	if c.Width == nil {
		c.Width = func() int { return 80 }
	}
}

// Validate reports every problem of c (after its defaults), one a line.
func (c Config) Validate() error {
	c.setDefaults()
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Events < 0 {
		add("events: %d is negative", c.Events)
	}
	if c.ProduceRate < 0 {
		add("produce rate: %v is negative", c.ProduceRate)
	}
	if c.Partitions < 0 {
		add("partitions: %d is negative", c.Partitions)
	}
	if !(c.RateLimit > 0) {
		add("rate limit: %v is not positive", c.RateLimit)
	}
	if c.Latency < 0 || c.Jitter < 0 {
		add("latency, jitter: %v, %v: negative", c.Latency, c.Jitter)
	}
	if !(c.FaultRate >= 0 && c.FaultRate <= MaxFaultRate) {
		add("fault rate: %v is not in [0, %v]", c.FaultRate, MaxFaultRate)
	}
	if c.ReorderWindow < 0 {
		add("reorder window: %v is negative", c.ReorderWindow)
	}
	if c.Timeout < 0 {
		add("timeout: %v is negative", c.Timeout)
	}
	if err := c.Load.Validate(); err != nil {
		add("load: %w", err)
	}
	if c.SecretKey == "" {
		add("secret key: required")
	}
	if c.Out == nil {
		add("out: required")
	}
	if c.NewService == nil {
		add("new service: required")
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("demo config: %w", errors.Join(errs...))
}
