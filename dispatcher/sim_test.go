package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
	"github.com/chatgroupd/chatgroupd/metrics"
	"github.com/chatgroupd/chatgroupd/ratelimit"
)

// switchAPI forwards to whichever client is current, as if an operator fixed the app's
// configuration while the dispatcher kept running.
type switchAPI struct{ cur atomic.Pointer[im.Client] }

func (s *switchAPI) CreateContactGroup(ctx context.Context, r *im.CreateRequest) (*im.CreateResponse, error) {
	return s.cur.Load().CreateContactGroup(ctx, r)
}

func (s *switchAPI) GetContactGroup(ctx context.Context, r *im.GetRequest) (*im.GetResponse, error) {
	return s.cur.Load().GetContactGroup(ctx, r)
}

func (s *switchAPI) UpdateContactGroup(ctx context.Context, r *im.UpdateRequest) (*im.UpdateResponse, error) {
	return s.cur.Load().UpdateContactGroup(ctx, r)
}

func (s *switchAPI) DelContactGroup(ctx context.Context, r *im.DeleteRequest) (*im.DeleteResponse, error) {
	return s.cur.Load().DelContactGroup(ctx, r)
}

func (s *switchAPI) RefreshSig() { s.cur.Load().RefreshSig() }

// simEnv is a Dispatcher (with Run going) on the real im client against the simulator.
type simEnv struct {
	t   *testing.T
	sim *imsim.Server
	url string
	api *switchAPI
	d   *Dispatcher
	m   *metrics.Metrics
}

func newSimEnv(t *testing.T, simCfg imsim.Config, key string, tweak func(*Config)) *simEnv {
	t.Helper()
	simCfg.SDKAppID, simCfg.SecretKey, simCfg.Seed = simAppID, simKey, 7
	sim, err := imsim.New(simCfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	t.Cleanup(sim.Close)
	e := &simEnv{t: t, sim: sim, url: srv.URL, api: &switchAPI{}, m: metrics.New(prometheus.NewRegistry(), "test", false)}
	e.api.cur.Store(e.client(key))
	cfg := Config{API: e.api, Limiter: ratelimit.Config{Standalone: true}, Metrics: e.m, RetryBudget: 2 * time.Second,
		BackoffBase: 2 * time.Millisecond, BackoffMax: 20 * time.Millisecond, ProbeInterval: 50 * time.Millisecond}
	if tweak != nil {
		tweak(&cfg)
	}
	e.d = mustNew(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return e
}

func (e *simEnv) client(key string) *im.Client {
	c, err := im.New(im.Config{SDKAppID: simAppID, SecretKey: key, BaseURL: e.url})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// dispatchAll dispatches events concurrently (one goroutine per event) and returns outcomes in
// order; it fails the test if any doesn't end within 20s.
func (e *simEnv) dispatchAll(evs ...*event.Event) []Outcome {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out := make([]Outcome, len(evs))
	errs := make([]error, len(evs))
	var wg sync.WaitGroup
	for i, ev := range evs {
		wg.Go(func() { out[i], errs[i] = e.d.Dispatch(ctx, Task{Event: ev}) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		e.t.Fatalf("Dispatch: %v", err)
	}
	return out
}

func TestSimulatorApplyThenFailCreatesOnce(t *testing.T) {
	e := newSimEnv(t, imsim.Config{Faults: imsim.Faults{ApplyThenFailRate: 0.5, APIs: []string{im.APICreate}}}, simKey, nil)
	var evs []*event.Event
	for i := range 40 {
		evs = append(evs, newEvent(fmt.Sprintf("user%d", i), "friends"))
	}
	for _, o := range e.dispatchAll(evs...) {
		if o.Result != Applied {
			t.Fatalf("outcome %+v, want applied", o)
		}
	}
	st := e.sim.Stats()
	if st.DuplicateCreates != 0 || st.GroupsCreated != 40 {
		t.Errorf("simulator: %d duplicate creates, %d groups; want 0 and 40", st.DuplicateCreates, st.GroupsCreated)
	}
	if st.APIs[im.APICreate].Codes[im.CodeTimeout] == 0 {
		t.Error("no create was answered 50005: the fault did not fire")
	}
	if found := testutil.ToFloat64(e.m.UncertainChecks.WithLabelValues("true")); found == 0 {
		t.Error("no check found an applied-then-failed group")
	}
}

func TestSimulatorOutagePausesThenResumes(t *testing.T) {
	e := newSimEnv(t, imsim.Config{}, simKey, func(c *Config) { c.RetryBudget = time.Second })
	testwait.For(t, 5*time.Second, "startup probe", func() bool { return e.d.Ready() == nil })
	if err := e.sim.SetFaults(imsim.Faults{HTTP502Rate: 1}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	outs := make([]Outcome, 30)
	for i := range outs {
		wg.Go(func() { outs[i], _ = e.d.Dispatch(ctx, Task{Event: newEvent(fmt.Sprintf("user%d", i), "friends")}) })
	}
	testwait.For(t, 5*time.Second, "outage pause", func() bool { return testutil.ToFloat64(e.m.Paused.WithLabelValues(ReasonOutage)) == 1 })
	time.Sleep(1500 * time.Millisecond) // longer than the retry budget
	if err := e.sim.SetFaults(imsim.Faults{}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, o := range outs {
		if o.Result != Applied {
			t.Errorf("event %d: %+v, want applied after the outage", i, o)
		}
	}
	if st := e.sim.Stats(); st.GroupsCreated != 30 {
		t.Errorf("groups created = %d, want 30", st.GroupsCreated)
	}
}

func TestSimulatorWrongKeyPausesUntilFixed(t *testing.T) {
	wrongKey := "0000000000000000000000000000000000000000000000000000000000000000"
	e := newSimEnv(t, imsim.Config{}, wrongKey, nil)
	testwait.For(t, 5*time.Second, "config pause", func() bool { return errors.Is(e.d.Ready(), ErrConfig) })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res := make(chan Outcome, 5)
	for i := range 5 {
		go func() {
			o, err := e.d.Dispatch(ctx, Task{Event: newEvent(fmt.Sprintf("user%d", i), "friends")})
			if err != nil {
				t.Errorf("Dispatch: %v", err)
			}
			res <- o
		}()
	}
	time.Sleep(200 * time.Millisecond)
	if n := e.sim.Stats().APIs[im.APICreate].Total; n != 0 || len(res) != 0 {
		t.Fatalf("while the key is wrong: %d creates reached the simulator, %d events ended", n, len(res))
	}
	e.api.cur.Store(e.client(simKey)) // the operator fixes the secret
	for range 5 {
		select {
		case o := <-res:
			if o.Result != Applied {
				t.Errorf("outcome %+v, want applied", o)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("events did not resume after the key was fixed")
		}
	}
	if err := e.d.Ready(); err != nil {
		t.Errorf("Ready = %v", err)
	}
}

func TestSimulatorPermanentAndPartial(t *testing.T) {
	e := newSimEnv(t, imsim.Config{NotImported: []string{"ghost"}, DismissedGroups: []string{"@TGS#gone"}, MaxContacts: 3}, simKey, nil)
	full := make([]*event.Event, 20)
	for i := range full {
		full[i] = newEvent("busy", fmt.Sprintf("g%d", i), c2c("p"))
	}
	for _, o := range e.dispatchAll(full...) {
		if o.Result != Applied {
			t.Fatalf("setup: %+v", o)
		}
	}
	gone := event.Contact{Type: event.ContactGroup, ToGroupID: "@TGS#gone"}
	outs := e.dispatchAll(
		newEvent("busy", "one too many", c2c("p")),
		newEvent("ghost", "friends"),
		newEvent("alice", "friends", c2c("bob"), gone),
		newEvent("carol", "friends", c2c("a"), c2c("b"), c2c("c"), c2c("d")),
	)
	for i, want := range []struct {
		result Result
		code   int
		failed string
	}{
		{Rejected, im.CodeTooManyGroups, `"To_Account":"p"`},
		{Rejected, im.CodeNotImported, `"To_Account":"bob"`},
		{Partial, im.CodeGroupCheckFailed, `"ToGroupId":"@TGS#gone"`},
		{Partial, im.CodeTooManyContacts, `"To_Account":"d"`},
	} {
		o := outs[i]
		if o.Result != want.result || o.Code != want.code {
			t.Errorf("event %d: %v %d, want %v %d (%s)", i, o.Result, o.Code, want.result, want.code, o.Info)
			continue
		}
		var det ResultDetail
		if err := json.Unmarshal(o.Detail, &det); err != nil || !json.Valid(o.Detail) {
			t.Errorf("event %d: detail %s: %v", i, o.Detail, err)
		}
		if !strings.Contains(string(o.Detail), want.failed) {
			t.Errorf("event %d: detail %s lacks %s", i, o.Detail, want.failed)
		}
		if (want.result == Partial) != (det.GroupID != 0) {
			t.Errorf("event %d: detail %s: GroupId wanted only for partial", i, o.Detail)
		}
	}
}
