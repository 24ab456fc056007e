package main

import (
	"time"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// apiMetrics is the IM client's Observer: each request it reports becomes one
// chatgroupd_api_requests_total{api,code} and one chatgroupd_api_request_duration_seconds{api}
// observation (docs/operations.md).
type apiMetrics struct{ m *metrics.Metrics }

// newAPIObserver is the Observer that counts the IM client's requests in m; nil when m is nil
// (the client then observes nothing).
func newAPIObserver(m *metrics.Metrics) im.Observer {
	if m == nil {
		return nil
	}
	return apiMetrics{m: m}
}

// RequestDone counts one request.
func (a apiMetrics) RequestDone(api, code string, took time.Duration) {
	a.m.APIRequests.WithLabelValues(api, code).Inc()
	a.m.APIDuration.WithLabelValues(api).Observe(took.Seconds())
}
