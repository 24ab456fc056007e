// Package peer holds what the benchmark's comparison consumers share: a command line that mirrors
// `chatgroupd run`, and the mapping of an event onto one create_contact_group call. The peers then
// differ only in how they consume Kafka and pace the calls, which is what the benchmark compares.
package peer

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
)

// Config is a peer's configuration; the flag names are those of `chatgroupd run`.
type Config struct {
	Brokers   []string
	Topic     string
	Group     string
	DLQTopic  string // default <Topic>.dlq
	Endpoint  string // IM base URL, e.g. the simulator's
	SDKAppID  int64
	Admin     string
	SecretKey string
	// RateLimit is the create calls/s budget; at or above Unlimited the peer does not pace at all.
	RateLimit float64
	// MaxRetries is how many times a transient failure is retried before the event is
	// dead-lettered (default 5), with exponential backoff from Backoff (default 100ms) up to
	// MaxBackoff (default 5s).
	MaxRetries int
	Backoff    time.Duration
	MaxBackoff time.Duration
}

// Unlimited is the rate limit from which peers stop pacing calls ("limiter off").
const Unlimited = 1e6

// Defaults fills the zero fields.
func (c *Config) Defaults() {
	c.Topic = cmp.Or(c.Topic, "chat.contact-groups")
	c.Group = cmp.Or(c.Group, "chatgroupd")
	c.DLQTopic = cmp.Or(c.DLQTopic, c.Topic+".dlq")
	c.Admin = cmp.Or(c.Admin, im.DefaultAdmin)
	c.RateLimit = cmp.Or(c.RateLimit, 200)
	c.MaxRetries = cmp.Or(c.MaxRetries, 5)
	c.Backoff = cmp.Or(c.Backoff, 100*time.Millisecond)
	c.MaxBackoff = cmp.Or(c.MaxBackoff, 5*time.Second)
}

// Validate reports every configuration error.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("--brokers is required"))
	}
	if c.Endpoint == "" {
		errs = append(errs, errors.New("--im-endpoint is required"))
	}
	if c.SDKAppID <= 0 {
		errs = append(errs, errors.New("--sdkappid is required"))
	}
	if c.SecretKey == "" {
		errs = append(errs, errors.New("no secret key: set CHATGROUPD_SECRET_KEY"))
	}
	if c.RateLimit <= 0 {
		errs = append(errs, fmt.Errorf("--rate-limit must be positive, got %g", c.RateLimit))
	}
	if c.MaxRetries < 0 || c.Backoff < 0 || c.MaxBackoff < c.Backoff {
		errs = append(errs, errors.New("retries and backoff must be non-negative, max backoff >= backoff"))
	}
	return errors.Join(errs...)
}

// ParseFlags reads the flags `chatgroupd run` shares with the peers, each with its CHATGROUPD_*
// environment fallback; the secret key only comes from CHATGROUPD_SECRET_KEY.
func ParseFlags(name string, args []string, getenv func(string) string, stderr io.Writer) (Config, string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c Config
	var brokers, logLevel, metricsAddr string
	fs.StringVar(&brokers, "brokers", "", "Kafka brokers, comma separated (required)")
	fs.StringVar(&c.Topic, "topic", "chat.contact-groups", "event topic")
	fs.StringVar(&c.Group, "group", "chatgroupd", "consumer group")
	fs.StringVar(&c.DLQTopic, "dlq-topic", "", "dead-letter topic (default <topic>.dlq)")
	fs.StringVar(&c.Endpoint, "im-endpoint", "", "IM API base URL (required)")
	fs.Int64Var(&c.SDKAppID, "sdkappid", 0, "IM SDKAppID (required)")
	fs.StringVar(&c.Admin, "admin", im.DefaultAdmin, "IM admin identifier")
	fs.Float64Var(&c.RateLimit, "rate-limit", 200, "create calls/s budget")
	fs.IntVar(&c.MaxRetries, "max-retries", 5, "retries of a transient failure before dead-lettering")
	fs.StringVar(&metricsAddr, "metrics-addr", "", "accepted for command-line parity with chatgroupd; unused")
	fs.StringVar(&logLevel, "log-level", "info", "log level")
	if err := fs.Parse(args); err != nil {
		return Config{}, "", err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		env := "CHATGROUPD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(env); v != "" && !set[f.Name] {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", env, err))
			}
		}
	})
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	if brokers != "" {
		c.Brokers = strings.Split(brokers, ",")
	}
	c.SecretKey = getenv("CHATGROUPD_SECRET_KEY")
	c.Defaults()
	errs = append(errs, c.Validate())
	return c, logLevel, errors.Join(errs...)
}

// NewClient returns the IM client every subject uses, so that client cost is the same for all.
func NewClient(c Config, log *zap.Logger) (*im.Client, error) {
	return im.New(im.Config{SDKAppID: c.SDKAppID, Admin: c.Admin, SecretKey: c.SecretKey, BaseURL: c.Endpoint, Logger: log})
}

// CreateRequest maps an event onto its create_contact_group body (docs/events.md).
func CreateRequest(ev *event.Event) *im.CreateRequest {
	items := make([]im.ContactItem, len(ev.Contacts))
	for i, c := range ev.Contacts {
		items[i] = im.ContactItem{Type: c.Type, ToAccount: c.ToAccount, ToGroupID: c.ToGroupID}
	}
	return &im.CreateRequest{
		FromAccount:      ev.FromAccount,
		GroupContactItem: []im.GroupContactItem{{GroupName: ev.GroupName, ContactItem: items}},
	}
}

// Retryable says whether a failed call is worth another try: what a team's first loop checks.
func Retryable(err error) bool {
	switch im.ClassOf(err) {
	case im.ClassTransient, im.ClassRateLimited, im.ClassCredentials:
		return true
	}
	return false
}

// BackoffFor is the wait before retry n (1-based): Backoff·2^(n-1), capped at MaxBackoff.
func (c *Config) BackoffFor(n int) time.Duration {
	d := c.Backoff
	for i := 1; i < n && d < c.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, c.MaxBackoff)
}

// Main runs a peer as a process: flags, a logger on stderr, SIGTERM/SIGINT cancel the run.
func Main(name string, run func(ctx context.Context, c Config, log *zap.Logger) error) {
	c, level, err := ParseFlags(name, os.Args[1:], os.Getenv, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(2)
	}
	zc := zap.NewProductionConfig()
	if err := zc.Level.UnmarshalText([]byte(level)); err != nil {
		fmt.Fprintf(os.Stderr, "%s: log level: %v\n", name, err)
		os.Exit(2)
	}
	log, err := zc.Build()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, c, log)
	stop()
	_ = log.Sync()
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}
