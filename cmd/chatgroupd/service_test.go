package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/instancelock"
	"github.com/chatgroupd/chatgroupd/internal/kafkaconn"
	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
	"github.com/chatgroupd/chatgroupd/internal/loadgen"
	"github.com/chatgroupd/chatgroupd/internal/logging"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
	"github.com/chatgroupd/chatgroupd/metrics"
	"github.com/chatgroupd/chatgroupd/metrics/metricstest"
	"github.com/chatgroupd/chatgroupd/ratelimit"
)

const testAppID = 1400000001

// harness is a running service against an embedded Kafka and the IM simulator.
type harness struct {
	t      *testing.T
	kafka  *kafkatest.Cluster
	sim    *imsim.Server
	topic  string
	url    string // http://host:port of the metrics server
	done   chan error
	cancel context.CancelFunc
	reg    *prometheus.Registry
	flags  serviceFlags
	simSrv *httptest.Server
}

func startService(t *testing.T, simKey, svcKey string, faults imsim.Faults) *harness {
	t.Helper()
	return startServiceWith(t, simKey, svcKey, faults, nil)
}

// startServiceWith is startService with flags changed by tweak.
func startServiceWith(t *testing.T, simKey, svcKey string, faults imsim.Faults, tweak func(*serviceFlags)) *harness {
	t.Helper()
	return startServiceIn(t, kafkatest.New(t), simKey, svcKey, faults, tweak)
}

// startServiceIn is startServiceWith on a cluster the test prepared.
func startServiceIn(t *testing.T, kc *kafkatest.Cluster, simKey, svcKey string, faults imsim.Faults, tweak func(*serviceFlags)) *harness {
	t.Helper()
	h := &harness{t: t, kafka: kc, topic: kafkatest.UniqueName("events"), done: make(chan error, 1)}
	h.kafka.CreateTopic(t, h.topic, 3)
	h.kafka.CreateTopic(t, h.topic+".dlq", 3)
	var err error
	h.sim, err = imsim.New(imsim.Config{SDKAppID: testAppID, SecretKey: simKey, Faults: faults, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	h.simSrv = httptest.NewServer(h.sim)
	t.Cleanup(h.simSrv.Close)
	t.Cleanup(h.sim.Close)

	conn, err := kafkaconn.New(kafkaconn.Config{Brokers: h.kafka.Brokers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close) // after the service stops (cleanups run last first)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.url = "http://" + ln.Addr().String()
	h.reg = prometheus.NewRegistry()
	h.flags = serviceFlags{
		topic: h.topic, group: kafkatest.UniqueName("group"), imEndpoint: h.simSrv.URL, imTimeout: im.DefaultTimeout,
		sdkAppID: testAppID, admin: im.DefaultAdmin, rateLimit: 200, reorderWindow: 100 * time.Millisecond,
		retryBudget: time.Hour, lateArrivalMax: ratelimit.DefaultLateArrivalMax, shutdownTimeout: 5 * time.Second,
		commitInterval: 200 * time.Millisecond, maxInFlight: 64, dedupeWindow: 10000, inProcessAPI: true,
		leaveOnShutdown: true, // the flag's default
	}
	if tweak != nil {
		tweak(&h.flags)
	}
	svc, err := newService(serviceConfig{flags: h.flags, conn: conn, secretKey: svcKey, log: zap.NewNop(),
		metrics: metrics.New(h.reg, "test", true), gatherer: h.reg, metricsListener: ln})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(30 * time.Second):
			t.Error("service did not stop")
		}
	})
	return h
}

func (h *harness) scrape() metricstest.Samples {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.t.Context(), 5*time.Second) // polled: cancelled at once, not at Cleanup
	defer cancel()
	s, err := metricstest.Scrape(ctx, http.DefaultClient, h.url+"/metrics")
	if err != nil {
		h.t.Fatalf("scrape: %v", err)
	}
	return s
}

func (h *harness) get(path string) (int, string) {
	h.t.Helper()
	resp, err := http.Get(h.url + path)
	if err != nil {
		// Most often the service itself ended (its HTTP server stops with it): say why.
		select {
		case runErr := <-h.done:
			h.done <- runErr // for the harness's cleanup
			h.t.Fatalf("GET %s: %v; the service had ended: %v", path, err, runErr)
		case <-time.After(time.Second):
		}
		h.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (h *harness) produce(n int, cfg loadgen.Config) loadgen.Expect {
	h.t.Helper()
	gen, err := loadgen.New(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		r := gen.Next()
		msgs[i] = kafka.Message{Key: r.Key, Value: r.Value}
	}
	h.kafka.Produce(h.t, h.topic, msgs...)
	return gen.Expect()
}

// committed sums the group's committed offsets over the topic's partitions.
func (h *harness) committed() int64 {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.t.Context(), 10*time.Second) // polled: cancelled at once, not at Cleanup
	defer cancel()
	c := &kafka.Client{Addr: kafka.TCP(h.kafka.Brokers...)}
	resp, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: h.flags.group, Topics: map[string][]int{h.topic: {0, 1, 2}}})
	if err != nil {
		h.t.Fatalf("offset fetch: %v", err)
	}
	var sum int64
	for _, p := range resp.Topics[h.topic] {
		if p.CommittedOffset > 0 {
			sum += p.CommittedOffset
		}
	}
	return sum
}

// TestServiceMetricsMove scrapes a running service and sees every contract metric move as
// events flow, then shuts it down and finds everything committed.
func TestServiceMetricsMove(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole pipeline")
	}
	h := startService(t, "k", "k", imsim.Faults{Latency: time.Millisecond, ErrorRates: map[int]float64{im.CodeInternal: 0.1}})
	testwait.For(t, 30*time.Second, "/readyz 200", func() bool { code, _ := h.get("/readyz"); return code == 200 })
	if code, _ := h.get("/healthz"); code != 200 {
		t.Fatalf("/healthz %d", code)
	}
	before := h.scrape()
	const n = 300
	want := h.produce(n, loadgen.Config{Accounts: 5, DuplicateRate: 0.05, InvalidRate: 0.05, OverQuotaAccounts: 1, Seed: 11})
	testwait.For(t, 60*time.Second, "every record to end", func() bool {
		return h.scrape().Sum("chatgroupd_events_processed_total") >= n
	})
	testwait.For(t, 10*time.Second, "lag 0 after commit", func() bool {
		s := h.scrape()
		return s.Has("chatgroupd_consumer_lag") && s.Sum("chatgroupd_consumer_lag") == 0
	})
	after := h.scrape()

	moved := func(name string, match ...string) {
		t.Helper()
		if b, a := before.Sum(name, match...), after.Sum(name, match...); a <= b {
			t.Errorf("%s%v did not move: %v → %v", name, match, b, a)
		}
	}
	moved("chatgroupd_events_consumed_total")
	moved("chatgroupd_events_processed_total", "outcome", "applied")
	moved("chatgroupd_events_processed_total", "outcome", "duplicate")
	moved("chatgroupd_events_processed_total", "outcome", "invalid")
	moved("chatgroupd_events_processed_total", "outcome", "rejected")
	moved("chatgroupd_api_requests_total", "api", im.APICreate, "code", "0")
	moved("chatgroupd_api_requests_total", "api", im.APICreate, "code", "50004")
	moved("chatgroupd_api_request_duration_seconds_count", "api", im.APICreate)
	moved("chatgroupd_dlq_records_total", "reason", "invalid", "code", "0")
	moved("chatgroupd_dlq_records_total", "reason", "rejected", "code", "51010")
	moved("chatgroupd_ratelimit_wait_seconds_count")
	moved("chatgroupd_retries_total", "api", im.APICreate, "code", "50004")
	moved("chatgroupd_event_e2e_seconds_count")
	for _, name := range []string{"chatgroupd_consumer_lag", "chatgroupd_oldest_unfinished_age_seconds"} {
		if len(after.Find(name, "topic", h.topic)) != 3 {
			t.Errorf("%s: want one series per partition, got %v", name, after.Find(name))
		}
	}
	if got := after.Sum("chatgroupd_ratelimit_limit"); got <= 0 || got > 200 {
		t.Errorf("ratelimit_limit %v, want this replica's share of 200", got)
	}
	if after.Sum("chatgroupd_build_info") != 1 || after.Sum("chatgroupd_ready") != 1 {
		t.Errorf("build_info %v ready %v", after.Sum("chatgroupd_build_info"), after.Sum("chatgroupd_ready"))
	}
	if got := after.Sum("chatgroupd_events_processed_total", "outcome", "applied"); got != float64(want.Valid) {
		t.Errorf("applied %v, want %d", got, want.Valid)
	}
	// Every applied event of this v1 load is a create, counted under its type; every dead
	// letter carries a type label (the five types or unknown).
	if got := after.Sum("chatgroupd_events_processed_total", "outcome", "applied", "event_type", "contact_group.created"); got != float64(want.Valid) {
		t.Errorf("applied creates %v, want %d", got, want.Valid)
	}
	for _, s := range after.Find("chatgroupd_dlq_records_total") {
		if typ := s.Labels["event_type"]; typ != metrics.EventTypeUnknown && !event.Type(typ).Known() {
			t.Errorf("dlq_records_total series with event_type %q", typ)
		}
	}
	if st := h.sim.Stats(); st.DuplicateCreates != 0 || st.GroupsCreated != want.Valid {
		t.Errorf("simulator: %d groups, %d duplicate creates; want %d and 0", st.GroupsCreated, st.DuplicateCreates, want.Valid)
	}

	// Graceful shutdown: Run returns nil promptly and everything is committed.
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("service did not shut down")
	}
	h.done <- nil // for the cleanup
	if c := h.committed(); c != n {
		t.Fatalf("committed %d offsets after shutdown, want %d", c, n)
	}
}

// TestServiceFleetBudgetKafka: with --fleet-budget=kafka the service takes its create budget
// from the budget topic: every event is applied, the replica publishes and reads its records,
// and the mode is exported.
func TestServiceFleetBudgetKafka(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole pipeline")
	}
	lockDir := t.TempDir()
	h := startServiceWith(t, "k", "k", imsim.Faults{Latency: time.Millisecond}, func(f *serviceFlags) {
		f.fleetBudget, f.instanceID, f.instanceLockDir = fleetKafka, "replica-0", lockDir
	})
	testwait.For(t, 30*time.Second, "/readyz 200", func() bool { code, _ := h.get("/readyz"); return code == 200 })
	if _, _, err := instancelock.Acquire(lockDir, "replica-0", "successor"); !errors.Is(err, instancelock.ErrHeld) {
		t.Errorf("Acquire while the service runs: %v, want ErrHeld", err)
	}
	const n = 200
	want := h.produce(n, loadgen.Config{Accounts: 20, Seed: 5})
	testwait.For(t, 60*time.Second, "every record to end", func() bool {
		return h.scrape().Sum("chatgroupd_events_processed_total") >= n
	})
	s := h.scrape()
	if got := s.Sum("chatgroupd_events_processed_total", "outcome", "applied"); got != float64(want.Valid) {
		t.Errorf("applied %v, want %d", got, want.Valid)
	}
	if s.Sum("chatgroupd_fleet_budget_mode", "mode", fleetKafka) != 1 || s.Sum("chatgroupd_fleet_budget_mode", "mode", fleetStatic) != 0 {
		t.Errorf("fleet_budget_mode %v, want kafka=1 static=0", s.Find("chatgroupd_fleet_budget_mode"))
	}
	for _, op := range []string{"published", "read"} {
		if s.Sum("chatgroupd_fleet_budget_records_total", "op", op) == 0 {
			t.Errorf("fleet_budget_records_total{op=%q} = 0", op)
		}
	}
	if got := s.Sum("chatgroupd_ratelimit_limit"); got <= 0 || got > 200 {
		t.Errorf("ratelimit_limit %v, want the fleet grant (0, 200]", got)
	}
	// Stopped, the service releases its lock and names its budget member to the successor.
	h.cancel()
	err := <-h.done
	h.done <- err // for the harness's cleanup
	l, prev, err := instancelock.Acquire(lockDir, "replica-0", "successor")
	if err != nil || prev == "" {
		t.Fatalf("Acquire after the service stopped = %q, %v; want its member id", prev, err)
	}
	l.Close()
}

// TestServiceWrongKeyNotReady: with a key the API rejects, the service reports not-ready with the
// reason, dead-letters nothing and commits nothing; and the key never shows.
func TestServiceWrongKeyNotReady(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole pipeline")
	}
	const wrongKey = "wrong-key-0123456789abcdef"
	h := startService(t, "right-key", wrongKey, imsim.Faults{})
	h.produce(20, loadgen.Config{Accounts: 4, Seed: 5})
	testwait.For(t, 30*time.Second, "/readyz 503 naming the API", func() bool {
		code, body := h.get("/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "im api")
	})
	_, body := h.get("/readyz")
	if strings.Contains(body, wrongKey) || strings.Contains(strings.ToLower(body), "usersig=") {
		t.Fatalf("/readyz leaks a secret: %q", body)
	}
	testwait.For(t, 10*time.Second, "paused gauge", func() bool {
		return h.scrape().Sum("chatgroupd_paused", "reason", "config") == 1
	})
	time.Sleep(500 * time.Millisecond) // a few commit intervals
	s := h.scrape()
	if s.Sum("chatgroupd_dlq_records_total") != 0 || s.Sum("chatgroupd_events_processed_total", "outcome", "applied") != 0 {
		t.Fatalf("paused service ended events: %v", s.Find("chatgroupd_events_processed_total"))
	}
	if c := h.committed(); c != 0 {
		t.Fatalf("paused service committed %d offsets", c)
	}
	if s.Sum("chatgroupd_ready") != 0 {
		t.Fatal("chatgroupd_ready must be 0 while /readyz is 503")
	}
}

func TestServiceBadConfig(t *testing.T) {
	conn, err := kafkaconn.New(kafkaconn.Config{Brokers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	base := serviceFlags{topic: "t", group: "g", imTimeout: im.DefaultTimeout, sdkAppID: 1, admin: "a", rateLimit: 200, leaveOnShutdown: true}
	for name, mutate := range map[string]func(*serviceFlags){
		"unknown region":              func(f *serviceFlags) { f.imRegion = "atlantis" },
		"short timeout":               func(f *serviceFlags) { f.imTimeout = time.Second },
		"bad endpoint":                func(f *serviceFlags) { f.imEndpoint = "ftp://x" },
		"negative rate":               func(f *serviceFlags) { f.rateLimit = -1 },
		"late arrival max over 500ms": func(f *serviceFlags) { f.lateArrivalMax = time.Second },
		"unknown partitioner":         func(f *serviceFlags) { f.partitioner = "murmur3" },
		"unknown duplicate policy":    func(f *serviceFlags) { f.duplicateNames = "allow" },
		"unknown fleet budget mode":   func(f *serviceFlags) { f.fleetBudget = "redis" },
		"fleet budget below one call": func(f *serviceFlags) { f.fleetBudget = fleetKafka; f.rateLimit = 0.5 },
	} {
		f := base
		mutate(&f)
		_, err := newService(serviceConfig{flags: f, conn: conn, secretKey: "k", log: zap.NewNop(), metrics: metrics.NewNop(), gatherer: prometheus.NewRegistry()})
		if err == nil {
			t.Errorf("%s: newService accepted it", name)
		}
	}
}

// TestServiceDLQDeletedNotReady: with the DLQ topic gone, a dead letter can't be written; the pod
// says so on /readyz and in chatgroupd_ready/chatgroupd_dlq_blocked_partitions, and recovers by
// itself when the topic returns.
func TestServiceDLQDeletedNotReady(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole pipeline")
	}
	h := startService(t, "right-key", "right-key", imsim.Faults{})
	testwait.For(t, 30*time.Second, "/readyz 200", func() bool { code, _ := h.get("/readyz"); return code == http.StatusOK })
	ctx := testwait.Context(t, 10*time.Second)
	cl := &kafka.Client{Addr: kafka.TCP(h.kafka.Brokers...), Timeout: 10 * time.Second}
	if res, err := cl.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{h.topic + ".dlq"}}); err != nil || res.Errors[h.topic+".dlq"] != nil {
		t.Fatalf("delete the DLQ topic: %v %v", err, res)
	}
	h.kafka.Produce(t, h.topic, kafka.Message{Key: []byte("alice"), Value: []byte(`{"event_id":`)})
	testwait.For(t, 60*time.Second, "/readyz 503 naming the DLQ", func() bool {
		code, body := h.get("/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "dead letters can't be written")
	})
	s := h.scrape()
	if s.Sum("chatgroupd_ready") != 0 || s.Sum("chatgroupd_dlq_blocked_partitions") != 1 || s.Sum("chatgroupd_dlq_write_failures_total") == 0 {
		t.Fatalf("ready %v blocked %v failures %v", s.Sum("chatgroupd_ready"), s.Sum("chatgroupd_dlq_blocked_partitions"),
			s.Sum("chatgroupd_dlq_write_failures_total"))
	}
	h.kafka.CreateTopic(t, h.topic+".dlq", 3)
	testwait.For(t, 60*time.Second, "/readyz 200 again", func() bool { code, _ := h.get("/readyz"); return code == http.StatusOK })
	testwait.For(t, 30*time.Second, "the dead letter written", func() bool {
		return h.scrape().Sum("chatgroupd_dlq_records_total", "reason", "invalid") == 1
	})
}

// TestServiceUnreachableBrokerNamed: with no broker answering, /readyz names the broker and its
// error (it said only "not a member of the consumer group"), and the log says it with backoff.
func TestServiceUnreachableBrokerNamed(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	broker := dead.Addr().String()
	dead.Close() // connection refused from now on
	conn, err := kafkaconn.New(kafkaconn.Config{Brokers: []string{broker}, DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sim := httptest.NewServer(http.NotFoundHandler())
	defer sim.Close()
	f := serviceFlags{
		topic: "events", group: "g", imEndpoint: sim.URL, imTimeout: im.DefaultTimeout,
		sdkAppID: testAppID, admin: im.DefaultAdmin, rateLimit: 200, reorderWindow: 100 * time.Millisecond,
		retryBudget: time.Hour, shutdownTimeout: time.Second, commitInterval: 200 * time.Millisecond, maxInFlight: 8, dedupeWindow: 100,
		leaveOnShutdown: true,
	}
	f.kafka.dialTimeout = time.Second
	logs := &syncWriter{w: &bytes.Buffer{}}
	log, err := logging.New("warn", "json", logs)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	svc, err := newService(serviceConfig{flags: f, conn: conn, secretKey: "k", log: log,
		metrics: metrics.New(reg, "test", true), gatherer: reg, metricsListener: ln})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	defer func() { cancel(); <-done }()
	h := &harness{t: t, url: "http://" + ln.Addr().String()}
	var body string
	testwait.For(t, 60*time.Second, "/readyz naming the broker", func() bool {
		resp, err := http.Get(h.url + "/readyz")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(body, broker)
	})
	t.Logf("/readyz: %s", body)
	if !strings.Contains(body, "connection refused") || !strings.Contains(body, "not a member of the consumer group") {
		t.Errorf("/readyz = %q, want the group, the broker and its error", body)
	}
	testwait.For(t, 30*time.Second, "a log line naming the broker", func() bool {
		return strings.Contains(logs.String(), "kafka unreachable") && strings.Contains(logs.String(), broker)
	})
}

// syncWriter serialises writes to a buffer read by the test.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

// TestReadyWhileBuilding: between the modes being chosen and the pipeline being built, /readyz
// answers "not in the group" (it dereferenced the missing pipeline and panicked the handler, which
// the client saw as EOF).
func TestReadyWhileBuilding(t *testing.T) {
	s := &service{}
	if err := s.ready(); !errors.Is(err, errNotInGroup) {
		t.Fatalf("ready() = %v, want errNotInGroup", err)
	}
	s.choosing = errors.New("checking the topics")
	if err := s.ready(); err != s.choosing {
		t.Fatalf("ready() while choosing = %v", err)
	}
}
