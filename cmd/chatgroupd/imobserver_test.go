package main

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// TestAPIObserverCountsEveryRequest: the IM client's requests, the re-sign retry included, reach
// chatgroupd_api_requests_total by api and code and the duration histogram, through the adapter
// the service wires in.
func TestAPIObserverCountsEveryRequest(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if n.Add(1) == 1 {
			_, _ = w.Write([]byte(`{"ActionStatus":"FAIL","ErrorCode":70001,"ErrorInfo":"expired"}`))
			return
		}
		_, _ = w.Write([]byte(`{"ActionStatus":"OK","ErrorCode":0,"CompleteFlag":1}`))
	}))
	defer srv.Close()
	reg := prometheus.NewPedanticRegistry()
	m := metrics.New(reg, "test", false)
	c, err := im.New(im.Config{SDKAppID: 1400000000, SecretKey: "k", BaseURL: srv.URL, Observer: newAPIObserver(m)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetContactGroup(t.Context(), &im.GetRequest{FromAccount: "a"}); err != nil {
		t.Fatal(err)
	}
	for code, want := range map[string]float64{"70001": 1, "0": 1} {
		if v := testutil.ToFloat64(m.APIRequests.WithLabelValues(im.APIGet, code)); v != want {
			t.Errorf("chatgroupd_api_requests_total{api=get_contact_group,code=%s} = %v, want %v", code, v, want)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var count uint64
	for _, mf := range mfs {
		if mf.GetName() == "chatgroupd_api_request_duration_seconds" {
			for _, mt := range mf.GetMetric() {
				count += mt.GetHistogram().GetSampleCount()
			}
		}
	}
	if count != 2 {
		t.Errorf("duration histogram holds %d samples, want 2", count)
	}
}

// TestAPIObserverNilMetrics: without metrics there is no observer (im.Config then observes nothing).
func TestAPIObserverNilMetrics(t *testing.T) {
	if o := newAPIObserver(nil); o != nil {
		t.Fatalf("observer %v, want nil", o)
	}
}
