package deploytest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
)

func dashboardExprs(t *testing.T) []Expr {
	t.Helper()
	b, err := os.ReadFile(repo(t).Path("dashboards", "chatgroupd.json"))
	if err != nil {
		t.Fatal(err)
	}
	exprs, err := DashboardExprs(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(exprs) < 20 {
		t.Fatalf("only %d dashboard queries found; is the panel structure still read right?", len(exprs))
	}
	return exprs
}

func alertRules(t *testing.T) RuleFile {
	t.Helper()
	b, err := os.ReadFile(repo(t).Path("files", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := ParseRules(b)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestQueriesUseRegisteredMetrics parses every PromQL expression of the dashboard and the alert
// rules and checks each metric name is one chatgroupd registers: a renamed metric breaks this
// test, not the dashboard.
func TestQueriesUseRegisteredMetrics(t *testing.T) {
	registered, err := RegisteredNames()
	if err != nil {
		t.Fatal(err)
	}
	for _, must := range []string{"chatgroupd_events_consumed_total", "chatgroupd_api_request_duration_seconds_bucket",
		"chatgroupd_consumer_lag", "go_goroutines", "process_resident_memory_bytes", "up"} {
		if !registered[must] {
			t.Fatalf("RegisteredNames misses %s; the check below would be meaningless", must)
		}
	}
	for _, h := range []string{"chatgroupd_api_request_duration_seconds", "chatgroupd_ratelimit_wait_seconds"} {
		if registered[h] {
			t.Fatalf("a histogram's bare name (%s) is not a series", h)
		}
	}

	exprs := append(dashboardExprs(t), alertRules(t).Exprs()...)
	for _, e := range exprs {
		names, err := MetricNames(e.Query)
		if err != nil {
			t.Errorf("%s: %v\n  %s", e.Where, err, e.Query)
			continue
		}
		if len(names) == 0 {
			t.Errorf("%s selects no metric: %s", e.Where, e.Query)
		}
		for _, n := range names {
			if !registered[n] {
				t.Errorf("%s uses %s, which chatgroupd does not register\n  %s", e.Where, n, e.Query)
			}
		}
	}
}

// TestDashboardShowsEveryContractMetric keeps the dashboard complete as metrics are added.
func TestDashboardShowsEveryContractMetric(t *testing.T) {
	used := map[string]bool{}
	for _, e := range dashboardExprs(t) {
		names, err := MetricNames(e.Query)
		if err != nil {
			t.Fatalf("%s: %v", e.Where, err)
		}
		for _, n := range names {
			used[FamilyOf(n)] = true
		}
	}
	for _, m := range ContractMetrics {
		if !used[m] {
			t.Errorf("the dashboard never shows %s", m)
		}
	}
	registered, err := RegisteredNames()
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	for n := range registered {
		if f := FamilyOf(n); strings.HasPrefix(f, "chatgroupd_") && !used[f] {
			missing = append(missing, f)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Logf("registered but not on the dashboard (fine, but consider a panel): %v", missing)
	}
}

func TestDashboardStructure(t *testing.T) {
	b, err := os.ReadFile(repo(t).Path("dashboards", "chatgroupd.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID        string `json:"uid"`
		Title      string `json:"title"`
		Templating struct {
			List []struct {
				Name string `json:"name"`
				Type string `json:"type"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID         int    `json:"id"`
			Type       string `json:"type"`
			Title      string `json:"title"`
			Datasource *struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := jsonUnmarshalStrict(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" {
		t.Error("dashboard needs a uid and a title")
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	for name, typ := range map[string]string{"datasource": "datasource", "namespace": "query", "pod": "query"} {
		if vars[name] != typ {
			t.Errorf("template variable %s: type %q, want %q", name, vars[name], typ)
		}
	}
	var rows []string
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			rows = append(rows, p.Title)
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the datasource variable", p.Title)
		}
		for _, tg := range p.Targets {
			if !strings.Contains(tg.Expr, `namespace="$namespace"`) || !strings.Contains(tg.Expr, `pod=~"$pod"`) {
				t.Errorf("panel %q ignores the namespace/pod variables: %s", p.Title, tg.Expr)
			}
		}
	}
	if want := []string{"Flow", "API", "Backlog", "Failures", "Process", "Retry lane", "Event types"}; strings.Join(rows, ",") != strings.Join(want, ",") {
		t.Errorf("rows %v, want %v", rows, want)
	}
}

// runbookAnchor is what every alert's runbook_url must look like.
var runbookAnchor = regexp.MustCompile(`^https://github\.com/chatgroupd/chatgroupd/blob/main/docs/operations\.md#(alert-[a-z0-9-]+)$`)

// TestAlertRules checks what promtool does not: every alert has a severity, a summary and a
// runbook link to its own anchor in docs/operations.md (the alert runbooks), and every issue-6 case is covered.
func TestAlertRules(t *testing.T) {
	f := alertRules(t)
	seen := map[string]bool{}
	anchors := map[string]string{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if seen[r.Alert] {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			seen[r.Alert] = true
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: summary and description are required", r.Alert)
			}
			m := runbookAnchor.FindStringSubmatch(r.Annotations["runbook_url"])
			if m == nil {
				t.Errorf("%s: runbook_url %q is not an alert anchor of docs/operations.md", r.Alert, r.Annotations["runbook_url"])
				continue
			}
			if other, dup := anchors[m[1]]; dup {
				t.Errorf("%s and %s share the runbook anchor %s", r.Alert, other, m[1])
			}
			anchors[m[1]] = r.Alert
		}
	}
	for _, want := range []string{"ChatgroupdLagAgeHigh", "ChatgroupdConsumptionStalled", "ChatgroupdDLQSpike",
		"ChatgroupdAPIErrorRatio", "ChatgroupdNotReady", "ChatgroupdAuthConfigFailure", "ChatgroupdFrequencyLimited",
		"ChatgroupdReplicaDown", "ChatgroupdDown"} {
		if !seen[want] {
			t.Errorf("alert %s missing", want)
		}
	}

	// Every alert has a promtool unit test.
	tb, err := os.ReadFile(repo(t).Path("files", "alerts_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for a := range seen {
		if !strings.Contains(string(tb), "alertname: "+a+"\n") {
			t.Errorf("alerts_test.yaml has no case for %s", a)
		}
	}
}

// TestRunbookAnchorsInReadme checks that docs/operations.md, where the alert runbooks live, has a
// heading or anchor for every runbook_url.
func TestRunbookAnchorsInReadme(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(repo(t).Root, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	have := readmeAnchors(string(readme))
	for _, g := range alertRules(t).Groups {
		for _, r := range g.Rules {
			m := runbookAnchor.FindStringSubmatch(r.Annotations["runbook_url"])
			if m != nil && !have[m[1]] {
				t.Errorf("docs/operations.md has no anchor %q for %s (a heading that slugs to it, or <a id=%q>)", m[1], r.Alert, m[1])
			}
		}
	}
}

var (
	htmlAnchor = regexp.MustCompile(`(?i)<a\s+(?:id|name)="([^"]+)"`)
	heading    = regexp.MustCompile(`(?m)^#{1,6}\s+(.+?)\s*#*\s*$`)
	slugDrop   = regexp.MustCompile(`[^\p{L}\p{N}\- _]`)
)

// readmeAnchors returns the anchors GitHub generates for a markdown file's headings (lower
// case, punctuation dropped, spaces to hyphens, repeats numbered) plus explicit HTML anchors.
func readmeAnchors(md string) map[string]bool {
	out := map[string]bool{}
	for _, m := range htmlAnchor.FindAllStringSubmatch(md, -1) {
		out[m[1]] = true
	}
	count := map[string]int{}
	for _, m := range heading.FindAllStringSubmatch(md, -1) {
		s := strings.ToLower(m[1])
		s = strings.NewReplacer("`", "", "*", "").Replace(s)
		s = slugDrop.ReplaceAllString(s, "")
		s = strings.ReplaceAll(s, " ", "-")
		if n := count[s]; n > 0 {
			out[fmt.Sprintf("%s-%d", s, n)] = true
		} else {
			out[s] = true
		}
		count[s]++
	}
	return out
}

func TestReadmeAnchors(t *testing.T) {
	md := "# Title\n## Alert: lag-age-high\n### `ChatgroupdDown` (alert-down)\n## Dup\n## Dup\n<a id=\"alert-x\"></a>\n"
	got := readmeAnchors(md)
	for _, w := range []string{"title", "alert-lag-age-high", "chatgroupddown-alert-down", "dup", "dup-1", "alert-x"} {
		if !got[w] {
			t.Errorf("anchor %q missing from %v", w, got)
		}
	}
}

func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" || os.Getenv("CHATGROUPD_REQUIRE_PROMTOOL") != "" {
			t.Fatal("promtool not found (apt-get install prometheus)")
		}
		t.Skip("promtool not installed (apt-get install prometheus); scripts/check-deploy.sh requires it")
	}
	return p
}

func runPromtool(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.CommandContext(ctx(t), promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestPromtoolOnShippedAndRenderedRules runs promtool check rules and the unit tests on both the
// file in the chart and the rules extracted from the rendered PrometheusRule.
func TestPromtoolOnShippedAndRenderedRules(t *testing.T) {
	promtool(t)
	r := repo(t)
	t.Run("files/alerts.yaml", func(t *testing.T) {
		runPromtool(t, r.Path("files"), "check", "rules", "alerts.yaml")
		runPromtool(t, r.Path("files"), "test", "rules", "alerts_test.yaml")
	})
	t.Run("rendered PrometheusRule", func(t *testing.T) {
		pr := render(t, "ci/all-values.yaml").only(t, "PrometheusRule").(*monitoringv1.PrometheusRule)
		b, err := yamlMarshal(pr.Spec)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		tests, err := os.ReadFile(r.Path("files", "alerts_test.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		for name, data := range map[string][]byte{"alerts.yaml": b, "alerts_test.yaml": tests} {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		runPromtool(t, dir, "check", "rules", "alerts.yaml")
		runPromtool(t, dir, "test", "rules", "alerts_test.yaml")
	})
}

func TestExpandGrafana(t *testing.T) {
	tests := []struct{ in, want string }{
		{`rate(a{pod=~"$pod"}[$__rate_interval])`, `rate(a{pod=~"x"}[5m])`},
		{`rate(a{ns="${namespace}"}[${__interval}])`, `rate(a{ns="x"}[5m])`},
		{`increase(a[$__range]) and b{x="[[var]]"}`, `increase(a[5m]) and b{x="x"}`},
		{`sum(a)`, `sum(a)`},
	}
	for _, tt := range tests {
		if got := ExpandGrafana(tt.in); got != tt.want {
			t.Errorf("ExpandGrafana(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestMetricNames(t *testing.T) {
	tests := []struct {
		q       string
		want    string
		wantErr bool
	}{
		{`sum(rate(a_total[5m])) / sum(b)`, "a_total,b", false},
		{`histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))`, "h_bucket", false},
		{`{__name__="c"} and on (x) c`, "c", false},
		{`absent(up{job="j"} == 1)`, "up", false},
		{`{__name__=~"chatgroupd_.*"}`, "", true},
		{`sum(rate(a[5m])`, "", true},
	}
	for _, tt := range tests {
		got, err := MetricNames(tt.q)
		if (err != nil) != tt.wantErr {
			t.Errorf("MetricNames(%q) error %v, wantErr %v", tt.q, err, tt.wantErr)
			continue
		}
		if strings.Join(got, ",") != tt.want {
			t.Errorf("MetricNames(%q) = %v, want %s", tt.q, got, tt.want)
		}
	}
}

func TestSplitManifests(t *testing.T) {
	out := "---\n# Source: c/templates/a.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n# Source: c/templates/empty.yaml\n# nothing\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: b\n"
	ms, err := SplitManifests([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Kind != "ConfigMap" || ms[0].Source != "c/templates/a.yaml" || ms[1].Name != "b" {
		t.Fatalf("got %+v", ms)
	}
	if _, err := SplitManifests([]byte("---\nfoo: bar\n")); err == nil {
		t.Error("a document without kind was accepted")
	}
}
