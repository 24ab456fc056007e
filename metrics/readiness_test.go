package metrics_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatgroupd/chatgroupd/metrics"
)

func TestReadiness(t *testing.T) {
	m := metrics.NewNop()
	r := metrics.NewReadiness(m.Ready, "group", "credentials")

	steps := []struct {
		cond      string
		err       error
		wantReady bool
		wantText  string
	}{
		{"", nil, false, "credentials: starting\ngroup: starting"},
		{"group", nil, false, "credentials: starting"},
		{"credentials", nil, true, ""},
		{"credentials", errors.New("IM 70001: UserSig expired"), false, "credentials: IM 70001: UserSig expired"},
		{"group", errors.New("rebalancing"), false, "credentials: IM 70001: UserSig expired\ngroup: rebalancing"},
		{"credentials", nil, false, "group: rebalancing"},
		{"group", nil, true, ""},
	}
	for i, s := range steps {
		if s.cond != "" {
			r.Set(s.cond, s.err)
		}
		err := r.Check()
		if (err == nil) != s.wantReady {
			t.Fatalf("step %d: Check() = %v, want ready %v", i, err, s.wantReady)
		}
		if err != nil && err.Error() != s.wantText {
			t.Errorf("step %d: Check() = %q, want %q", i, err, s.wantText)
		}
		want := 0.0
		if s.wantReady {
			want = 1
		}
		if got := testutil.ToFloat64(m.Ready); got != want {
			t.Errorf("step %d: chatgroupd_ready = %g, want %g", i, got, want)
		}
	}
}

func TestReadinessNilGaugeAndNoConditions(t *testing.T) {
	r := metrics.NewReadiness(nil)
	if err := r.Check(); err != nil {
		t.Fatalf("no conditions: %v", err)
	}
	r.Set("x", errors.New("down"))
	if r.Check() == nil {
		t.Fatal("failing condition ignored")
	}
}

func TestReadinessConcurrent(t *testing.T) {
	r := metrics.NewReadiness(metrics.NewNop().Ready, "a")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 200 {
				if (i+j)%2 == 0 {
					r.Set(fmt.Sprint("c", i), nil)
				} else {
					r.Set(fmt.Sprint("c", i), errors.New("x"))
				}
				_ = r.Check()
			}
		}()
	}
	wg.Wait()
}

func ExampleReadiness() {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, "v1", false)
	ready := metrics.NewReadiness(m.Ready, "group", "credentials")
	srv := metrics.NewServer(":9090", reg, ready.Check, nil)

	ready.Set("group", nil) // joined the consumer group
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	fmt.Print(rec.Code, " ", strings.ReplaceAll(rec.Body.String(), "\n", " "))
	// Output: 503 not ready: credentials: starting
}
