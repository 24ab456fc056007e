package deploytest

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatgroupd/chatgroupd/metrics"
	"github.com/chatgroupd/chatgroupd/metrics/metricstest"
)

// TestExpositionPassesPromtool serves every metric (one child of each vector) through
// metrics.Server and runs `promtool check metrics` on what /metrics answers: names, help texts
// and types follow Prometheus conventions, and the series the dashboard needs are all there.
func TestExpositionPassesPromtool(t *testing.T) {
	bin := promtool(t)
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, "test", true)
	m.EventsProcessed.WithLabelValues(metrics.OutcomeApplied, "contact_group.created").Inc()
	m.APIRequests.WithLabelValues("create_contact_group", "0").Inc()
	m.APIDuration.WithLabelValues("create_contact_group").Observe(0.05)
	m.DLQRecords.WithLabelValues("invalid", "0", metrics.EventTypeUnknown).Inc()
	m.ConsumerLag.WithLabelValues("chat.contact-groups", "0").Set(3)
	m.OldestUnfinished.WithLabelValues("chat.contact-groups", "0").Set(1.5)
	m.Retries.WithLabelValues("create_contact_group", "50004").Inc()
	m.Paused.WithLabelValues("config").Set(0)
	m.Commits.WithLabelValues("ok").Inc()
	m.LimiterChanges.WithLabelValues("down").Inc()
	m.RateLimitHeld.WithLabelValues("create_contact_group", "fresh_conn").Add(0.02)
	m.UncertainChecks.WithLabelValues("false").Inc()
	m.EventsMisrouted.WithLabelValues("chat.contact-groups")
	m.CommitMetaBytes.WithLabelValues("chat.contact-groups", "0").Set(120)
	m.LaneParked.WithLabelValues("chat.contact-groups", "0").Set(1)
	m.LaneDepth.WithLabelValues("chat.contact-groups", "0").Set(5)
	m.LaneOldest.WithLabelValues("chat.contact-groups", "0").Set(300)
	m.FleetBudgetMode.WithLabelValues("static").Set(1)
	m.RetryLaneMode.WithLabelValues("on").Set(1)
	m.ModeFallback.WithLabelValues("fleet_budget", "create_refused").Set(1)
	m.FleetRecords.WithLabelValues("published").Inc()
	m.EventE2E.WithLabelValues("contact_group.renamed").Observe(0.4)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srvCtx, stop := context.WithCancel(c)
	done := make(chan error, 1)
	go func() { done <- metrics.NewServer(ln.Addr().String(), reg, nil, nil).Serve(srvCtx, ln) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	}()
	url := "http://" + ln.Addr().String() + "/metrics"

	req, _ := http.NewRequestWithContext(c, http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}

	cmd := exec.CommandContext(c, bin, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	samples, err := metricstest.Scrape(c, nil, url)
	if err != nil {
		t.Fatal(err)
	}
	registered, err := RegisteredNames()
	if err != nil {
		t.Fatal(err)
	}
	for n := range registered {
		if strings.HasPrefix(n, "chatgroupd_") && !samples.Has(n) {
			t.Errorf("%s registered but not exposed", n)
		}
	}
}
