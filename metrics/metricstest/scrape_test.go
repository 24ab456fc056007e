package metricstest_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatgroupd/chatgroupd/metrics"
	"github.com/chatgroupd/chatgroupd/metrics/metricstest"
)

func TestScrapeSeesMetricsMove(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, "v9", false)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srvCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- metrics.NewServer(ln.Addr().String(), reg, nil, nil).Serve(srvCtx, ln) }()
	defer func() { stop(); <-done }()
	url := "http://" + ln.Addr().String() + "/metrics"
	client := &http.Client{Timeout: 5 * time.Second}

	before, err := metricstest.Scrape(ctx, client, url)
	if err != nil {
		t.Fatal(err)
	}
	m.EventsProcessed.WithLabelValues(metrics.OutcomeApplied, "contact_group.created").Add(2)
	m.EventsProcessed.WithLabelValues(metrics.OutcomeDuplicate, "contact_group.deleted").Inc()
	m.APIDuration.WithLabelValues("create_contact_group").Observe(0.02)
	m.ConsumerLag.WithLabelValues("t", "3").Set(7)
	after, err := metricstest.Scrape(ctx, client, url)
	if err != nil {
		t.Fatal(err)
	}

	if before.Has("chatgroupd_api_request_duration_seconds_count") {
		t.Error("an untouched vector should not be exposed yet")
	}
	if !before.Has("chatgroupd_events_processed_total", "outcome", "rejected", "event_type", "contact_group.renamed") ||
		before.Sum("chatgroupd_events_processed_total") != 0 {
		t.Error("events_processed_total should be exposed at zero for every outcome and type")
	}
	checks := []struct {
		name  string
		match []string
		want  float64
	}{
		{"chatgroupd_events_processed_total", nil, 3},
		{"chatgroupd_events_processed_total", []string{"outcome", "applied"}, 2},
		{"chatgroupd_api_request_duration_seconds_count", []string{"api", "create_contact_group"}, 1},
		{"chatgroupd_api_request_duration_seconds_bucket", []string{"le", "+Inf"}, 1},
		{"chatgroupd_api_request_duration_seconds_bucket", []string{"le", "0.02"}, 1},
		{"chatgroupd_api_request_duration_seconds_bucket", []string{"le", "0.01"}, 0},
		{"chatgroupd_consumer_lag", []string{"topic", "t", "partition", "3"}, 7},
		{"chatgroupd_build_info", []string{"version", "v9"}, 1},
		{"chatgroupd_ratelimit_wait_seconds_count", nil, 0},
	}
	for _, c := range checks {
		if !after.Has(c.name, c.match...) {
			t.Errorf("%s%v missing; have %v", c.name, c.match, after.Names())
			continue
		}
		if got := after.Sum(c.name, c.match...); got != c.want {
			t.Errorf("%s%v = %g, want %g", c.name, c.match, got, c.want)
		}
	}
}

func TestParse(t *testing.T) {
	in := `# TYPE a_total counter
a_total{x="1"} 2
a_total{x="2"} 3
# TYPE s summary
s{quantile="0.5"} 1.5
s_sum 10
s_count 4
# TYPE u untyped
u{path="a\"b"} 1
`
	got, err := metricstest.Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if v := got.Sum("a_total"); v != 5 {
		t.Errorf("sum a_total = %g", v)
	}
	if v := got.Sum("s", "quantile", "0.5"); v != 1.5 {
		t.Errorf("s{quantile=0.5} = %g", v)
	}
	if v := got.Sum("s_count"); v != 4 {
		t.Errorf("s_count = %g", v)
	}
	if v := got.Find("u", "path", `a"b`); len(v) != 1 || v[0].String() != `u{path="a\"b"} 1` {
		t.Errorf("u = %v", v)
	}
	if _, err := metricstest.Parse(strings.NewReader("bad line here {")); err == nil {
		t.Error("garbage parsed without error")
	}
}

func TestScrapeErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if _, err := metricstest.Scrape(ctx, nil, "http://"+addr+"/metrics"); err == nil {
		t.Error("scrape of a closed port succeeded")
	}
}

func TestCollectorSum(t *testing.T) {
	m := metrics.New(nil, "test", false)
	m.EventsProcessed.WithLabelValues(metrics.OutcomeApplied, "contact_group.created").Add(2)
	m.EventsProcessed.WithLabelValues(metrics.OutcomeApplied, "contact_group.renamed").Add(3)
	m.EventsProcessed.WithLabelValues(metrics.OutcomeInvalid, metrics.EventTypeUnknown).Inc()
	m.EventE2E.WithLabelValues("contact_group.created").Observe(1)
	m.Ready.Set(1)
	for _, tc := range []struct {
		c     prometheus.Collector
		match []string
		want  float64
	}{
		{m.EventsProcessed, nil, 6},
		{m.EventsProcessed, []string{"outcome", "applied"}, 5},
		{m.EventsProcessed, []string{"outcome", "applied", "event_type", "contact_group.renamed"}, 3},
		{m.EventsProcessed, []string{"outcome", "exhausted"}, 0},
		{m.EventE2E, []string{"event_type", "contact_group.created"}, 1},
		{m.Ready, nil, 1},
	} {
		if got := metricstest.CollectorSum(tc.c, tc.match...); got != tc.want {
			t.Errorf("CollectorSum(%v) = %v, want %v", tc.match, got, tc.want)
		}
	}
}
