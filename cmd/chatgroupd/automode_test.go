package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/kafkaconn"
	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
	"github.com/chatgroupd/chatgroupd/internal/logging"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// fakeAdmin answers like a broker holding topics (name → partition count, with offsets for
// ListOffsets) and refusing or failing as told.
type fakeAdmin struct {
	mu         sync.Mutex
	topics     map[string]int
	topicErr   map[string]error // per-topic error in Metadata
	records    map[string]int64 // per-topic last offset of partition 0 (ListOffsets)
	mdErr      []error          // Metadata errors, consumed in order
	createErr  []error          // per-topic CreateTopics errors, consumed in order
	createCall []kafka.TopicConfig
	listErr    error
	replicas   int
}

func (f *fakeAdmin) Metadata(_ context.Context, req *kafka.MetadataRequest) (*kafka.MetadataResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.mdErr) > 0 {
		err := f.mdErr[0]
		f.mdErr = f.mdErr[1:]
		if err != nil {
			return nil, err
		}
	}
	res := &kafka.MetadataResponse{}
	for _, name := range req.Topics {
		t := kafka.Topic{Name: name}
		if err := f.topicErr[name]; err != nil {
			t.Error = err
		} else if n, ok := f.topics[name]; ok {
			for p := range n {
				t.Partitions = append(t.Partitions, kafka.Partition{Topic: name, ID: p, Replicas: make([]kafka.Broker, max(f.replicas, 1))})
			}
		} else {
			t.Error = kafka.UnknownTopicOrPartition
		}
		res.Topics = append(res.Topics, t)
	}
	return res, nil
}

func (f *fakeAdmin) CreateTopics(_ context.Context, req *kafka.CreateTopicsRequest) (*kafka.CreateTopicsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.createCall = append(f.createCall, req.Topics...)
	res := &kafka.CreateTopicsResponse{Errors: map[string]error{}}
	for _, t := range req.Topics {
		if len(f.createErr) > 0 {
			err := f.createErr[0]
			f.createErr = f.createErr[1:]
			if err != nil {
				var ke kafka.Error
				if !errors.As(err, &ke) {
					return nil, err // a transport error: no answer at all
				}
				res.Errors[t.Topic] = err
				continue
			}
		}
		f.topics[t.Topic] = t.NumPartitions
	}
	return res, nil
}

func (f *fakeAdmin) ListOffsets(_ context.Context, req *kafka.ListOffsetsRequest) (*kafka.ListOffsetsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listErr != nil {
		return nil, f.listErr
	}
	res := &kafka.ListOffsetsResponse{Topics: map[string][]kafka.PartitionOffsets{}}
	for name := range req.Topics {
		for p := range f.topics[name] {
			last := int64(0)
			if p == 0 {
				last = f.records[name]
			}
			res.Topics[name] = append(res.Topics[name], kafka.PartitionOffsets{Partition: p, FirstOffset: 0, LastOffset: last})
		}
	}
	return res, nil
}

func (f *fakeAdmin) set(topic string, parts int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.topics[topic] = parts
}

var (
	testLane   = topicNeed{feature: featureLane, flag: "--retry-lane=auto", topic: "ev.retry", samePartitions: true}
	testBudget = topicNeed{feature: featureBudget, flag: "--fleet-budget=auto", topic: "ev.budget", configs: budgetTopicConfigs}
)

// TestCheckTopic covers every answer checkTopic tells apart: usable, unusable (definite: auto
// falls back, required fails) and indefinite (retried).
func TestCheckTopic(t *testing.T) {
	errNet := errors.New("dial tcp: connection refused")
	for _, tc := range []struct {
		name    string
		need    topicNeed
		admin   *fakeAdmin
		create  bool
		reason  string // unusable with this reason
		errIs   error  // error wrapping this
		created int    // partitions of the created topic (0: no create call)
		inText  string // in the unusable's or error's text
	}{
		{name: "lane exists with the partitions", need: testLane, admin: &fakeAdmin{topics: map[string]int{"ev": 6, "ev.retry": 6}}, create: true},
		{name: "lane exists with more partitions", need: testLane, admin: &fakeAdmin{topics: map[string]int{"ev": 6, "ev.retry": 8}}, create: true},
		{name: "budget exists, one partition", need: testBudget, admin: &fakeAdmin{topics: map[string]int{"ev": 6, "ev.budget": 1}}, create: true},
		{name: "lane missing, created like the event topic", need: testLane, admin: &fakeAdmin{topics: map[string]int{"ev": 6}, replicas: 3}, create: true, created: 6},
		{name: "budget missing, created with one partition", need: testBudget, admin: &fakeAdmin{topics: map[string]int{"ev": 6}, replicas: 3}, create: true, created: 1},
		{name: "create refused: no ACL", need: testLane, admin: &fakeAdmin{topics: map[string]int{"ev": 6}, createErr: []error{kafka.TopicAuthorizationFailed}},
			create: true, created: 6, reason: reasonCreateRefused, inText: "kafka-topics.sh --create --topic ev.retry --partitions 6"},
		{name: "create refused: cluster ACL", need: testBudget, admin: &fakeAdmin{topics: map[string]int{"ev": 6}, createErr: []error{kafka.ClusterAuthorizationFailed}},
			create: true, created: 1, reason: reasonCreateRefused, inText: "--partitions 1"},
		{name: "create refused: policy", need: testLane, admin: &fakeAdmin{topics: map[string]int{"ev": 6}, createErr: []error{kafka.PolicyViolation}},
			create: true, created: 6, reason: reasonCreateRefused, inText: "Policy"},
		{name: "missing, not creating (watch)", need: testLane, admin: &fakeAdmin{topics: map[string]int{"ev": 6}}, reason: reasonCreateRefused, inText: "missing"},
		{name: "create: no controller yet", need: testLane, admin: &fakeAdmin{topics: map[string]int{"ev": 6}, createErr: []error{kafka.NotController}},
			create: true, created: 6, errIs: kafka.NotController},
		{name: "create: no answer", need: testLane, admin: &fakeAdmin{topics: map[string]int{"ev": 6}, createErr: []error{errNet}},
			create: true, created: 6, errIs: errNet},
		{name: "create: another replica was first", need: testLane, admin: &fakeAdmin{topics: map[string]int{"ev": 6}, createErr: []error{kafka.TopicAlreadyExists}},
			create: true, created: 6, errIs: kafka.TopicAlreadyExists},
		{name: "metadata: no answer", need: testLane, admin: &fakeAdmin{topics: map[string]int{"ev": 6}, mdErr: []error{errNet}}, create: true, errIs: errNet},
		{name: "event topic missing", need: testLane, admin: &fakeAdmin{topics: map[string]int{}}, create: true, errIs: kafka.UnknownTopicOrPartition, inText: "event topic ev"},
		{name: "lane not describable", need: testLane, admin: &fakeAdmin{topics: map[string]int{"ev": 6}, topicErr: map[string]error{"ev.retry": kafka.TopicAuthorizationFailed}},
			create: true, reason: reasonNoAccess, inText: "Describe"},
		{name: "lane: leader not available", need: testLane, admin: &fakeAdmin{topics: map[string]int{"ev": 6}, topicErr: map[string]error{"ev.retry": kafka.LeaderNotAvailable}},
			create: true, errIs: kafka.LeaderNotAvailable},
		{name: "lane too small and empty", need: testLane, admin: &fakeAdmin{topics: map[string]int{"ev": 6, "ev.retry": 3}}, create: true,
			reason: reasonPartitions, inText: "--alter --topic ev.retry --partitions 6"},
		{name: "lane too small and holding records", need: testLane, admin: &fakeAdmin{topics: map[string]int{"ev": 6, "ev.retry": 3}, records: map[string]int64{"ev.retry": 5}},
			create: true, errIs: errLaneInUse, inText: "partition 0 holds offsets 0..5"},
		{name: "lane too small, offsets unreadable", need: testLane, admin: &fakeAdmin{topics: map[string]int{"ev": 6, "ev.retry": 3}, listErr: errNet}, create: true, errIs: errNet},
	} {
		t.Run(tc.name, func(t *testing.T) {
			adm := tc.admin
			if adm.topics == nil {
				adm.topics = map[string]int{}
			}
			u, err := checkTopic(t.Context(), adm, "ev", tc.need, tc.create)
			switch {
			case tc.errIs != nil:
				if !errors.Is(err, tc.errIs) || u != nil {
					t.Fatalf("got (%v, %v), want an error wrapping %v", u, err, tc.errIs)
				}
				if tc.inText != "" && !strings.Contains(err.Error(), tc.inText) {
					t.Errorf("error %q does not say %q", err, tc.inText)
				}
			case tc.reason != "":
				if err != nil || u == nil || u.reason != tc.reason {
					t.Fatalf("got (%v, %v), want unusable %s", u, err, tc.reason)
				}
				if !strings.Contains(u.Error(), tc.need.topic) || !strings.Contains(u.Error(), tc.inText) {
					t.Errorf("%q does not name the topic and %q", u, tc.inText)
				}
			default:
				if err != nil || u != nil {
					t.Fatalf("got (%v, %v), want usable", u, err)
				}
			}
			if tc.created == 0 {
				if len(adm.createCall) != 0 {
					t.Fatalf("created %v, want no create", adm.createCall)
				}
				return
			}
			if len(adm.createCall) != 1 {
				t.Fatalf("create calls %v, want one", adm.createCall)
			}
			c := adm.createCall[0]
			if c.Topic != tc.need.topic || c.NumPartitions != tc.created || c.ReplicationFactor != max(adm.replicas, 1) {
				t.Errorf("created %s with %d partitions ×%d, want %s with %d ×%d", c.Topic, c.NumPartitions, c.ReplicationFactor,
					tc.need.topic, tc.created, max(adm.replicas, 1))
			}
			if tc.need.feature == featureBudget && len(c.ConfigEntries) == 0 {
				t.Error("budget topic created without its retention")
			}
		})
	}
}

func testResolver(t *testing.T, adm topicAdmin) (*modeResolver, *bytes.Buffer, *metrics.Metrics, *prometheus.Registry) {
	t.Helper()
	logs := &bytes.Buffer{}
	log, err := logging.New("info", "json", &syncWriter{w: logs})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, "test", false)
	return &modeResolver{adm: adm, eventTopic: "ev", log: log, metrics: m, minBackoff: time.Millisecond, maxBackoff: 4 * time.Millisecond}, logs, m, reg
}

// TestResolveAuto: auto takes the full mode when the topic is usable or made so, falls back on a
// definite refusal (one error log naming the topic and the fix, chatgroupd_mode_fallback), and
// retries what is not definite instead of falling back on it.
func TestResolveAuto(t *testing.T) {
	t.Run("refused: old mode, logged, exported", func(t *testing.T) {
		adm := &fakeAdmin{topics: map[string]int{"ev": 6}, createErr: []error{kafka.TopicAuthorizationFailed}}
		r, logs, m, _ := testResolver(t, adm)
		mode, u, err := r.resolve(t.Context(), testLane, modeAuto, laneOn, laneOff)
		if err != nil || mode != laneOff || u == nil {
			t.Fatalf("got %q %v %v, want off with the reason", mode, u, err)
		}
		if got := testutil.ToFloat64(m.ModeFallback.WithLabelValues(featureLane, reasonCreateRefused)); got != 1 {
			t.Errorf("mode_fallback = %v, want 1", got)
		}
		if n := strings.Count(logs.String(), `"level":"error"`); n != 1 || !strings.Contains(logs.String(), "kafka-topics.sh --create --topic ev.retry --partitions 6") {
			t.Errorf("want one error log with the command to run, got %d:\n%s", n, logs)
		}
	})
	t.Run("indefinite, then created: full mode", func(t *testing.T) {
		adm := &fakeAdmin{topics: map[string]int{"ev": 6}, mdErr: []error{errors.New("eof"), nil}, createErr: []error{kafka.NotController, nil}}
		r, _, m, reg := testResolver(t, adm)
		var retries []error
		r.onRetry = func(err error) { retries = append(retries, err) }
		mode, u, err := r.resolve(t.Context(), testBudget, modeAuto, fleetKafka, fleetStatic)
		if err != nil || mode != fleetKafka || u != nil {
			t.Fatalf("got %q %v %v, want kafka", mode, u, err)
		}
		if len(retries) != 2 {
			t.Errorf("retries %v, want the metadata error and the missing controller", retries)
		}
		if n, _ := testutil.GatherAndCount(reg, "chatgroupd_mode_fallback"); n != 0 {
			t.Errorf("mode_fallback has %d series, want none", n)
		}
		_ = m
	})
	t.Run("required and refused: fails to start", func(t *testing.T) {
		adm := &fakeAdmin{topics: map[string]int{"ev": 6}, createErr: []error{kafka.TopicAuthorizationFailed}}
		r, _, _, _ := testResolver(t, adm)
		need := testLane
		need.flag = "--retry-lane=on"
		_, _, err := r.resolve(t.Context(), need, laneOn, laneOn, laneOff)
		var u *unusable
		if !errors.As(err, &u) || !strings.Contains(err.Error(), "--retry-lane=on") || !strings.Contains(err.Error(), "kafka-topics.sh") {
			t.Fatalf("err %v, want the unusable topic and the fix", err)
		}
	})
	t.Run("lane holding records: fails to start even in auto", func(t *testing.T) {
		adm := &fakeAdmin{topics: map[string]int{"ev": 6, "ev.retry": 2}, records: map[string]int64{"ev.retry": 1}}
		r, _, _, _ := testResolver(t, adm)
		if _, _, err := r.resolve(t.Context(), testLane, modeAuto, laneOn, laneOff); !errors.Is(err, errLaneInUse) {
			t.Fatalf("err %v, want errLaneInUse", err)
		}
	})
	t.Run("never definite: ends with ctx", func(t *testing.T) {
		adm := &fakeAdmin{topics: map[string]int{}} // the event topic never shows up
		r, _, _, _ := testResolver(t, adm)
		ctx := testwait.Context(t, 50*time.Millisecond)
		if _, _, err := r.resolve(ctx, testLane, modeAuto, laneOn, laneOff); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err %v, want the context's", err)
		}
	})
}

// TestModeWatch: a replica that fell back stops with errModeChange once its topic is usable,
// never creating it itself; until then, and on indefinite answers, it keeps running.
func TestModeWatch(t *testing.T) {
	adm := &fakeAdmin{topics: map[string]int{"ev": 6, "ev.retry": 3}, mdErr: []error{errors.New("eof")}}
	r, _, _, _ := testResolver(t, adm)
	u := &unusable{need: testLane, reason: reasonPartitions}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.watch(ctx, []*unusable{u}, 5*time.Millisecond) }()
	select {
	case err := <-done:
		t.Fatalf("watch ended (%v) while the lane is still too small", err)
	case <-time.After(100 * time.Millisecond):
	}
	adm.set("ev.retry", 6)
	select {
	case err := <-done:
		if !errors.Is(err, errModeChange) || !strings.Contains(err.Error(), "ev.retry") {
			t.Fatalf("err %v, want errModeChange naming the topic", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch did not notice the usable topic")
	}
	if len(adm.createCall) != 0 {
		t.Errorf("watch created %v", adm.createCall)
	}
	if err := r.watch(ctx, nil, time.Millisecond); err != nil {
		t.Errorf("watch of nothing: %v", err)
	}
	cancel()
	if err := r.watch(ctx, []*unusable{{need: testBudget}}, time.Millisecond); err != nil {
		t.Errorf("watch after ctx ended: %v", err)
	}
}

func TestWatchIntervalBelowStallLimit(t *testing.T) {
	for _, stall := range []time.Duration{time.Second, 2 * time.Minute, 24 * time.Hour} {
		if got := watchInterval(stall); got >= stall || got > 30*time.Second {
			t.Errorf("watchInterval(%v) = %v, want below the stall limit and at most 30s", stall, got)
		}
	}
}

// TestCheckTopicCreatesOnKafka: against the embedded broker, auto creates the lane with the
// event topic's partitions and the budget topic with one, and then finds both usable.
func TestCheckTopicCreatesOnKafka(t *testing.T) {
	kc := kafkatest.New(t)
	kc.CreateTopic(t, "ev", 4)
	adm := &kafka.Client{Addr: kafka.TCP(kc.Brokers...), Timeout: 10 * time.Second}
	ctx := testwait.Context(t, 30*time.Second)
	for _, need := range []topicNeed{testLane, testBudget} {
		if u, err := checkTopic(ctx, adm, "ev", need, true); u != nil || err != nil {
			t.Fatalf("%s: create: %v %v", need.topic, u, err)
		}
		u, err := checkTopic(ctx, adm, "ev", need, false)
		if u != nil || err != nil {
			t.Fatalf("%s: after create: %v %v", need.topic, u, err)
		}
	}
	md, err := adm.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{"ev.retry", "ev.budget"}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, tp := range md.Topics {
		got[tp.Name] = len(tp.Partitions)
	}
	if got["ev.retry"] != 4 || got["ev.budget"] != 1 {
		t.Fatalf("partitions %v, want ev.retry 4 and ev.budget 1", got)
	}
}

// TestServiceAutoModes: with both flags at auto on a broker that lets it create topics, the
// service runs the lane and the fleet budget, and says so in its metrics.
func TestServiceAutoModes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole pipeline")
	}
	h := startServiceWith(t, "k", "k", imsim.Faults{}, func(f *serviceFlags) { f.retryLane, f.fleetBudget = modeAuto, modeAuto })
	testwait.For(t, 60*time.Second, "/readyz 200", func() bool { code, _ := h.get("/readyz"); return code == 200 })
	s := h.scrape()
	if s.Sum("chatgroupd_retry_lane_mode", "mode", laneOn) != 1 || s.Sum("chatgroupd_fleet_budget_mode", "mode", fleetKafka) != 1 {
		t.Errorf("modes %v %v, want lane on, budget kafka", s.Find("chatgroupd_retry_lane_mode"), s.Find("chatgroupd_fleet_budget_mode"))
	}
	if s.Sum("chatgroupd_mode_fallback") != 0 {
		t.Errorf("mode_fallback %v, want none", s.Find("chatgroupd_mode_fallback"))
	}
}

// TestServiceAutoFallbackThenRestart: a lane topic with too few partitions (and nothing in it)
// makes auto run without the lane, exported as a fallback; once partitions are added the
// replica stops by itself with errModeChange, so its restart runs the lane.
func TestServiceAutoFallbackThenRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole pipeline")
	}
	kc := kafkatest.New(t)
	lane := kafkatest.UniqueName("lane")
	kc.CreateTopic(t, lane, 1)
	h := startServiceIn(t, kc, "k", "k", imsim.Faults{}, func(f *serviceFlags) {
		f.retryLane, f.fleetBudget, f.laneTopic, f.accountStallLimit = modeAuto, fleetStatic, lane, 2*time.Second
	})
	testwait.For(t, 60*time.Second, "/readyz 200", func() bool { code, _ := h.get("/readyz"); return code == 200 })
	s := h.scrape()
	if s.Sum("chatgroupd_retry_lane_mode", "mode", laneOff) != 1 || s.Sum("chatgroupd_mode_fallback", "feature", featureLane, "reason", reasonPartitions) != 1 {
		t.Fatalf("lane mode %v fallback %v, want off with reason partitions", s.Find("chatgroupd_retry_lane_mode"), s.Find("chatgroupd_mode_fallback"))
	}
	ctx := testwait.Context(t, 10*time.Second)
	cl := &kafka.Client{Addr: kafka.TCP(kc.Brokers...), Timeout: 10 * time.Second}
	res, err := cl.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{Topics: []kafka.TopicPartitionsConfig{{Name: lane, Count: 3}}})
	if err != nil || res.Errors[lane] != nil {
		t.Fatalf("add partitions: %v %v", err, res)
	}
	select {
	case err := <-h.done:
		h.done <- err // for the harness's cleanup
		if !errors.Is(err, errModeChange) {
			t.Fatalf("service ended with %v, want errModeChange", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("service did not stop after the lane became usable")
	}
}

// TestServiceAutoRequiredFailsToStart: --retry-lane=on with a lane topic it can't use ends Run
// with the reason, before consuming anything.
func TestServiceAutoRequiredFailsToStart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole pipeline")
	}
	kc := kafkatest.New(t)
	lane := kafkatest.UniqueName("lane")
	kc.CreateTopic(t, lane, 1)
	h := startServiceIn(t, kc, "k", "k", imsim.Faults{}, func(f *serviceFlags) {
		f.retryLane, f.laneTopic = laneOn, lane
	})
	select {
	case err := <-h.done:
		h.done <- err
		var u *unusable
		if !errors.As(err, &u) || u.reason != reasonPartitions || !strings.Contains(err.Error(), "--retry-lane=on") {
			t.Fatalf("service ended with %v, want the lane topic's partitions named", err)
		}
	case <-time.After(30 * time.Second):
		_, body := h.get("/readyz")
		t.Fatalf("service with an unusable required lane kept running; /readyz: %s", body)
	}
}

// TestServiceAutoMetricsPortInUse: a service whose metrics port is taken fails with that, not
// with the mode choice the failure cut short.
func TestServiceAutoMetricsPortInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	conn, err := kafkaconn.New(kafkaconn.Config{Brokers: []string{"127.0.0.1:1"}, DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	f := serviceFlags{topic: "events", group: "g", imEndpoint: "http://127.0.0.1:1", imTimeout: im.DefaultTimeout,
		sdkAppID: testAppID, admin: im.DefaultAdmin, rateLimit: 200, retryLane: modeAuto, fleetBudget: modeAuto,
		metricsAddr: taken.Addr().String(), shutdownTimeout: time.Second, maxInFlight: 8, dedupeWindow: 100, leaveOnShutdown: true}
	reg := prometheus.NewRegistry()
	svc, err := newService(serviceConfig{flags: f, conn: conn, secretKey: "k", log: zap.NewNop(),
		metrics: metrics.New(reg, "test", false), gatherer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testwait.Context(t, 30*time.Second)
	err = svc.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("Run: %v, want the listen error", err)
	}
}
