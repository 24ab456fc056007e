// Package metricstest reads a running chatgroupd's /metrics for tests: it scrapes the text
// exposition and answers "what is this series now", so a test can watch metrics move.
package metricstest

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Sample is one series value as the text exposition shows it: histograms appear as their
// _bucket (with "le"), _sum and _count series.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Samples is one scrape.
type Samples []Sample

// Scrape GETs url (a /metrics address) with client (http.DefaultClient when nil) and returns
// every sample, sorted by name. It asks for the text format so the parse covers what
// Prometheus and promtool read.
func Scrape(ctx context.Context, client *http.Client, url string) (Samples, error) {
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("scrape: %w", err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("scrape: %s: %s", resp.Status, b)
	}
	return Parse(resp.Body)
}

// Parse reads the Prometheus text exposition format.
func Parse(r io.Reader) (Samples, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("scrape: parse: %w", err)
	}
	var out Samples
	for name, mf := range fams {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			out = append(out, flatten(name, mf.GetType(), m, labels)...)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func flatten(name string, typ dto.MetricType, m *dto.Metric, labels map[string]string) []Sample {
	with := func(k, v string) map[string]string {
		l := make(map[string]string, len(labels)+1)
		for a, b := range labels {
			l[a] = b
		}
		l[k] = v
		return l
	}
	switch typ {
	case dto.MetricType_COUNTER:
		return []Sample{{name, labels, m.GetCounter().GetValue()}}
	case dto.MetricType_GAUGE:
		return []Sample{{name, labels, m.GetGauge().GetValue()}}
	case dto.MetricType_UNTYPED:
		return []Sample{{name, labels, m.GetUntyped().GetValue()}}
	case dto.MetricType_HISTOGRAM:
		h := m.GetHistogram()
		out := []Sample{
			{name + "_sum", labels, h.GetSampleSum()},
			{name + "_count", labels, float64(h.GetSampleCount())},
		}
		inf := false
		for _, b := range h.GetBucket() {
			inf = inf || math.IsInf(b.GetUpperBound(), 1)
			out = append(out, Sample{name + "_bucket", with("le", formatLE(b.GetUpperBound())), float64(b.GetCumulativeCount())})
		}
		if !inf { // the protobuf form leaves +Inf implicit
			out = append(out, Sample{name + "_bucket", with("le", "+Inf"), float64(h.GetSampleCount())})
		}
		return out
	case dto.MetricType_SUMMARY:
		s := m.GetSummary()
		out := []Sample{
			{name + "_sum", labels, s.GetSampleSum()},
			{name + "_count", labels, float64(s.GetSampleCount())},
		}
		for _, q := range s.GetQuantile() {
			out = append(out, Sample{name, with("quantile", strconv.FormatFloat(q.GetQuantile(), 'g', -1, 64)), q.GetValue()})
		}
		return out
	}
	return nil
}

func formatLE(f float64) string {
	if math.IsInf(f, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// Sum adds the values of every sample called name whose labels include all of match
// ("k", "v" pairs). It returns 0 when none match; use Has to tell absent from zero.
func (s Samples) Sum(name string, match ...string) float64 {
	var sum float64
	for _, x := range s.Find(name, match...) {
		sum += x.Value
	}
	return sum
}

// Has reports whether any sample called name matches.
func (s Samples) Has(name string, match ...string) bool { return len(s.Find(name, match...)) > 0 }

// Find returns the samples called name whose labels include all of match ("k", "v" pairs).
func (s Samples) Find(name string, match ...string) Samples {
	if len(match)%2 != 0 {
		panic("metricstest: match needs key/value pairs")
	}
	var out Samples
next:
	for _, x := range s {
		if x.Name != name {
			continue
		}
		for i := 0; i < len(match); i += 2 {
			if x.Labels[match[i]] != match[i+1] {
				continue next
			}
		}
		out = append(out, x)
	}
	return out
}

// Names returns the distinct sample names, sorted.
func (s Samples) Names() []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x.Name] {
			seen[x.Name] = true
			out = append(out, x.Name)
		}
	}
	sort.Strings(out)
	return out
}

// String renders a sample in exposition style, for failure messages.
func (x Sample) String() string {
	keys := make([]string, 0, len(x.Labels))
	for k := range x.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%q", k, x.Labels[k])
	}
	return fmt.Sprintf("%s{%s} %g", x.Name, strings.Join(parts, ","), x.Value)
}

// CollectorSum adds up the series c holds now whose labels include all of match ("k", "v"
// pairs): counter, gauge and untyped values, and a histogram's or summary's sample count. A test
// reads one vector with it without a registry, whatever other labels the series carry.
func CollectorSum(c prometheus.Collector, match ...string) float64 {
	ch := make(chan prometheus.Metric)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	var sum float64
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) != nil || !hasLabels(&d, match) {
			continue
		}
		switch {
		case d.Counter != nil:
			sum += d.GetCounter().GetValue()
		case d.Gauge != nil:
			sum += d.GetGauge().GetValue()
		case d.Untyped != nil:
			sum += d.GetUntyped().GetValue()
		case d.Histogram != nil:
			sum += float64(d.GetHistogram().GetSampleCount())
		case d.Summary != nil:
			sum += float64(d.GetSummary().GetSampleCount())
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, match []string) bool {
	for i := 0; i+1 < len(match); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == match[i] && l.GetValue() == match[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
