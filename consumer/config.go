package consumer

import (
	"cmp"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultMaxInFlight      = 256
	DefaultMaxBuffered      = 2000
	DefaultMaxBufferedBytes = 16 << 20
	DefaultReorderWindow    = time.Second
	DefaultCommitInterval   = time.Second
	DefaultDedupeWindow     = 100000
	DefaultMetadataMaxBytes = 4096
	DefaultShutdownTimeout  = 20 * time.Second
	DefaultSessionTimeout   = 10 * time.Second
	DefaultRebalanceTimeout = 30 * time.Second
	// DefaultHeartbeatInterval lets a member notice a rebalance within about a second.
	DefaultHeartbeatInterval = 500 * time.Millisecond
	// DefaultUncertainHold is the IM client's default timeout per request (5s) plus a second.
	DefaultUncertainHold = 6 * time.Second
	// DefaultHandoverSkew bounds the wall-clock difference between replicas (NTP keeps hosts
	// within milliseconds; this leaves room for a host whose sync lapsed for a while).
	DefaultHandoverSkew = 500 * time.Millisecond
	// DefaultAccountStallLimit is how long an account's head event may fail transiently before
	// the account is parked in the retry lane (RetryLane on).
	DefaultAccountStallLimit = 2 * time.Minute
)

// Config configures a Consumer. Zero values take the defaults above.
type Config struct {
	Brokers []string
	Topic   string
	GroupID string
	// Dialer carries TLS and SASL for the group and fetch connections; nil means kafka.DefaultDialer.
	Dialer *kafka.Dialer
	// Transport carries the same TLS and SASL for commits, offset fetches and lag; nil means
	// kafka.DefaultTransport.
	Transport    kafka.RoundTripper
	Dispatcher   Dispatcher
	DeadLetterer DeadLetterer
	// Share, when set, learns on every generation how many partitions this member owns.
	Share ShareSetter

	// MaxInFlight bounds events dispatched at once across all accounts.
	MaxInFlight int
	// MaxBuffered bounds records fetched but not ended per partition; fetching pauses beyond it.
	MaxBuffered int
	// MaxBufferedBytes bounds the key and value bytes of those records per partition, since a
	// value may be up to 1 MiB.
	MaxBufferedBytes int
	// ReorderWindow is how long an event whose seq is ahead waits for the missing ones.
	ReorderWindow time.Duration
	// CommitInterval is the period of watermark commits (plus one on revoke and on shutdown).
	CommitInterval time.Duration
	// DedupeWindow is how many ended event ids are remembered per partition.
	DedupeWindow int
	// MetadataMaxBytes bounds the commit metadata exactly (its length is what the broker checks);
	// keep it at or under the broker's offset.metadata.max.bytes (4096 by default).
	MetadataMaxBytes int
	// ShutdownTimeout bounds how long shutdown waits for in-flight events.
	ShutdownTimeout time.Duration
	// SessionTimeout is how long the coordinator waits for a silent member before handing its
	// partitions on; it bounds recovery after a crash. kafka-go heartbeats independently of
	// processing, so slow API calls never make a live member look dead.
	SessionTimeout   time.Duration
	RebalanceTimeout time.Duration
	// HeartbeatInterval is how often the member heartbeats (default DefaultHeartbeatInterval,
	// at most a third of SessionTimeout): how soon it learns of a rebalance, and how often its
	// membership lease is renewed.
	HeartbeatInterval time.Duration
	// InstanceID, when set, is the member's group.instance.id (static membership): a process
	// restarted with the same id within SessionTimeout takes its partitions back without a
	// rebalance of the others, and an older process still holding the id is fenced (Run returns
	// ErrFenced). It must be unique within the group; see ValidateInstanceID.
	InstanceID string
	// StayOnShutdown: a graceful stop of a static member (InstanceID set) drains and commits
	// but does not leave the group, as a static member of Kafka's own consumer doesn't: a
	// process started again with the same id within SessionTimeout takes its partitions back
	// without a rebalance of the others (a rolling restart of fixed ids costs no rebalance at
	// all), while one that does not come back hands them over only once SessionTimeout has
	// passed. Meanwhile any rebalance (a join, another member's crash) waits for the absent
	// member, up to SessionTimeout, with every member stopped: Kafka's static membership. Set it where ids survive restarts (a StatefulSet, fixed hosts); leave it off
	// where a rollout gives new ids (a Deployment with pod names), whose old members should go
	// at once. Requires InstanceID.
	StayOnShutdown bool
	// UncertainHold is how long after getting a partition the accounts of its uncertain records
	// (those the previous owner may have sent, see DESIGN.md) wait before any of their records
	// is dispatched. A request the previous owner wrote before it lost the partition (its
	// membership lease ended by then) may still be running at the API, for as long as the API
	// client's timeout per request: a look-up or create for the same account meanwhile would
	// run beside it, and a create could race it. Set it to that timeout plus a margin (the
	// service uses --im-timeout + 1s); default DefaultUncertainHold. Negative turns the hold off,
	// for tests about something else only.
	UncertainHold time.Duration
	// HandoverSkew is how far another replica's wall clock may lag this one's. A previous owner
	// that drained states in its final commit after which time (its clock) none of its requests
	// still runs; the hold then ends at that time plus HandoverSkew (never later than the full
	// hold). Default DefaultHandoverSkew; negative: final commits state nothing and statements
	// read are ignored (every successor holds in full), e.g. while replicas that can't read
	// metadata v3 still run.
	HandoverSkew time.Duration
	// KeyMismatch is what happens to a valid event whose record key is not its from_account:
	// KeyMismatchCount (the default) or KeyMismatchDeadLetter.
	KeyMismatch string

	// RetryLane parks an account whose head event has failed transiently for AccountStallLimit:
	// that event and every later one of the account move, in order, to LaneTopic (same partition
	// number) and are retried from there, so the account no longer holds up its partition.
	RetryLane bool
	// LaneTopic is the retry lane's topic (default Topic + ".retry"); it must have at least the
	// main topic's partitions.
	LaneTopic string
	// AccountStallLimit: see RetryLane.
	AccountStallLimit time.Duration

	// Partitioner is the producers' partitioner (default event.DefaultPartitioner): records in
	// another partition than it gives their key are counted in EventsMisrouted.
	Partitioner event.Partitioner

	// ProgressStall is how long the group leader lets a partition assigned to another member
	// go without progress (its committed offset and metadata unchanged while records wait
	// beyond it) before it rejoins to force a rebalance: the owner may be a member that
	// vanished before it ever heard its assignment, which a coordinator is meant to evict a
	// session later but may not (see member.watchProgress). A live owner blocked that long
	// costs one rebalance that gives it the same partitions back. Default: the longer of twice
	// the rebalance timeout and twice the session plus UncertainHold. Negative turns it off.
	ProgressStall time.Duration

	// TestDropPartition is for tests only, never for production: the group leader leaves the
	// topic's last partition out of its assignment, so a chaos suite can prove its checker
	// catches a partition without an owner.
	TestDropPartition bool

	// TestUnstatedEnds is for tests only, never for production: an account's next record is
	// dispatched without waiting for a commit to state its previous one ended (stated.go), so a
	// chaos suite can prove its checker catches what a successor's look-up then gets wrong.
	TestUnstatedEnds bool

	// TestUngatedWrites is for tests only, never for production: records are written without
	// waiting for a commit that lists them (admit.go), so a chaos suite can prove its checker
	// catches what a successor then takes as never sent after a crash.
	TestUngatedWrites bool

	// TestUngatedLane is for tests only, never for production: a parked account's lane copies are
	// written without waiting for a commit that states their main-topic record ended (admit.go,
	// laneAdmitter), so a chaos suite can prove its checker catches the copy applied and the main
	// record applied again by a successor after a crash.
	TestUngatedLane bool

	// TestLegacyDrain is for tests only, never for production: it restores the drain of a
	// revoked generation as it was before the session bound (rebalance timeout only, calls
	// queued in the rate limiter waited for, not cancelled), so a chaos suite can prove its
	// checker catches the member evicted while its calls still run.
	TestLegacyDrain bool

	Logger  *zap.Logger
	Metrics *metrics.Metrics
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	// testEngine, for tests, is handed each generation's engine as it is made (to look inside).
	testEngine func(*engine)
	// metaEncoder, for tests, replaces the commit metadata encoder; nil means encodeMeta.
	metaEncoder func(w int64, m commitMeta, maxBytes int) metaEnc
}

// setDefaults fills the zero fields with the defaults above (UncertainHold and HandoverSkew
// keep a negative value: it turns them off).
func (c *Config) setDefaults() {
	c.MaxInFlight = cmp.Or(c.MaxInFlight, DefaultMaxInFlight)
	c.MaxBuffered = cmp.Or(c.MaxBuffered, DefaultMaxBuffered)
	c.MaxBufferedBytes = cmp.Or(c.MaxBufferedBytes, DefaultMaxBufferedBytes)
	c.DedupeWindow = cmp.Or(c.DedupeWindow, DefaultDedupeWindow)
	c.MetadataMaxBytes = cmp.Or(c.MetadataMaxBytes, DefaultMetadataMaxBytes)
	c.ReorderWindow = cmp.Or(c.ReorderWindow, DefaultReorderWindow)
	c.CommitInterval = cmp.Or(c.CommitInterval, DefaultCommitInterval)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, DefaultShutdownTimeout)
	c.SessionTimeout = cmp.Or(c.SessionTimeout, DefaultSessionTimeout)
	c.RebalanceTimeout = cmp.Or(c.RebalanceTimeout, DefaultRebalanceTimeout)
	c.HeartbeatInterval = cmp.Or(c.HeartbeatInterval, DefaultHeartbeatInterval)
	c.UncertainHold = cmp.Or(c.UncertainHold, DefaultUncertainHold)
	c.ProgressStall = cmp.Or(c.ProgressStall, max(2*c.RebalanceTimeout, 2*c.SessionTimeout+max(c.UncertainHold, 0)))
	c.HandoverSkew = cmp.Or(c.HandoverSkew, DefaultHandoverSkew)
	c.AccountStallLimit = cmp.Or(c.AccountStallLimit, DefaultAccountStallLimit)
	c.Partitioner = cmp.Or(c.Partitioner, event.DefaultPartitioner)
	c.KeyMismatch = cmp.Or(c.KeyMismatch, KeyMismatchCount)
	if c.Dialer == nil {
		c.Dialer = kafka.DefaultDialer
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewNop()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports every setting that can't work, defaults applied, joined, each naming its
// field (and, where the relation is between flags, the chatgroupd run flags).
func (c Config) Validate() error {
	c.setDefaults()
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("brokers: required"))
	}
	if c.Topic == "" {
		errs = append(errs, errors.New("topic: required"))
	}
	if c.GroupID == "" {
		errs = append(errs, errors.New("group id: required"))
	}
	if c.Dispatcher == nil {
		errs = append(errs, errors.New("dispatcher: required"))
	}
	if c.DeadLetterer == nil {
		errs = append(errs, errors.New("dead letterer: required"))
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"max in-flight", c.MaxInFlight}, {"max buffered", c.MaxBuffered}, {"max buffered bytes", c.MaxBufferedBytes},
		{"dedupe window", c.DedupeWindow}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative, got %d", f.name, f.v))
		}
	}
	if c.KeyMismatch != KeyMismatchCount && c.KeyMismatch != KeyMismatchDeadLetter {
		errs = append(errs, fmt.Errorf("key mismatch: must be %q or %q, got %q", KeyMismatchCount, KeyMismatchDeadLetter, c.KeyMismatch))
	}
	if c.MetadataMaxBytes < 64 || c.MetadataMaxBytes > 4096 {
		errs = append(errs, fmt.Errorf("metadata max bytes: must be 64-4096, got %d", c.MetadataMaxBytes))
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"reorder window", c.ReorderWindow}, {"commit interval", c.CommitInterval}, {"shutdown timeout", c.ShutdownTimeout},
		{"session timeout", c.SessionTimeout}, {"rebalance timeout", c.RebalanceTimeout}, {"account stall limit", c.AccountStallLimit},
		{"heartbeat interval", c.HeartbeatInterval}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative, got %s", f.name, f.v))
		}
	}
	if c.RetryLane && c.LaneTopic != "" && c.LaneTopic == c.Topic {
		errs = append(errs, fmt.Errorf("lane topic: must differ from the topic %q", c.Topic))
	}
	if err := c.validateIdentity(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Partitioner.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("partitioner: %w", err))
	}
	errs = append(errs, c.timeoutRelations()...)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("consumer config: %w", err)
	}
	return nil
}

// validateIdentity checks the static membership settings: InstanceID, and StayOnShutdown,
// which needs it.
func (c Config) validateIdentity() error {
	if c.InstanceID != "" {
		return ValidateInstanceID(c.InstanceID)
	}
	if c.StayOnShutdown {
		return errors.New("stay on shutdown: needs an instance id (a dynamic member is never taken back)")
	}
	return nil
}

// minDrain is the least time a revoked generation must get to let its calls in flight finish
// and commit before the coordinator evicts the member.
const minDrain = time.Second

// timeoutRelations checks the timeouts of c, defaults applied, against each other. A revoked member
// stops heartbeating and is evicted a session after its last heartbeat, or when it does not
// rejoin within the rebalance timeout; the drain must end (with its final commit, a second)
// before either, a heartbeat early since that is how late the member learns of the end.
// The messages name the chatgroupd run flags.
func (c Config) timeoutRelations() []error {
	if c.SessionTimeout < 0 || c.RebalanceTimeout < 0 {
		return nil // reported above
	}
	cons := Consumer{cfg: c}
	hb := cons.heartbeat()
	var errs []error
	if c.SessionTimeout-hb-time.Second < minDrain {
		errs = append(errs, fmt.Errorf("session timeout %s (--session-timeout): a revoked member would have under %s to finish its calls "+
			"and commit before eviction (session − heartbeat %s − 1s); raise --session-timeout to at least %s", c.SessionTimeout, minDrain, hb,
			c.HeartbeatInterval+time.Second+minDrain))
	}
	if c.RebalanceTimeout-hb-time.Second < minDrain {
		errs = append(errs, fmt.Errorf("rebalance timeout %s (--rebalance-timeout): a revoked member would have under %s to finish its calls "+
			"and commit before the group gives up on it (rebalance timeout − heartbeat %s − 1s); raise --rebalance-timeout to at least %s",
			c.RebalanceTimeout, minDrain, hb, hb+time.Second+minDrain))
	}
	return errs
}

// maxInstanceIDLen bounds an instance id: Kafka accepts up to 249 characters (like a topic
// name), and the pod names it is usually made of are at most 253.
const maxInstanceIDLen = 249

// ErrInstanceID: the instance id has characters or a length Kafka refuses.
var ErrInstanceID = errors.New("instance id: invalid")

// ValidateInstanceID reports whether id can be a group.instance.id: 1–249 characters among
// ASCII letters, digits, '.', '_' and '-' (the broker's own rule for such names).
func ValidateInstanceID(id string) error {
	if id == "" || len(id) > maxInstanceIDLen {
		return fmt.Errorf("%w: %d characters, want 1-%d", ErrInstanceID, len(id), maxInstanceIDLen)
	}
	if id == "." || id == ".." {
		return fmt.Errorf("%w: %q is reserved", ErrInstanceID, id)
	}
	for i, r := range id {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
		if !ok {
			return fmt.Errorf("%w: character %q at %d; use letters, digits, '.', '_' and '-'", ErrInstanceID, r, i)
		}
	}
	return nil
}
