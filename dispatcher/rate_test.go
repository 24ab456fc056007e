package dispatcher

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/ratelimit"
)

const (
	simKey   = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"
	simAppID = 1400000000
)

var _ API = (*im.Client)(nil)

// wireLog matches each create request's write on the client with its arrival at the simulator,
// so a run can tell our pacing apart from delays the machine added between the two.
type wireLog struct {
	mu      sync.Mutex
	wrote   map[string]time.Time
	arrived map[string]time.Time
}

func createKey(req *im.CreateRequest) string {
	return req.FromAccount + "/" + req.GroupContactItem[0].GroupName
}

// traced wraps a replica's API and records when each create was written.
type traced struct {
	API
	log *wireLog
}

func (t traced) CreateContactGroup(ctx context.Context, req *im.CreateRequest) (*im.CreateResponse, error) {
	key := createKey(req)
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) {
		now := time.Now()
		t.log.mu.Lock()
		t.log.wrote[key] = now
		t.log.mu.Unlock()
	}})
	return t.API.CreateContactGroup(ctx, req)
}

// arrivals wraps the simulator and records when each create reached it.
func (w *wireLog) arrivals(next http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path == im.PathCreateContactGroup {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			var req im.CreateRequest
			if json.Unmarshal(body, &req) == nil && len(req.GroupContactItem) == 1 {
				now := time.Now()
				w.mu.Lock()
				w.arrived[createKey(&req)] = now
				w.mu.Unlock()
			}
		}
		next.ServeHTTP(rw, r)
	})
}

// rateRun is one load run of replicas Dispatchers against one simulator.
type rateRun struct {
	budget   int
	replicas int
	// byPartition has the replicas learn their partitions (SetPartitions) instead of only how
	// many they own (SetShare).
	byPartition bool
	accounts    int
	duration    time.Duration
	latency     time.Duration
}

type rateResult struct {
	sent        int
	rate        float64 // sustained creates/s over the middle of the run, all replicas together
	writeWindow int     // highest one-second window of client write times
	maxWindow   int     // the simulator's highest one-second window of creates
	limited     int     // creates the simulator answered 60007
	late        int     // creates that reached the simulator more than the margin later than the quickest
	spread      time.Duration
	stall       time.Duration // the longest a 1ms timer overslept during the run
	outcomes    map[Result]int
}

func (rr rateResult) utilisation(budget int) float64 { return rr.rate / float64(budget) }

func (rr rateResult) String() string {
	return fmt.Sprintf("%d creates, %.2f/s sustained; max one-second window: written %d, at the simulator %d; "+
		"60007s %d; write-to-arrival spread %v (%d beyond the margin); longest stall %v; outcomes %v",
		rr.sent, rr.rate, rr.writeWindow, rr.maxWindow, rr.limited, rr.spread.Round(time.Microsecond), rr.late,
		rr.stall.Round(time.Millisecond), rr.outcomes)
}

// run drives every account's events through the replicas, one event at a time per account as
// the consumer would, until duration passes.
func (r rateRun) run(tb testing.TB) rateResult {
	tb.Helper()
	sim, err := imsim.New(imsim.Config{SDKAppID: simAppID, SecretKey: simKey, RateLimit: r.budget,
		Faults: imsim.Faults{Latency: r.latency}, Seed: 1})
	if err != nil {
		tb.Fatal(err)
	}
	wl := &wireLog{wrote: map[string]time.Time{}, arrived: map[string]time.Time{}}
	srv := httptest.NewServer(wl.arrivals(sim))
	defer srv.Close()
	defer sim.Close()

	var ds []*Dispatcher
	for range r.replicas {
		client, err := im.New(im.Config{SDKAppID: simAppID, SecretKey: simKey, BaseURL: srv.URL})
		if err != nil {
			tb.Fatal(err)
		}
		d, err := New(Config{API: traced{API: client, log: wl}, RateLimit: float64(r.budget), GetRateLimit: float64(r.budget),
			UpdateRateLimit: float64(r.budget)})
		if err != nil {
			tb.Fatal(err)
		}
		// Six partitions spread evenly: replica i owns i, i+replicas, ...
		if r.byPartition {
			var ids []int
			for p := len(ds); p < 6; p += r.replicas {
				ids = append(ids, p)
			}
			d.SetPartitions(ids, 6)
		} else {
			d.SetShare(6/r.replicas, 6)
		}
		ds = append(ds, d)
	}

	// The shares just set are in force one window from now (limiter.set); the run's duration
	// starts then.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second+ratelimit.DefaultJitterMargin+r.duration)
	defer cancel()
	var (
		mu       sync.Mutex
		outcomes = map[Result]int{}
		wg       sync.WaitGroup
		stall    time.Duration
	)
	wg.Go(func() { // canary: how long the scheduler leaves a goroutine waiting
		for ctx.Err() == nil {
			t0 := time.Now()
			time.Sleep(time.Millisecond)
			stall = max(stall, time.Since(t0)-time.Millisecond)
		}
	})
	for a := range r.accounts {
		d := ds[a%r.replicas]
		account := fmt.Sprintf("user%04d", a)
		wg.Go(func() {
			for k := 0; ctx.Err() == nil && k < 20; k++ {
				ev := &event.Event{EventID: fmt.Sprintf("%s-%d", account, k), EventType: event.TypeContactGroupCreated,
					FromAccount: account, GroupName: fmt.Sprintf("g%d", k),
					Contacts: []event.Contact{{Type: event.ContactC2C, ToAccount: "peer"}}}
				o, err := d.Dispatch(ctx, Task{Event: ev})
				if err != nil {
					return
				}
				mu.Lock()
				outcomes[o.Result]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()

	st := sim.Stats().APIs[im.APICreate]
	res := rateResult{maxWindow: st.MaxWindow, limited: st.RateLimited, outcomes: outcomes, stall: stall}
	wl.mu.Lock()
	defer wl.mu.Unlock()
	var writes []time.Time
	var delays []time.Duration
	for key, w := range wl.wrote {
		writes = append(writes, w)
		if a, ok := wl.arrived[key]; ok {
			delays = append(delays, a.Sub(w))
		}
	}
	slices.SortFunc(writes, func(a, b time.Time) int { return a.Compare(b) })
	res.sent = len(writes)
	res.writeWindow = maxWindow(writes, time.Second)
	if len(writes) > 1 {
		// The middle 80% of the run: a finite run's first and last windows may hold a whole
		// window's calls in part of a second, which would flatter the rate.
		span := writes[len(writes)-1].Sub(writes[0])
		from, to := writes[0].Add(span/10), writes[0].Add(span*9/10)
		n := 0
		for _, w := range writes {
			if !w.Before(from) && w.Before(to) {
				n++
			}
		}
		res.rate = float64(n) / to.Sub(from).Seconds()
	}
	if len(delays) > 0 {
		quickest := slices.Min(delays)
		res.spread = slices.Max(delays) - quickest
		for _, d := range delays {
			if d > quickest+ratelimit.DefaultJitterMargin {
				res.late++
			}
		}
	}
	return res
}

// TestRateAgainstSimulator runs one, two and three replicas with 1,000 accounts of backlog
// against the simulator (40 ms latency, 200 creates/s).
//
// What we control is when requests are written: no one-second window of writes may exceed the
// budget, always. The simulator's windows must not either, as long as the machine delivered every
// request within the jitter margin; a request it delayed longer (a loaded CI box stalls goroutines
// for tens of milliseconds) can add at most one call to a window, which the test allows for and
// reports. Utilisation is asserted when the run was clean: no request delayed beyond the margin
// (each such delay can cost a retried 60007) and no goroutine stalled longer than the limiter can
// catch up.
func TestRateAgainstSimulator(t *testing.T) {
	duration := 3 * time.Second
	if testing.Short() {
		duration = 1500 * time.Millisecond
	}
	for _, tc := range []struct {
		name        string
		replicas    int
		byPartition bool
		minUtil     float64
	}{
		// minUtil is a floor that catches a limiter leaving budget unused (a replica's share lost:
		// 0.5 or 0.67), not the figure itself: that is BenchmarkUtilisation's (BENCHMARKS.md), as a
		// timed test on a shared CI box measures the box too (CI saw 98.95% for two replicas with no
		// stall the test could see).
		{"1 replica", 1, false, 0.95},
		{"2 replicas", 2, false, 0.95},
		// SetShare: 200×2/6 = 66.7/s each, but each replica's per-window ceiling must be a
		// whole number that the three sum to within 200 whatever their phases: 66 per 1.005s,
		// so at most 98.5%.
		{"3 replicas, SetShare", 3, false, 0.95},
		// SetPartitions: 67 + 67 + 66 per window.
		{"3 replicas, SetPartitions", 3, true, 0.95},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const budget = 200
			res := rateRun{budget: budget, replicas: tc.replicas, byPartition: tc.byPartition, accounts: 1000,
				duration: duration, latency: 40 * time.Millisecond}.run(t)
			t.Log(res)
			if res.writeWindow > budget {
				t.Errorf("replicas wrote %d creates within one second, budget %d", res.writeWindow, budget)
			}
			if res.maxWindow > budget+res.late {
				t.Errorf("simulator saw %d creates in one second: budget %d, and only %d requests were delayed beyond the margin",
					res.maxWindow, budget, res.late)
			} else if res.maxWindow > budget {
				t.Logf("simulator saw %d creates in one second, explained by %d requests the machine delayed by up to %v",
					res.maxWindow, res.late, res.spread)
			}
			if res.limited > res.late {
				t.Errorf("simulator answered 60007 %d times", res.limited)
			}
			u := res.utilisation(budget)
			switch {
			case u >= tc.minUtil:
			case res.stall > 150*time.Millisecond || res.late > 0:
				t.Logf("utilisation %.2f%% not asserted: the machine stalled goroutines for %v and delayed %d requests",
					100*u, res.stall, res.late)
			default:
				t.Errorf("utilisation %.2f%%, want >= %.0f%%", 100*u, 100*tc.minUtil)
			}
			if n := res.outcomes[Applied]; n == 0 || n != res.outcomes[Applied]+res.outcomes[Rejected]+res.outcomes[Partial]+res.outcomes[Exhausted] {
				t.Errorf("outcomes %v, want all applied", res.outcomes)
			}
		})
	}
}

// BenchmarkUtilisation reports how much of the 200/s budget one and three replicas (sharing by
// SetShare or SetPartitions) use against the simulator with 40 ms latency and 1,000 accounts.
// Run with -benchtime 1x.
func BenchmarkUtilisation(b *testing.B) {
	for _, tc := range []struct {
		replicas    int
		byPartition bool
	}{{1, false}, {3, false}, {3, true}} {
		b.Run(fmt.Sprintf("replicas=%d/partitions=%v", tc.replicas, tc.byPartition), func(b *testing.B) {
			for range b.N {
				res := rateRun{budget: 200, replicas: tc.replicas, byPartition: tc.byPartition, accounts: 1000,
					duration: 3 * time.Second, latency: 40 * time.Millisecond}.run(b)
				b.Log(res)
				b.ReportMetric(100*res.utilisation(200), "%budget")
				b.ReportMetric(float64(res.maxWindow), "max-window")
				b.ReportMetric(float64(res.limited), "60007s")
			}
		})
	}
}
