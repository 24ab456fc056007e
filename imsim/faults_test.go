package imsim

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
)

func TestFaultModes(t *testing.T) {
	tests := []struct {
		name       string
		faults     Faults
		wantStatus int
		wantCode   int
		wantGroup  bool
	}{
		{"none", Faults{}, 200, 0, true},
		{"http 502", Faults{HTTP502Rate: 1}, 502, 0, false},
		{"error code", Faults{ErrorRates: map[int]float64{im.CodeInternal: 1}}, 200, im.CodeInternal, false},
		{"injected 60007", Faults{ErrorRates: map[int]float64{im.CodeFrequency: 1}}, 200, im.CodeFrequency, false},
		{"hang until max", Faults{HangRate: 1}, 200, im.CodeTimeout, false},
		{"apply then fail", Faults{ApplyThenFailRate: 1}, 200, im.CodeTimeout, true},
		{"apply then hang", Faults{ApplyThenHangRate: 1}, 200, im.CodeTimeout, true},
		{"other api only", Faults{HTTP502Rate: 1, APIs: []string{im.APIGet}}, 200, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{Faults: tt.faults, MaxHang: 50 * time.Millisecond})
			r := h.call(im.PathCreateContactGroup, createReq("a", "g", c2c(1)))
			if r.status != tt.wantStatus || r.ErrorCode != tt.wantCode {
				t.Fatalf("status %d code %d, want %d %d", r.status, r.ErrorCode, tt.wantStatus, tt.wantCode)
			}
			if got := len(h.sim.Groups("a")) == 1; got != tt.wantGroup {
				t.Fatalf("group applied = %v, want %v", got, tt.wantGroup)
			}
		})
	}
}

func TestApplyThenFailOnlyMutates(t *testing.T) {
	// get cannot be "applied then failed": the draw lands on no fault.
	h := newHarness(t, Config{Faults: Faults{ApplyThenFailRate: 1}})
	if r := h.call(im.PathGetContactGroup, im.GetRequest{FromAccount: "a"}); r.ErrorCode != 0 {
		t.Fatalf("get: %d", r.ErrorCode)
	}
}

func TestHangReleasedByClientAndClose(t *testing.T) {
	h := newHarness(t, Config{Faults: Faults{HangRate: 1}, MaxHang: time.Minute})
	call := func(ctx context.Context) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.srv.URL+im.PathGetContactGroup+"?"+h.query().Encode(),
			strings.NewReader(`{"From_Account":"a"}`))
		return h.srv.Client().Do(req)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := call(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hung call: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
	testwait.For(t, 5*time.Second, "the hung get counted", func() bool { return h.sim.Stats().APIs[im.APIGet].Codes[-1] == 1 })

	// Close releases a hung request with 50005.
	done := make(chan int, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := call(ctx)
		if err != nil {
			done <- -1
			return
		}
		defer resp.Body.Close()
		var b im.BaseResponse
		json.NewDecoder(resp.Body).Decode(&b)
		done <- b.ErrorCode
	}()
	testwait.For(t, 5*time.Second, "two gets accepted", func() bool { return h.sim.Stats().APIs[im.APIGet].Accepted == 2 })
	h.sim.Close()
	select {
	case c := <-done:
		if c != im.CodeTimeout {
			t.Fatalf("released with %d", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not release the hang")
	}
}

func TestLatency(t *testing.T) {
	h := newHarness(t, Config{Faults: Faults{Latency: 60 * time.Millisecond, Jitter: 20 * time.Millisecond}})
	start := time.Now()
	h.call(im.PathGetContactGroup, im.GetRequest{FromAccount: "a"})
	if d := time.Since(start); d < 60*time.Millisecond {
		t.Fatalf("call took %v, want >= 60ms", d)
	}
}

func TestLogNormalDelay(t *testing.T) {
	f := Faults{LogNormalMean: 20 * time.Millisecond, LogNormalP99: 100 * time.Millisecond}
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 50000
	ds := make([]time.Duration, n)
	var sum float64
	for i := range ds {
		ds[i] = f.delay(rng)
		sum += float64(ds[i])
	}
	slices.Sort(ds)
	mean := time.Duration(sum / n)
	p99 := ds[n*99/100]
	if math.Abs(float64(mean-f.LogNormalMean)) > 0.05*float64(f.LogNormalMean) {
		t.Errorf("mean %v, want ~%v", mean, f.LogNormalMean)
	}
	if math.Abs(float64(p99-f.LogNormalP99)) > 0.1*float64(f.LogNormalP99) {
		t.Errorf("p99 %v, want ~%v", p99, f.LogNormalP99)
	}
}

func TestFaultDrawsSeededAndProportional(t *testing.T) {
	f := Faults{ErrorRates: map[int]float64{im.CodeInternal: 0.2, im.CodeFrequency: 0.1}, HTTP502Rate: 0.1}
	seq := func(seed uint64) []int {
		rng := rand.New(rand.NewPCG(seed, 7))
		var out []int
		for range 5000 {
			k, code := f.pick(rng, im.APICreate)
			if k == fault502 {
				code = 502
			}
			out = append(out, code)
		}
		return out
	}
	a, b := seq(9), seq(9)
	if !slices.Equal(a, b) {
		t.Fatal("same seed, different draws")
	}
	if slices.Equal(a, seq(10)) {
		t.Fatal("different seeds, same draws")
	}
	count := map[int]int{}
	for _, c := range a {
		count[c]++
	}
	for code, want := range map[int]float64{im.CodeInternal: 0.2, im.CodeFrequency: 0.1, 502: 0.1, 0: 0.6} {
		if got := float64(count[code]) / 5000; math.Abs(got-want) > 0.03 {
			t.Errorf("code %d: rate %.3f, want %.2f", code, got, want)
		}
	}
}

func TestFaultsValidate(t *testing.T) {
	bad := map[string]Faults{
		"negative rate":    {HangRate: -0.1},
		"rate above 1":     {HTTP502Rate: 1.5},
		"sum above 1":      {HTTP502Rate: 0.6, ErrorRates: map[int]float64{50004: 0.6}},
		"code 0":           {ErrorRates: map[int]float64{0: 0.1}},
		"nan":              {HangRate: math.NaN()},
		"p99 below mean":   {LogNormalMean: time.Second, LogNormalP99: time.Millisecond},
		"p99 far too high": {LogNormalMean: time.Millisecond, LogNormalP99: time.Second},
		"only mean":        {LogNormalMean: time.Second},
		"negative latency": {Latency: -time.Second},
		"unknown api":      {APIs: []string{"create"}},
	}
	for name, f := range bad {
		if err := f.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	h := newHarness(t, Config{})
	if err := h.sim.SetFaults(Faults{HangRate: 2}); err == nil {
		t.Error("SetFaults accepted a bad rate")
	}
	if _, err := New(Config{SDKAppID: 1, SecretKey: "k", Faults: Faults{HangRate: 2}}); err == nil {
		t.Error("New accepted a bad rate")
	}
}

func TestSetFaultsConcurrent(t *testing.T) {
	h := newHarness(t, Config{RateLimit: 100000})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			f := Faults{}
			if i%2 == 0 {
				f.ErrorRates = map[int]float64{im.CodeInternal: 1}
			}
			if err := h.sim.SetFaults(f); err != nil {
				t.Error(err)
				return
			}
			_ = h.sim.Faults()
			time.Sleep(50 * time.Microsecond)
		}
	}()
	var calls sync.WaitGroup
	for w := range 4 {
		calls.Add(1)
		go func() {
			defer calls.Done()
			for range 25 {
				r := h.call(im.PathGetContactGroup, im.GetRequest{FromAccount: "a"})
				if r.ErrorCode != 0 && r.ErrorCode != im.CodeInternal {
					t.Errorf("worker %d: code %d", w, r.ErrorCode)
				}
			}
		}()
	}
	calls.Wait()
	close(stop)
	wg.Wait()
}

func TestAdminHTTP(t *testing.T) {
	h := newHarness(t, Config{Admin: AdminConfig{Enabled: true}})
	post := func(path, body string) *http.Response {
		resp, err := h.srv.Client().Post(h.srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := post("/admin/faults", `{"error_rates":{"60007":1},"apis":["create_contact_group"],"latency":"1ms"}`); r.StatusCode != 200 {
		t.Fatalf("set faults: %d", r.StatusCode)
	}
	if f := h.sim.Faults(); f.ErrorRates[60007] != 1 || f.Latency != time.Millisecond || len(f.APIs) != 1 {
		t.Fatalf("faults %+v", f)
	}
	if r := h.call(im.PathCreateContactGroup, createReq("a", "g", c2c(1))); r.ErrorCode != im.CodeFrequency {
		t.Fatalf("create under fault: %d", r.ErrorCode)
	}
	for _, body := range []string{`{"hang_rate":2}`, `{"hang_rat":1}`, `{`, `{"latency":"soon"}`} {
		if r := post("/admin/faults", body); r.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: status %d", body, r.StatusCode)
		}
	}
	post("/admin/faults", `{}`)
	h.call(im.PathCreateContactGroup, createReq("a", "g", c2c(1)))

	get := func(path string, v any) int {
		resp, err := h.srv.Client().Get(h.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if v != nil && resp.StatusCode == 200 {
			if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode
	}
	var f Faults
	if get("/admin/faults", &f) != 200 || f.ErrorRates != nil {
		t.Errorf("get faults %+v", f)
	}
	var st AccountState
	if get("/admin/state?account=a", &st) != 200 || len(st.Groups) != 1 || st.Groups[0].Name != "g" {
		t.Errorf("state %+v", st)
	}
	if get("/admin/state?account=nobody", &st) != 200 || st.Groups == nil || len(st.Groups) != 0 {
		t.Errorf("empty state %+v", st)
	}
	if c := get("/admin/state", nil); c != http.StatusBadRequest {
		t.Errorf("state without account: %d", c)
	}
	var stats Stats
	if get("/admin/stats", &stats) != 200 || stats.APIs[im.APICreate].Total != 2 || stats.GroupsCreated != 1 {
		t.Errorf("stats %+v", stats)
	}
	q := h.query()
	h.clock.Advance(5 * time.Second)
	if r := post("/admin/invalidate-sigs", ""); r.StatusCode != http.StatusNoContent {
		t.Errorf("invalidate: %d", r.StatusCode)
	}
	if r := h.post(im.PathGetContactGroup, q, im.GetRequest{FromAccount: "a"}); r.ErrorCode != im.CodeSigInvalidated {
		t.Errorf("after invalidate: %d", r.ErrorCode)
	}
}

func TestFaultsJSONRoundTrip(t *testing.T) {
	in := Faults{Latency: 5 * time.Millisecond, Jitter: time.Millisecond, LogNormalMean: 10 * time.Millisecond,
		LogNormalP99: 50 * time.Millisecond, ErrorRates: map[int]float64{50004: 0.1}, HTTP502Rate: 0.01,
		HangRate: 0.02, ApplyThenFailRate: 0.03, ApplyThenHangRate: 0.04, APIs: []string{im.APICreate}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"latency":"5ms"`) {
		t.Errorf("wire form %s", b)
	}
	var out Faults
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.Latency != in.Latency || out.LogNormalP99 != in.LogNormalP99 || out.ErrorRates[50004] != 0.1 ||
		out.ApplyThenHangRate != 0.04 || out.APIs[0] != im.APICreate {
		t.Errorf("round trip %+v", out)
	}
}
