package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/consumer"
	"github.com/chatgroupd/chatgroupd/dispatcher"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/internal/logging"
	"github.com/chatgroupd/chatgroupd/metrics"
)

const (
	defaultTopic = "chat.contact-groups"
	defaultGroup = "chatgroupd"
)

// serviceFlags are the flags of `chatgroupd run`; demo and bench reuse them.
type serviceFlags struct {
	kafka           kafkaFlags
	topic           string
	group           string
	dlqTopic        string
	imRegion        string
	imEndpoint      string
	imTimeout       time.Duration
	sdkAppID        int64
	admin           string
	secretKeyFile   string
	rateLimit       float64
	metricsAddr     string
	reorderWindow   time.Duration
	retryBudget     time.Duration
	lateArrivalMax  time.Duration
	duplicateNames  string
	duplicateCode   int
	shutdownTimeout time.Duration
	sessionTimeout  time.Duration
	rebalanceTime   time.Duration
	commitInterval  time.Duration
	maxInFlight     int
	dedupeWindow    int
	keyMismatch     string
	logLevel        string
	logFormat       string
	partitioner     string
	// inProcessAPI is set by demo, whose simulator shares this process: a starved process delays
	// the simulator's count of our calls, so the limiter widens its window after timer stalls.
	inProcessAPI bool
	// testBreak is CHATGROUPD_TEST_BREAK, deliberately not a flag: the chaos suite sets it to
	// run a known-broken variant and prove its checker catches it. Never set in production.
	testBreak string
}

func (f *serviceFlags) register(fs interface {
	StringVar(*string, string, string, string)
	Int64Var(*int64, string, int64, string)
	IntVar(*int, string, int, string)
	Float64Var(*float64, string, float64, string)
	DurationVar(*time.Duration, string, time.Duration, string)
}) {
	fs.StringVar(&f.topic, "topic", defaultTopic, "event topic to consume")
	fs.StringVar(&f.group, "group", defaultGroup, "Kafka consumer group")
	fs.StringVar(&f.dlqTopic, "dlq-topic", "", "dead-letter topic (default <topic>.dlq)")
	fs.StringVar(&f.imRegion, "im-region", im.DefaultRegion, "IM region: china, singapore, seoul, tokyo, frankfurt, mumbai, silicon-valley, jakarta")
	fs.StringVar(&f.imEndpoint, "im-endpoint", "", "IM API base URL overriding the region (e.g. a simulator's http://127.0.0.1:8080)")
	fs.DurationVar(&f.imTimeout, "im-timeout", im.DefaultTimeout, "timeout of one IM API call (must exceed the server's 3s)")
	fs.Int64Var(&f.sdkAppID, "sdkappid", 0, "IM SDKAppID (required)")
	fs.StringVar(&f.admin, "admin", im.DefaultAdmin, "IM app admin identifier")
	fs.StringVar(&f.secretKeyFile, "secret-key-file", "", "file holding the IM secret key (else CHATGROUPD_SECRET_KEY)")
	fs.Float64Var(&f.rateLimit, "rate-limit", 200, "create calls/s budget of the whole consumer group (all replicas together)")
	fs.StringVar(&f.metricsAddr, "metrics-addr", ":9090", "listen address of /metrics, /healthz and /readyz")
	fs.DurationVar(&f.reorderWindow, "reorder-window", time.Second, "how long an event ahead of its account's seq waits for the missing ones")
	fs.DurationVar(&f.retryBudget, "retry-budget", time.Hour, "how long one event's transient failures are retried before it is dead-lettered as exhausted")
	fs.DurationVar(&f.lateArrivalMax, "late-arrival-max", dispatcher.DefaultLateArrivalMax, "longest a call's rate slot is held past its write when its round trip was slower than the recent median (the API may have counted it late; at most 500ms, 0 turns it off)")
	fs.StringVar(&f.duplicateNames, "duplicate-names", dispatcher.DefaultDuplicateNames, "an event naming a group its user already has: merge (add its conversations; applied) or reject (dead-letter as rejected unless the group already holds them all)")
	fs.IntVar(&f.duplicateCode, "duplicate-code", dispatcher.DefaultDuplicateCode, "code the IM API answers a create naming an existing group (see chatgroupd imcheck)")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 20*time.Second, "how long shutdown waits for in-flight calls before leaving them uncommitted")
	fs.DurationVar(&f.sessionTimeout, "session-timeout", consumer.DefaultSessionTimeout, "Kafka group session: a member silent this long is evicted and its partitions move (bounds recovery after a crash, and a revoked member's drain)")
	fs.DurationVar(&f.rebalanceTime, "rebalance-timeout", consumer.DefaultRebalanceTimeout, "how long the group waits for members to rejoin at a rebalance (at least --session-timeout)")
	fs.DurationVar(&f.commitInterval, "commit-interval", time.Second, "how often offsets are committed")
	fs.IntVar(&f.maxInFlight, "max-in-flight", 256, "events dispatched at once across accounts")
	fs.IntVar(&f.dedupeWindow, "dedupe-window", 100000, "event ids remembered per partition for dedupe")
	fs.StringVar(&f.keyMismatch, "key-mismatch", consumer.KeyMismatchCount, "valid events whose record key is not from_account: count (apply, count, log the account once) or dead-letter (as invalid)")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&f.logFormat, "log-format", "json", "log format: json or console")
	fs.StringVar(&f.partitioner, "partitioner", string(event.DefaultPartitioner), "the event producers' partitioner (murmur2, crc32, fnv1a): records elsewhere than it puts their key count in chatgroupd_events_misrouted_total")
}

func (f *serviceFlags) dlq() string {
	if f.dlqTopic != "" {
		return f.dlqTopic
	}
	return f.topic + ".dlq"
}

func runService(ctx context.Context, args []string, getenv env, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", stderr)
	var f serviceFlags
	f.kafka.register(fs)
	f.register(fs)
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	f.testBreak = getenv(envTestBreak)
	log, err := logging.New(f.logLevel, f.logFormat, stderr)
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck // nothing useful to do at exit
	conn, err := f.kafka.conn(getenv)
	if err != nil {
		return err
	}
	key, err := secretKey(f.secretKeyFile, getenv)
	if err != nil {
		return err
	}
	if f.sdkAppID <= 0 {
		return fmt.Errorf("--sdkappid is required")
	}
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, version, true)
	svc, err := newService(serviceConfig{
		flags: f, conn: conn, secretKey: key, log: log, metrics: m, gatherer: reg,
	})
	if err != nil {
		return err
	}
	log.Info("chatgroupd starting", zap.String("version", version), zap.Strings("brokers", conn.Brokers), zap.String("topic", f.topic), zap.String("group", f.group))
	return svc.Run(ctx)
}
