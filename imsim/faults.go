package imsim

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
)

// Faults is what the simulator does wrong on purpose. The zero value injects nothing. Rates are
// per call in [0, 1]; one uniform draw picks at most one of HTTP502Rate, HangRate, ErrorRates,
// ApplyThenFailRate, ApplyThenHangRate, so their sum must not exceed 1.
type Faults struct {
	// Latency is added to every call, plus a uniform [0, Jitter) on top.
	Latency time.Duration
	Jitter  time.Duration
	// LogNormalMean and LogNormalP99, when both set, replace Latency/Jitter with a lognormal
	// delay of that mean and 99th percentile (P99 at most ~14.9× the mean).
	LogNormalMean time.Duration
	LogNormalP99  time.Duration

	// ErrorRates answers the call with this top-level IM code without applying it.
	ErrorRates map[int]float64
	// HTTP502Rate answers 502 Bad Gateway (an HTML body) without applying.
	HTTP502Rate float64
	// HangRate holds the request without applying until the client gives up, the server closes,
	// or Config.MaxHang passes (then it answers 50005).
	HangRate float64
	// ApplyThenFailRate (create, update, delete only) applies the call, then answers 50005:
	// the ambiguous outcome a client must check before creating again.
	ApplyThenFailRate float64
	// ApplyThenHangRate (create, update, delete only) applies the call, then hangs like HangRate.
	ApplyThenHangRate float64

	// APIs limits the rate-based faults (not latency) to these API names (im.APICreate, ...);
	// empty means all four.
	APIs []string

	// ByAPI gives an API faults of its own: a call of an API listed here meets that entry
	// (latency and rates) instead of the fields above, so deletes can fail while creates are
	// slow. An entry's own APIs and ByAPI must be empty.
	ByAPI map[string]Faults
}

// forAPI returns the faults a call of api meets.
func (f *Faults) forAPI(api string) *Faults {
	if g, ok := f.ByAPI[api]; ok {
		return &g
	}
	return f
}

// MaxLatency caps injected latency. A client gives up after a few seconds anyway, and an
// uncapped value posted to the admin API would hold every request (and its goroutine) for as
// long as the poster liked.
const MaxLatency = 30 * time.Second

type faultKind int

const (
	faultNone faultKind = iota
	fault502
	faultHang
	faultCode
	faultApplyFail
	faultApplyHang
)

// Validate reports a rate outside [0, 1], rates summing above 1, or an impossible lognormal.
func (f Faults) Validate() error {
	sum := 0.0
	check := func(name string, r float64) error {
		if r < 0 || r > 1 || math.IsNaN(r) {
			return fmt.Errorf("imsim faults: %s rate %v outside [0, 1]", name, r)
		}
		sum += r
		return nil
	}
	errs := []error{
		check("http 502", f.HTTP502Rate),
		check("hang", f.HangRate),
		check("apply-then-fail", f.ApplyThenFailRate),
		check("apply-then-hang", f.ApplyThenHangRate),
	}
	for code, r := range f.ErrorRates {
		if code == 0 {
			errs = append(errs, errors.New("imsim faults: error code 0 is not an error"))
		}
		errs = append(errs, check(fmt.Sprintf("code %d", code), r))
	}
	if sum > 1+1e-9 {
		errs = append(errs, fmt.Errorf("imsim faults: rates sum to %v > 1", sum))
	}
	if f.Latency < 0 || f.Jitter < 0 {
		errs = append(errs, errors.New("imsim faults: negative latency"))
	}
	if f.Latency+f.Jitter > MaxLatency || f.LogNormalP99 > MaxLatency || f.LogNormalMean > MaxLatency {
		errs = append(errs, fmt.Errorf("imsim faults: latency over %v", MaxLatency))
	}
	if (f.LogNormalMean > 0) != (f.LogNormalP99 > 0) {
		errs = append(errs, errors.New("imsim faults: set both lognormal mean and p99"))
	} else if f.LogNormalMean > 0 {
		if _, _, err := lognormalParams(f.LogNormalMean, f.LogNormalP99); err != nil {
			errs = append(errs, err)
		}
	}
	for _, a := range f.APIs {
		if !slices.Contains(apiNames, a) {
			errs = append(errs, fmt.Errorf("imsim faults: unknown api %q", a))
		}
	}
	apis := slices.Sorted(maps.Keys(f.ByAPI)) // one order for the messages
	for _, a := range apis {
		g := f.ByAPI[a]
		if !slices.Contains(apiNames, a) {
			errs = append(errs, fmt.Errorf("imsim faults: by api: unknown api %q", a))
			continue
		}
		if len(g.APIs) > 0 || g.ByAPI != nil {
			errs = append(errs, fmt.Errorf("imsim faults: by api %s: an entry sets neither apis nor by_api", a))
		}
		if err := g.Validate(); err != nil {
			msg := strings.ReplaceAll(err.Error(), "imsim faults: ", "")
			errs = append(errs, fmt.Errorf("imsim faults: by api %s: %s", a, strings.ReplaceAll(msg, "\n", "; ")))
		}
	}
	return errors.Join(errs...)
}

// z99 is the standard normal 99th percentile.
const z99 = 2.3263478740408408

// lognormalParams solves mean = exp(mu + s²/2), p99 = exp(mu + z99·s) for the smaller s.
func lognormalParams(mean, p99 time.Duration) (mu, sigma float64, err error) {
	d := math.Log(float64(p99) / float64(mean))
	disc := z99*z99 - 2*d
	if d < 0 || disc < 0 {
		return 0, 0, fmt.Errorf("imsim faults: lognormal p99 %v must be between the mean %v and ~14.9× it", p99, mean)
	}
	sigma = z99 - math.Sqrt(disc)
	mu = math.Log(float64(mean)) - sigma*sigma/2
	return mu, sigma, nil
}

// delay draws the latency of one call.
func (f *Faults) delay(rng *rand.Rand) time.Duration {
	if f.LogNormalMean > 0 {
		mu, sigma, err := lognormalParams(f.LogNormalMean, f.LogNormalP99)
		if err != nil {
			return f.LogNormalMean
		}
		return time.Duration(math.Exp(mu + sigma*rng.NormFloat64()))
	}
	d := f.Latency
	if f.Jitter > 0 {
		d += time.Duration(rng.Int64N(int64(f.Jitter)))
	}
	return d
}

// pick draws the fault of one call of api.
func (f *Faults) pick(rng *rand.Rand, api string) (faultKind, int) {
	if len(f.APIs) > 0 && !slices.Contains(f.APIs, api) {
		return faultNone, 0
	}
	u := rng.Float64()
	if u -= f.HTTP502Rate; u < 0 {
		return fault502, 0
	}
	if u -= f.HangRate; u < 0 {
		return faultHang, 0
	}
	codes := make([]int, 0, len(f.ErrorRates))
	for c := range f.ErrorRates {
		codes = append(codes, c)
	}
	slices.Sort(codes) // map order is random; the draw must be reproducible from the seed
	for _, c := range codes {
		if u -= f.ErrorRates[c]; u < 0 {
			return faultCode, c
		}
	}
	mutating := api != im.APIGet
	if u -= f.ApplyThenFailRate; u < 0 && mutating {
		return faultApplyFail, 0
	}
	if u -= f.ApplyThenHangRate; u < 0 && mutating {
		return faultApplyHang, 0
	}
	return faultNone, 0
}

// faultsJSON is the wire form of Faults: durations as Go duration strings ("50ms").
type faultsJSON struct {
	Latency           string            `json:"latency,omitempty"`
	Jitter            string            `json:"jitter,omitempty"`
	LogNormalMean     string            `json:"lognormal_mean,omitempty"`
	LogNormalP99      string            `json:"lognormal_p99,omitempty"`
	ErrorRates        map[int]float64   `json:"error_rates,omitempty"`
	HTTP502Rate       float64           `json:"http_502_rate,omitempty"`
	HangRate          float64           `json:"hang_rate,omitempty"`
	ApplyThenFailRate float64           `json:"apply_then_fail_rate,omitempty"`
	ApplyThenHangRate float64           `json:"apply_then_hang_rate,omitempty"`
	APIs              []string          `json:"apis,omitempty"`
	ByAPI             map[string]Faults `json:"by_api,omitempty"`
}

func durString(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

// MarshalJSON writes durations as strings such as "50ms".
func (f Faults) MarshalJSON() ([]byte, error) {
	return json.Marshal(faultsJSON{
		Latency: durString(f.Latency), Jitter: durString(f.Jitter),
		LogNormalMean: durString(f.LogNormalMean), LogNormalP99: durString(f.LogNormalP99),
		ErrorRates: f.ErrorRates, HTTP502Rate: f.HTTP502Rate, HangRate: f.HangRate,
		ApplyThenFailRate: f.ApplyThenFailRate, ApplyThenHangRate: f.ApplyThenHangRate, APIs: f.APIs, ByAPI: f.ByAPI,
	})
}

// UnmarshalJSON reads the form MarshalJSON writes; unknown fields are errors, so a typo in a
// fault script does not silently inject nothing.
func (f *Faults) UnmarshalJSON(b []byte) error {
	var w faultsJSON
	if err := decodeStrict(b, &w); err != nil {
		return err
	}
	var out Faults
	for _, d := range []struct {
		s   string
		dst *time.Duration
	}{{w.Latency, &out.Latency}, {w.Jitter, &out.Jitter}, {w.LogNormalMean, &out.LogNormalMean}, {w.LogNormalP99, &out.LogNormalP99}} {
		if d.s == "" {
			continue
		}
		v, err := time.ParseDuration(d.s)
		if err != nil {
			return fmt.Errorf("imsim faults: %w", err)
		}
		*d.dst = v
	}
	out.ErrorRates, out.HTTP502Rate, out.HangRate = w.ErrorRates, w.HTTP502Rate, w.HangRate
	out.ApplyThenFailRate, out.ApplyThenHangRate, out.APIs = w.ApplyThenFailRate, w.ApplyThenHangRate, w.APIs
	out.ByAPI = w.ByAPI
	*f = out
	return nil
}

func (f Faults) clone() Faults {
	if f.ErrorRates != nil {
		m := make(map[int]float64, len(f.ErrorRates))
		for k, v := range f.ErrorRates {
			m[k] = v
		}
		f.ErrorRates = m
	}
	f.APIs = slices.Clone(f.APIs)
	if f.ByAPI != nil {
		m := make(map[string]Faults, len(f.ByAPI))
		for k, v := range f.ByAPI {
			m[k] = v.clone()
		}
		f.ByAPI = m
	}
	return f
}
