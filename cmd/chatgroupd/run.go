package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/consumer"
	"github.com/chatgroupd/chatgroupd/dispatcher"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/internal/logging"
	"github.com/chatgroupd/chatgroupd/metrics"
	"github.com/chatgroupd/chatgroupd/ratelimit"
)

const (
	defaultTopic = "chat.contact-groups"
	defaultGroup = "chatgroupd"
)

// serviceFlags are the flags of `chatgroupd run`; demo and bench reuse them.
type serviceFlags struct {
	kafka          kafkaFlags
	topic          string
	group          string
	dlqTopic       string
	imRegion       string
	imEndpoint     string
	imTimeout      time.Duration
	sdkAppID       int64
	admin          string
	secretKeyFile  string
	rateLimit      float64
	metricsAddr    string
	reorderWindow  time.Duration
	retryBudget    time.Duration
	lateArrivalMax time.Duration
	// imAllowInsecureHTTP permits an http:// --im-endpoint off loopback.
	imAllowInsecureHTTP bool
	shutdownTimeout     time.Duration
	commitInterval      time.Duration
	maxInFlight         int
	dedupeWindow        int
	logLevel            string
	logFormat           string
	duplicateNames      string
	duplicateCode       int
	sessionTimeout      time.Duration
	rebalanceTime       time.Duration
	instanceID          string
	leaveOnShutdown     bool
	instanceLockDir     string
	keyMismatch         string
	partitioner         string
	fleetBudget         string
	retryLane           string
	laneTopic           string
	accountStallLimit   time.Duration
	handoverSkew        time.Duration
	// inProcessAPI is set by demo, whose simulator shares this process: a starved process delays
	// the simulator's count of our calls, so the limiter widens its window after timer stalls.
	inProcessAPI bool
	// testBreak is CHATGROUPD_TEST_BREAK, deliberately not a flag: the chaos suite sets it to
	// run a known-broken variant and prove its checker catches it. Never set in production.
	testBreak string
}

func (f *serviceFlags) register(fs *flag.FlagSet) {
	stringFlag(fs, &f.topic, "topic", defaultTopic, topicName, "event topic to consume")
	stringFlag(fs, &f.group, "group", defaultGroup, nonEmpty, "Kafka consumer group")
	stringFlag(fs, &f.dlqTopic, "dlq-topic", "", topicName, "dead-letter topic (default <topic>.dlq)")
	stringFlag(fs, &f.imRegion, "im-region", im.DefaultRegion, oneOf, "IM region: "+strings.Join(im.RegionNames(), ", "), im.RegionNames()...)
	checkedFlag(fs, &f.imEndpoint, "im-endpoint", "", "an http(s) URL with a host", checkEndpoint,
		"IM API base URL overriding the region (e.g. a simulator's http://127.0.0.1:8080; http:// only on loopback unless --im-allow-insecure-http)")
	boolFlag(fs, &f.imAllowInsecureHTTP, "im-allow-insecure-http", false, "allow an http:// --im-endpoint on a non-loopback host (the admin UserSig then crosses the network in clear text)")
	durationFlag(fs, &f.imTimeout, "im-timeout", im.DefaultTimeout, im.ServerTimeout+time.Millisecond, 5*time.Minute, "timeout of one IM API call (must exceed the server's 3s)")
	int64Flag(fs, &f.sdkAppID, "sdkappid", 0, 1, math.MaxUint32, "IM SDKAppID (required)")
	stringFlag(fs, &f.admin, "admin", im.DefaultAdmin, nonEmpty, "IM app admin identifier")
	stringFlag(fs, &f.secretKeyFile, "secret-key-file", "", anyString, "file holding the IM secret key (else CHATGROUPD_SECRET_KEY)")
	floatFlag(fs, &f.rateLimit, "rate-limit", dispatcher.DefaultRateLimit, 0.1, 100000, "create calls/s budget of the whole consumer group (all replicas together)")
	stringFlag(fs, &f.fleetBudget, "fleet-budget", modeAuto, oneOf, "how replicas share --rate-limit: kafka (budget flows to backlog, coordinated through the topic <topic>.budget, created when missing; fails to start without it), static (each the share of its partitions), or auto (kafka when <topic>.budget exists or can be created, else static with an error log, chatgroupd_mode_fallback and a restart once the topic appears)",
		modeAuto, fleetKafka, fleetStatic)
	stringFlag(fs, &f.metricsAddr, "metrics-addr", ":9090", hostPort, "listen address of /metrics, /healthz and /readyz")
	durationFlag(fs, &f.reorderWindow, "reorder-window", consumer.DefaultReorderWindow, time.Millisecond, time.Minute, "how long an event ahead of its account's seq waits for the missing ones")
	durationFlag(fs, &f.retryBudget, "retry-budget", dispatcher.DefaultRetryBudget, time.Second, 7*24*time.Hour, "how long one event's transient failures are retried before it is dead-lettered as exhausted")
	durationFlag(fs, &f.lateArrivalMax, "late-arrival-max", ratelimit.DefaultLateArrivalMax, 0, 500*time.Millisecond, "longest a call's rate slot is held past its write when its round trip was slower than the recent median (the API may have counted it late; at most 500ms, 0 turns it off)")
	durationFlag(fs, &f.shutdownTimeout, "shutdown-timeout", consumer.DefaultShutdownTimeout, time.Second, 10*time.Minute, "how long shutdown waits for in-flight calls before leaving them uncommitted")
	durationFlag(fs, &f.commitInterval, "commit-interval", consumer.DefaultCommitInterval, 10*time.Millisecond, 10*time.Minute, "how often offsets are committed")
	intFlag(fs, &f.maxInFlight, "max-in-flight", consumer.DefaultMaxInFlight, 1, 100000, "events dispatched at once across accounts")
	intFlag(fs, &f.dedupeWindow, "dedupe-window", consumer.DefaultDedupeWindow, 1, 10000000, "event ids remembered per partition for dedupe")
	stringFlag(fs, &f.duplicateNames, "duplicate-names", dispatcher.DefaultDuplicateNames, oneOf, "an event naming a group its user already has: merge (add its conversations; applied) or reject (dead-letter as rejected unless the group already holds them all)",
		dispatcher.DuplicateMerge, dispatcher.DuplicateReject)
	intFlag(fs, &f.duplicateCode, "duplicate-code", dispatcher.DefaultDuplicateCode, 1, 999999, "code the IM API answers a create naming an existing group (see chatgroupd imcheck)")
	durationFlag(fs, &f.sessionTimeout, "session-timeout", consumer.DefaultSessionTimeout, time.Second, 30*time.Minute, "Kafka group session: a member silent this long is evicted and its partitions move (bounds recovery after a crash, and a revoked member's drain)")
	durationFlag(fs, &f.rebalanceTime, "rebalance-timeout", consumer.DefaultRebalanceTimeout, time.Second, 30*time.Minute, "how long the group waits for members to rejoin at a rebalance (at least --session-timeout)")
	checkedFlag(fs, &f.instanceID, "instance-id", "", "a Kafka group.instance.id: letters, digits, '.', '_', '-', at most 249", checkInstanceID,
		"static group membership: a unique, stable id per replica (the chart uses the pod name); a restart within --session-timeout gets its partitions back without a rebalance, a graceful stop still hands them over at once unless --leave-on-shutdown=false (default: dynamic membership)")
	boolFlag(fs, &f.leaveOnShutdown, "leave-on-shutdown", true, "a graceful stop leaves the group, handing the partitions over at once; false (needs --instance-id): it stays a member, so a restart with the same id within --session-timeout takes its partitions back without any rebalance, and a replica that does not come back hands them over only after the session timeout; while it is away, any rebalance (a join, another replica's crash) waits for it, up to --session-timeout, with every member stopped (use it for restarts where ids survive them: a StatefulSet, fixed hosts; not for scale-downs, nor where a rollout gives new ids, as the chart's Deployment does)")
	stringFlag(fs, &f.instanceLockDir, "instance-lock-dir", "", anyString, "a local directory (an emptyDir in Kubernetes) where each replica locks its --instance-id (needs it): a replica restarted after a crash finds its predecessor's lock released and takes over its fleet budget share at once instead of after the budget TTL; only used with --fleet-budget kafka (default: off)")
	stringFlag(fs, &f.keyMismatch, "key-mismatch", consumer.KeyMismatchCount, oneOf, "valid events whose record key is not from_account: count (apply, count, log the account once) or dead-letter (as invalid)",
		consumer.KeyMismatchCount, consumer.KeyMismatchDeadLetter)
	stringFlag(fs, &f.partitioner, "partitioner", string(event.DefaultPartitioner), oneOf, "the event producers' partitioner (murmur2, crc32, fnv1a): records elsewhere than it puts their key count in chatgroupd_events_misrouted_total",
		string(event.PartitionerMurmur2), string(event.PartitionerCRC32), string(event.PartitionerFNV1a))
	stringFlag(fs, &f.retryLane, "retry-lane", modeAuto, oneOf, "on: an account whose head event fails transiently for --account-stall-limit is parked in the retry lane (--lane-topic, created when missing; fails to start without it) with its later events, in order, so it never holds up its partition; auto: on when the lane topic exists or can be created, else off with an error log, chatgroupd_mode_fallback and a restart once the topic appears",
		modeAuto, laneOn, laneOff)
	stringFlag(fs, &f.laneTopic, "lane-topic", "", topicName, "retry-lane topic (default <topic>.retry; at least the event topic's partitions)")
	durationFlag(fs, &f.accountStallLimit, "account-stall-limit", consumer.DefaultAccountStallLimit, time.Second, 24*time.Hour, "with the retry lane on: how long an account's head event may fail transiently before the account is parked")
	durationFlag(fs, &f.handoverSkew, "handover-skew", consumer.DefaultHandoverSkew, -time.Nanosecond, time.Minute, "how far another replica's clock may lag this one's: a new owner holds a partition's uncertain accounts only until the previous owner's stated end of its calls plus this margin; negative: commits state nothing (neither the end of the calls nor which records were sent), records are written without waiting for a commit that lists them, and every hand-over waits the full hold and re-checks every record below the horizon (set it while replicas older than commit metadata v5 still run)")
	stringFlag(fs, &f.logLevel, "log-level", "info", oneOf, "log level: debug, info, warn, error", logLevels()...)
	stringFlag(fs, &f.logFormat, "log-format", "json", oneOf, "log format: json or console", "json", "console")
}

// logLevels are the values of every --log-level.
func logLevels() []string { return []string{"debug", "info", "warn", "error"} }

// checkEndpoint accepts an http or https URL with a host (the loopback rule for http:// needs
// --im-allow-insecure-http too, so it is checked after parsing: insecureEndpoint).
func checkEndpoint(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q has no http(s) scheme and host", s)
	}
	return nil
}

// insecureEndpoint reports an http:// endpoint whose host is not loopback: the admin UserSig
// (a day of app-admin rights) would cross the network in clear text.
func insecureEndpoint(endpoint string) bool {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "http" {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}

// checkInstanceID accepts "" (dynamic membership) or a valid group.instance.id.
func checkInstanceID(s string) error {
	if s == "" {
		return nil
	}
	return consumer.ValidateInstanceID(s)
}

func (f *serviceFlags) dlq() string {
	if f.dlqTopic != "" {
		return f.dlqTopic
	}
	return f.topic + ".dlq"
}

// runHelp is `chatgroupd run --help` besides the flags.
func runHelp() help {
	return help{
		usage: "chatgroupd run [flags]",
		about: `Runs the service: consumes events from --topic as a member of the consumer group --group,
applies each to the IM API under one --rate-limit budget shared by every replica, dead-letters
what the API will never accept to --dlq-topic, and serves /metrics, /healthz and /readyz on
--metrics-addr. SIGTERM or SIGINT drains in-flight calls, commits and leaves the group.`,
		env: []string{
			"CHATGROUPD_SECRET_KEY            the IM secret key (or --secret-key-file; never a flag value)",
			"CHATGROUPD_KAFKA_SASL_PASSWORD   the Kafka SASL password (or --kafka-sasl-password-file)",
		},
		example: []string{
			"CHATGROUPD_SECRET_KEY=... chatgroupd run --brokers kafka-0:9092,kafka-1:9092 --sdkappid 1400000000 --im-region singapore",
		},
	}
}

// newRunFlags declares the flags of `chatgroupd run`.
func newRunFlags(f *serviceFlags) *flag.FlagSet {
	fs := newFlagSet("run", nil)
	f.kafka.register(fs)
	f.register(fs)
	return fs
}

func runService(ctx context.Context, args []string, getenv env, stdout, stderr io.Writer) error {
	var f serviceFlags
	fs := newRunFlags(&f)
	if err := parseFlags(fs, args, getenv, stdout, runHelp()); err != nil {
		return err
	}
	f.testBreak = getenv(envTestBreak)
	if f.sdkAppID <= 0 {
		return usageError("run", errors.New("--sdkappid is required (an integer from 1 to 4294967295)"))
	}
	if !f.leaveOnShutdown && f.instanceID == "" {
		return usageError("run", errors.New("--leave-on-shutdown=false needs --instance-id (a member without one is never taken back)"))
	}
	if f.instanceLockDir != "" && f.instanceID == "" {
		return usageError("run", errors.New("--instance-lock-dir needs --instance-id (the lock is per instance id)"))
	}
	if insecureEndpoint(f.imEndpoint) && !f.imAllowInsecureHTTP {
		return usageError("run", fmt.Errorf("--im-endpoint %s: http:// is allowed only on loopback (the admin UserSig would cross the network in clear text); use https:// or --im-allow-insecure-http", f.imEndpoint))
	}
	if err := f.kafka.check(); err != nil {
		return usageError("run", err)
	}
	key, err := secretKey(f.secretKeyFile, getenv)
	if err != nil {
		return err
	}
	conn, secrets, err := f.kafka.conn(getenv)
	if err != nil {
		return err
	}
	defer conn.Close()
	log, err := logging.New(f.logLevel, f.logFormat, stderr, append(secrets, key)...)
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck // nothing useful to do at exit
	f.kafka.warn(log)
	if insecureEndpoint(f.imEndpoint) {
		log.Warn("IM endpoint is plain http on a non-loopback host (--im-allow-insecure-http): the admin UserSig crosses the network in clear text", zap.String("endpoint", f.imEndpoint))
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
