package metrics_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatgroupd/chatgroupd/metrics"
)

// withChildren gives every vector in m one child, so that the registry gathers every family:
// a vector without children exposes nothing, and nothing would be linted. The label count is
// found by asking GetMetricWithLabelValues, which refuses a wrong one.
func withChildren(t *testing.T, m *metrics.Metrics) {
	t.Helper()
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		get := v.Field(i).MethodByName("GetMetricWithLabelValues")
		if !get.IsValid() {
			continue
		}
		made := false
		for n := 0; n <= 6 && !made; n++ {
			args := make([]reflect.Value, n)
			for j := range args {
				args[j] = reflect.ValueOf("x")
			}
			made = get.Call(args)[1].IsNil()
		}
		if !made {
			t.Fatalf("%s: no label count from 0 to 6 fits", v.Type().Field(i).Name)
		}
	}
}

// TestMetricsLint: every family the service registers passes promlint (names, units, help).
func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, "v1.2.3", true)
	withChildren(t, m)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var ours int
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), "chatgroupd_") {
			ours++
		}
	}
	if want := reflect.ValueOf(*m).NumField(); ours < want {
		t.Errorf("gathered %d chatgroupd families, want at least one per Metrics field (%d)", ours, want)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// TestMetricsNamesAndLabels pins the names, help and labels that alerts and dashboards read.
func TestMetricsNamesAndLabels(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, "v1.2.3", false)
	m.EventsConsumed.Add(3)
	m.APIRequests.WithLabelValues("create_contact_group", "0").Inc()
	m.APIRequests.WithLabelValues("create_contact_group", "network").Add(2)
	want := `
# HELP chatgroupd_events_consumed_total Records read from the event topic.
# TYPE chatgroupd_events_consumed_total counter
chatgroupd_events_consumed_total 3
# HELP chatgroupd_api_requests_total IM API calls by api and result code (IM code, http_<status> or network).
# TYPE chatgroupd_api_requests_total counter
chatgroupd_api_requests_total{api="create_contact_group",code="0"} 1
chatgroupd_api_requests_total{api="create_contact_group",code="network"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"chatgroupd_events_consumed_total", "chatgroupd_api_requests_total"); err != nil {
		t.Error(err)
	}
}
