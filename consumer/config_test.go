package consumer

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/internal/configtest"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
	"github.com/chatgroupd/chatgroupd/metrics"
	"github.com/chatgroupd/chatgroupd/metrics/metricstest"
)

func TestConfigValidate(t *testing.T) {
	ok := Config{Brokers: []string{"127.0.0.1:9092"}, Topic: "t", GroupID: "g", Dispatcher: newFakeDispatcher(t), DeadLetterer: &fakeDL{}}
	tests := []struct {
		name string
		edit func(*Config)
		want string // "" means valid
	}{
		{"minimal", func(*Config) {}, ""},
		{"no brokers", func(c *Config) { c.Brokers = nil }, "brokers: required"},
		{"no topic", func(c *Config) { c.Topic = "" }, "topic: required"},
		{"no group", func(c *Config) { c.GroupID = "" }, "group id: required"},
		{"no dispatcher", func(c *Config) { c.Dispatcher = nil }, "dispatcher: required"},
		{"no dead letterer", func(c *Config) { c.DeadLetterer = nil }, "dead letterer: required"},
		{"negative in-flight", func(c *Config) { c.MaxInFlight = -1 }, "max in-flight"},
		{"metadata over broker default", func(c *Config) { c.MetadataMaxBytes = 5000 }, "metadata max bytes"},
		{"negative window", func(c *Config) { c.ReorderWindow = -time.Second }, "reorder window"},
		{"session too short to drain", func(c *Config) { c.SessionTimeout = 2 * time.Second }, "raise --session-timeout"},
		{"shortest session", func(c *Config) {
			c.SessionTimeout, c.RebalanceTimeout, c.CommitInterval = 3*time.Second, 3*time.Second, 500*time.Millisecond
		}, ""},
		{"rebalance timeout too short to drain", func(c *Config) { c.RebalanceTimeout = 2 * time.Second }, "raise --rebalance-timeout to at least 2.5s"},
		{"session just short of the drain", func(c *Config) { c.SessionTimeout = 2400 * time.Millisecond }, "raise --session-timeout to at least 2.5s"},
		{"negative heartbeat", func(c *Config) { c.HeartbeatInterval = -time.Second }, "heartbeat interval"},
		{"instance id", func(c *Config) { c.InstanceID = "chatgroupd-7d9f8c6b5-x2x4q" }, ""},
		{"instance id with a space", func(c *Config) { c.InstanceID = "pod 1" }, "instance id: invalid"},
		{"instance id too long", func(c *Config) { c.InstanceID = strings.Repeat("a", 250) }, "instance id: invalid"},
		{"instance id dot", func(c *Config) { c.InstanceID = ".." }, "reserved"},
		{"stay on shutdown", func(c *Config) { c.InstanceID, c.StayOnShutdown = "chatgroupd-0", true }, ""},
		{"stay on shutdown without an instance id", func(c *Config) { c.StayOnShutdown = true }, "stay on shutdown: needs an instance id"},
		{"rebalance below session is fine", func(c *Config) { c.SessionTimeout, c.RebalanceTimeout = 6*time.Second, 4*time.Second }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if _, err := New(c); err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to mention %q", err, tt.want)
			}
			if _, err := New(c); err == nil {
				t.Fatal("New accepted an invalid config")
			}
		})
	}
	c, _ := New(ok)
	if c.cfg.MaxInFlight != DefaultMaxInFlight || c.cfg.MetadataMaxBytes != DefaultMetadataMaxBytes || c.cfg.Logger == nil || c.cfg.Metrics == nil {
		t.Errorf("defaults not applied: %+v", c.cfg)
	}
}

// TestConfigValidateJoinsEveryProblem: one Validate names every problem, in order.
func TestConfigValidateJoinsEveryProblem(t *testing.T) {
	err := Config{
		MaxInFlight: -1, MaxBuffered: -1, MaxBufferedBytes: -1, DedupeWindow: -1, KeyMismatch: "drop", MetadataMaxBytes: 10,
		ReorderWindow: -1, CommitInterval: -1, ShutdownTimeout: -1, SessionTimeout: 2 * time.Second, AccountStallLimit: -1,
		RetryLane: true, LaneTopic: "t", Topic: "t", InstanceID: "a b", Partitioner: "md5",
	}.Validate()
	configtest.Problems(t, err, "consumer config: brokers: required", "group id: required", "dispatcher: required",
		"dead letterer: required", "max in-flight: must not be negative", "max buffered: must not be negative",
		"max buffered bytes: must not be negative", "dedupe window: must not be negative", `key mismatch: must be "count" or "dead-letter", got "drop"`,
		"metadata max bytes: must be 64-4096, got 10", "reorder window: must not be negative", "commit interval: must not be negative",
		"shutdown timeout: must not be negative", "account stall limit: must not be negative",
		`lane topic: must differ from the topic "t"`, "instance id: invalid", "partitioner:", "session timeout 2s (--session-timeout)")
}

// withDefaults is c with its defaults applied, for tests that read them.
func (c Config) withDefaults() Config {
	c.setDefaults()
	return c
}

type shareRec struct {
	mu         sync.Mutex
	owned, tot int
	calls      int
	stopping   int // Stopping calls
	stopCall   int // the calls to SetPartitions before the last Stopping
}

func (s *shareRec) SetPartitions(ids []int, total int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.owned, s.tot, s.calls = len(ids), total, s.calls+1
}

func (s *shareRec) Stopping() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopping, s.stopCall = s.stopping+1, s.calls
}

// TestShareAndMetrics: the share setter learns the assignment, the lag gauge falls to 0 once all
// is committed, and commits are counted.
func TestShareAndMetrics(t *testing.T) {
	e := newEnv(t, 3)
	m := newMetricsEnv(e)
	share := &shareRec{}
	prev := e.cfgEdit
	e.cfgEdit = func(c *Config) { prev(c); c.Share = share }
	msgs, _ := makeEvents(300, 30, "m")
	e.k.Produce(t, e.topic, msgs...)
	e.start()
	testwait.For(t, 10*time.Second, "committed", func() bool { return e.committedTotal() == 300 })
	testwait.For(t, 5*time.Second, "lag 0", func() bool {
		sum := 0.0
		for p := 0; p < 3; p++ {
			sum += testutil.ToFloat64(m.ConsumerLag.WithLabelValues(e.topic, string(rune('0'+p))))
		}
		return sum == 0 && testutil.CollectAndCount(m.ConsumerLag) == 3
	})
	share.mu.Lock()
	if share.owned != 3 || share.tot != 3 || share.calls != 1 {
		t.Errorf("share (%d, %d) after %d calls, want (3, 3) once", share.owned, share.tot, share.calls)
	}
	share.mu.Unlock()
	if n := counter(m.EventsConsumed); n != 300 {
		t.Errorf("consumed %v", n)
	}
	if n := metricstest.CollectorSum(m.EventsProcessed, metrics.LabelOutcome, "applied"); n != 300 {
		t.Errorf("applied %v", n)
	}
	if n := counter(m.Commits.WithLabelValues("ok")); n < 1 {
		t.Errorf("commits %v", n)
	}
	if n := counter(m.Rebalances); n != 1 {
		t.Errorf("rebalances %v", n)
	}
	if n := counter(m.DedupeEntries); n != 300 {
		t.Errorf("dedupe entries %v, want 300", n)
	}
	if n := counter(m.AssignedParts); n != 3 {
		t.Errorf("assigned partitions %v", n)
	}
}

// TestCommitMetadataBrokerRoundTrip: metadata as this package writes it survives a real
// OffsetCommit/OffsetFetch unchanged.
func TestCommitMetadataBrokerRoundTrip(t *testing.T) {
	e := newEnv(t, 1)
	// As many gaps as fit: the string is DefaultMetadataMaxBytes long, which the broker accepts.
	sc := metaScenarios[1]
	n := metaGapsFit(sc, 1, 1000, DefaultMetadataMaxBytes)
	done := sc.set(1, 1000, n)
	h := done[n-1].end + 10_000
	enc := encodeMeta(1000, commitMeta{horizon: h, done: done}, DefaultMetadataMaxBytes)
	if enc.dropped != 0 || len(enc.s) < DefaultMetadataMaxBytes-8 {
		t.Fatalf("dropped %d of %d, %d bytes", enc.dropped, len(done), len(enc.s))
	}
	meta := enc.s
	cl := &kafka.Client{Addr: kafka.TCP(e.k.Brokers...)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cl.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: e.group, GenerationID: -1,
		Topics: map[string][]kafka.OffsetCommit{e.topic: {{Partition: 0, Offset: 1000, Metadata: meta}}}})
	if err != nil || resp.Topics[e.topic][0].Error != nil {
		t.Fatalf("commit: %v %+v", err, resp)
	}
	got := e.committed()[0]
	if got.CommittedOffset != 1000 || got.Metadata != meta {
		t.Fatalf("fetched %d %q", got.CommittedOffset, got.Metadata)
	}
	m, err := decodeMeta(got.CommittedOffset, got.Metadata)
	if err != nil || m.horizon != h || !slices.Equal(m.done, done) {
		t.Fatalf("decoded %+v, %v", m.horizon, err)
	}
}

func TestLaneListConfigValidate(t *testing.T) {
	ok := LaneListConfig{Brokers: []string{"127.0.0.1:9092"}, Topic: "t", GroupID: "g"}
	tests := []struct {
		name string
		edit func(*LaneListConfig)
		want []string // none: valid
	}{
		{"minimal", func(*LaneListConfig) {}, nil},
		{"own lane topic", func(c *LaneListConfig) { c.LaneTopic = "t.lane" }, nil},
		{"no brokers", func(c *LaneListConfig) { c.Brokers = nil }, []string{"lane list config: brokers: required"}},
		{"no group", func(c *LaneListConfig) { c.GroupID = "" }, []string{"lane list config: group id: required"}},
		{"lane topic is the topic", func(c *LaneListConfig) { c.LaneTopic = "t" }, []string{"lane topic: must differ"}},
		{"everything missing", func(c *LaneListConfig) { *c = LaneListConfig{} },
			[]string{"lane list config: brokers: required", "topic: required", "group id: required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			configtest.Problems(t, c.Validate(), tt.want...)
		})
	}
}

func TestListParkedRejectsBadConfig(t *testing.T) {
	// Nothing listens at the broker address: the error must come from Validate, before any request.
	_, err := ListParked(t.Context(), LaneListConfig{Brokers: []string{"127.0.0.1:1"}, Topic: "t"})
	configtest.Problems(t, err, "lane list config: group id: required")
}
