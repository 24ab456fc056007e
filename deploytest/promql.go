package deploytest

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"

	"github.com/chatgroupd/chatgroupd/metrics"
)

// Expr is one PromQL expression and where it was found, for failure messages.
type Expr struct {
	Where string
	Query string
}

var (
	grafanaTimeMacro = regexp.MustCompile(`\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}`)
	grafanaVar       = regexp.MustCompile(`\$\{[A-Za-z0-9_:]+\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[A-Za-z0-9_]+\]\]`)
	labelValuesQuery = regexp.MustCompile(`^\s*label_values\(\s*(.+?)\s*,\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$`)
)

// ExpandGrafana replaces Grafana's macros and template variables with values the PromQL parser
// accepts: time macros become 5m, every other variable becomes "x" (they only ever appear inside
// label matcher strings in chatgroupd's dashboard).
func ExpandGrafana(q string) string {
	q = grafanaTimeMacro.ReplaceAllString(q, "5m")
	return grafanaVar.ReplaceAllString(q, "x")
}

// MetricNames parses q and returns the metric names its selectors use, sorted and distinct.
// A selector without a fixed name is an error: the name is what this check is about.
func MetricNames(q string) ([]string, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(q)
	if err != nil {
		return nil, fmt.Errorf("promql: %w", err)
	}
	seen := map[string]bool{}
	var selErr error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		if name == "" {
			for _, m := range vs.LabelMatchers {
				if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
		}
		if name == "" {
			selErr = fmt.Errorf("promql: selector %s has no fixed metric name", vs)
			return nil
		}
		seen[name] = true
		return nil
	})
	if selErr != nil {
		return nil, selErr
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

// DashboardExprs returns every query of a Grafana dashboard: the panels' targets (rows'
// nested panels included) and the metric selectors of label_values() template variables,
// all with Grafana variables expanded.
func DashboardExprs(dashboard []byte) ([]Expr, error) {
	type target struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	}
	type panel struct {
		Title   string   `json:"title"`
		Type    string   `json:"type"`
		Targets []target `json:"targets"`
		Panels  []panel  `json:"panels"`
	}
	var d struct {
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(dashboard, &d); err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	var out []Expr
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, t := range p.Targets {
				out = append(out, Expr{Where: fmt.Sprintf("panel %q target %s", p.Title, t.RefID), Query: ExpandGrafana(t.Expr)})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		var s string
		if err := json.Unmarshal(v.Query, &q); err != nil {
			if err := json.Unmarshal(v.Query, &s); err != nil {
				return nil, fmt.Errorf("dashboard: variable %s: query is neither object nor string", v.Name)
			}
			q.Query = s
		}
		m := labelValuesQuery.FindStringSubmatch(q.Query)
		if m == nil {
			return nil, fmt.Errorf("dashboard: variable %s: want label_values(<selector>, <label>), got %q", v.Name, q.Query)
		}
		out = append(out, Expr{Where: "variable " + v.Name, Query: ExpandGrafana(m[1])})
	}
	return out, nil
}

// RuleFile is the classic Prometheus rule file format (also a PrometheusRule's spec).
type RuleFile struct {
	Groups []RuleGroup `json:"groups"`
}

// RuleGroup is one group of rules.
type RuleGroup struct {
	Name     string `json:"name"`
	Interval string `json:"interval,omitempty"`
	Rules    []Rule `json:"rules"`
}

// Rule is an alerting or recording rule.
type Rule struct {
	Alert       string            `json:"alert,omitempty"`
	Record      string            `json:"record,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// ParseRules strictly decodes a rule file.
func ParseRules(b []byte) (RuleFile, error) {
	var f RuleFile
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return f, fmt.Errorf("rules: %w", err)
	}
	return f, nil
}

// Exprs returns every rule's expression.
func (f RuleFile) Exprs() []Expr {
	var out []Expr
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			out = append(out, Expr{Where: fmt.Sprintf("group %s rule %s%s", g.Name, r.Alert, r.Record), Query: r.Expr})
		}
	}
	return out
}

// scrapeMetrics are series Prometheus itself adds to every target.
var scrapeMetrics = []string{"up", "scrape_duration_seconds", "scrape_samples_scraped"}

// RegisteredNames returns every series name a chatgroupd process exposes: what metrics.New
// registers (histograms as _bucket, _sum and _count, which is how PromQL names them), the Go
// and process collectors, and the series the scrape itself adds. Vectors count even before
// their first label set is used.
func RegisteredNames() (map[string]bool, error) {
	reg := prometheus.NewRegistry()
	rec := &recordingRegisterer{Registerer: reg}
	metrics.New(rec, "test", true)

	names := map[string]bool{}
	for _, n := range scrapeMetrics {
		names[n] = true
	}
	addFamily := func(name string, typ dto.MetricType) {
		switch typ {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[name+s] = true
			}
		case dto.MetricType_SUMMARY:
			names[name] = true
			names[name+"_sum"] = true
			names[name+"_count"] = true
		default:
			names[name] = true
		}
	}
	fams, err := reg.Gather()
	if err != nil {
		return nil, fmt.Errorf("gather: %w", err)
	}
	gathered := map[string]bool{}
	for _, f := range fams {
		gathered[f.GetName()] = true
		addFamily(f.GetName(), f.GetType())
	}
	// Vectors without children are not gathered: take their names from their descriptions.
	// (Plain histograms and summaries always are, so only the vector types need telling apart.)
	for _, c := range rec.collectors {
		typ := dto.MetricType_UNTYPED
		switch c.(type) {
		case *prometheus.HistogramVec:
			typ = dto.MetricType_HISTOGRAM
		case *prometheus.SummaryVec:
			typ = dto.MetricType_SUMMARY
		}
		ch := make(chan *prometheus.Desc, 16)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			name, err := descName(d)
			if err != nil {
				return nil, err
			}
			if !gathered[name] {
				addFamily(name, typ)
			}
		}
	}
	return names, nil
}

var fqNamePattern = regexp.MustCompile(`fqName: "([^"]+)"`)

// descName extracts the metric name from a Desc; client_golang has no accessor for it.
func descName(d *prometheus.Desc) (string, error) {
	m := fqNamePattern.FindStringSubmatch(d.String())
	if m == nil {
		return "", fmt.Errorf("no fqName in %s", d)
	}
	return m[1], nil
}

// recordingRegisterer remembers every collector registered through it.
type recordingRegisterer struct {
	prometheus.Registerer
	collectors []prometheus.Collector
}

func (r *recordingRegisterer) Register(c prometheus.Collector) error {
	if err := r.Registerer.Register(c); err != nil {
		return err
	}
	r.collectors = append(r.collectors, c)
	return nil
}

func (r *recordingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// ContractMetrics are the metric families docs/operations.md promises; the dashboard shows each.
var ContractMetrics = []string{
	"chatgroupd_events_consumed_total",
	"chatgroupd_events_processed_total",
	"chatgroupd_api_requests_total",
	"chatgroupd_api_request_duration_seconds",
	"chatgroupd_dlq_records_total",
	"chatgroupd_consumer_lag",
	"chatgroupd_oldest_unfinished_age_seconds",
	"chatgroupd_ratelimit_wait_seconds",
	"chatgroupd_ratelimit_limit",
	"chatgroupd_retries_total",
	"chatgroupd_event_e2e_seconds",
	"chatgroupd_build_info",
}

// FamilyOf strips the histogram/summary suffixes a query adds to a family name.
func FamilyOf(series string) string {
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		if strings.HasSuffix(series, s) {
			return strings.TrimSuffix(series, s)
		}
	}
	return series
}
