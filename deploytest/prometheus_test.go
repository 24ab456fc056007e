package deploytest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// TestRealPrometheus runs Debian's Prometheus (2.42, the server beside promtool) on loopback
// scraping a metrics.Server, loads files/alerts.yaml into it, and runs every dashboard query
// against it: each must evaluate without error and return data, so a label typo (outcome="aplied")
// or a function the deployed Prometheus lacks fails here. Every rule must evaluate healthy.
func TestRealPrometheus(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CHATGROUPD_REQUIRE_PROMTOOL") != "" {
			t.Fatal("prometheus not found (apt-get install prometheus)")
		}
		t.Skip("prometheus server not installed (apt-get install prometheus)")
	}
	c, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// The service side: every series the dashboard reads exists and moves.
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, "test", true)
	feed := func() {
		m.EventsConsumed.Add(10)
		for _, o := range metrics.Outcomes() {
			for _, typ := range metrics.EventTypes() {
				m.EventsProcessed.WithLabelValues(o, typ).Inc()
			}
		}
		m.APIRequests.WithLabelValues(im.APICreate, "0").Add(5)
		m.APIRequests.WithLabelValues(im.APICreate, "60007").Inc()
		m.APIDuration.WithLabelValues(im.APICreate).Observe(0.04)
		m.DLQRecords.WithLabelValues("invalid", "0", metrics.EventTypeUnknown).Inc()
		m.ConsumerLag.WithLabelValues("chat.contact-groups", "0").Set(12)
		m.OldestUnfinished.WithLabelValues("chat.contact-groups", "0").Set(0.5)
		m.LaneParked.WithLabelValues("chat.contact-groups", "0").Set(1)
		m.LaneDepth.WithLabelValues("chat.contact-groups", "0").Set(4)
		m.LaneOldest.WithLabelValues("chat.contact-groups", "0").Set(90)
		m.RateLimitWait.Observe(0.002)
		m.RateLimitLimit.Set(100)
		m.Retries.WithLabelValues(im.APICreate, "60007").Inc()
		m.EventE2E.WithLabelValues("contact_group.created").Observe(0.3)
		m.SeqGaps.Inc()
		m.LateEvents.Inc()
		m.InFlight.Set(3)
		m.Ready.Set(1)
		m.Paused.WithLabelValues("config").Set(0)
		m.Rebalances.Inc()
		m.AssignedParts.Set(2)
		m.Commits.WithLabelValues("ok").Inc()
		m.DedupeEntries.Set(42)
		m.LimiterChanges.WithLabelValues("down").Inc()
		m.RateLimitHeld.WithLabelValues(im.APICreate, "late_arrival").Add(0.002)
		m.UncertainChecks.WithLabelValues("true").Inc()
	}
	feed()
	target := listen(t)
	srvCtx, stopSrv := context.WithCancel(c)
	srvDone := make(chan error, 1)
	go func() { srvDone <- metrics.NewServer(target.Addr().String(), reg, nil, nil).Serve(srvCtx, target) }()
	defer func() {
		stopSrv()
		if err := <-srvDone; err != nil {
			t.Errorf("metrics server: %v", err)
		}
	}()

	// The Prometheus side.
	dir := t.TempDir()
	rules, err := filepath.Abs(repo(t).Path("files", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: chatgroupd
    static_configs:
      - targets: [%q]
        labels: {namespace: chat, pod: chatgroupd-0}
`, rules, target.Addr().String())
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	webLn := listen(t)
	web := webLn.Addr().String()
	webLn.Close() // Prometheus binds it itself; a race with another process is unlikely on loopback
	promCtx, stopProm := context.WithCancel(c)
	cmd := exec.CommandContext(promCtx, bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+web,
		"--log.level=warn")
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stopProm()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", b)
		}
	}()
	api := "http://" + web

	// Ready, scraping, and enough samples for rate() over 1m windows.
	waitFor(t, c, "prometheus ready", func() (bool, error) {
		resp, err := http.Get(api + "/-/ready")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == 200, nil
	})
	waitFor(t, c, "3 scrapes with moving counters", func() (bool, error) {
		feed()
		res, err := query(c, api, `count_over_time(up{job="chatgroupd"}[1m]) >= 3 and on() up{job="chatgroupd"} == 1`)
		return len(res) == 1, err
	})

	for _, e := range dashboardExprs(t) {
		q := strings.NewReplacer(`namespace="x"`, `namespace="chat"`, `pod=~"x"`, `pod=~"chatgroupd-0"`,
			"[5m]", "[1m]").Replace(e.Query)
		res, err := query(c, api, q)
		if err != nil {
			t.Errorf("%s: %v\n  %s", e.Where, err, q)
			continue
		}
		if len(res) == 0 {
			t.Errorf("%s returns no data from a scrape where every metric is set\n  %s", e.Where, q)
		}
	}

	// Every alert rule loaded and evaluated without error.
	waitFor(t, c, "rules evaluated", func() (bool, error) {
		groups, err := ruleGroups(c, api)
		if err != nil {
			return false, err
		}
		n := 0
		for _, g := range groups {
			for _, r := range g.Rules {
				if r.LastEvaluation.IsZero() || r.LastEvaluation.Year() < 2000 {
					return false, nil
				}
				if r.Health != "ok" {
					return false, fmt.Errorf("rule %s: health %s: %s", r.Name, r.Health, r.LastError)
				}
				n++
			}
		}
		if want := len(alertRules(t).Exprs()); n != want {
			return false, fmt.Errorf("prometheus loaded %d rules, the file has %d", n, want)
		}
		return true, nil
	})
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func waitFor(t *testing.T, c context.Context, what string, cond func() (bool, error)) {
	t.Helper()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		select {
		case <-c.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

// query runs an instant query and returns the result vector (or scalar as one element).
func query(c context.Context, api, q string) ([]json.RawMessage, error) {
	var body struct {
		Status    string `json:"status"`
		Error     string `json:"error"`
		ErrorType string `json:"errorType"`
		Data      struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := getJSON(c, api+"/api/v1/query?query="+url.QueryEscape(q), &body); err != nil {
		return nil, err
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("%s: %s", body.ErrorType, body.Error)
	}
	if body.Data.ResultType == "scalar" {
		return []json.RawMessage{body.Data.Result}, nil
	}
	var res []json.RawMessage
	if err := json.Unmarshal(body.Data.Result, &res); err != nil {
		return nil, err
	}
	return res, nil
}

type promRuleGroup struct {
	Name  string `json:"name"`
	Rules []struct {
		Name           string    `json:"name"`
		Health         string    `json:"health"`
		LastError      string    `json:"lastError"`
		LastEvaluation time.Time `json:"lastEvaluation"`
	} `json:"rules"`
}

func ruleGroups(c context.Context, api string) ([]promRuleGroup, error) {
	var body struct {
		Status string `json:"status"`
		Data   struct {
			Groups []promRuleGroup `json:"groups"`
		} `json:"data"`
	}
	if err := getJSON(c, api+"/api/v1/rules", &body); err != nil {
		return nil, err
	}
	return body.Data.Groups, nil
}

func getJSON(c context.Context, u string, v any) error {
	req, err := http.NewRequestWithContext(c, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w: %.200s", resp.Status, err, b)
	}
	return nil
}
