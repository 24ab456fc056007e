package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatgroupd/chatgroupd/dlq"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/internal/configtest"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
	"github.com/chatgroupd/chatgroupd/metrics"
	"github.com/chatgroupd/chatgroupd/ratelimit"
)

func TestDispatchApplied(t *testing.T) {
	h := newHarness(t, nil)
	o := h.dispatch(Task{Event: newEvent("alice", "friends")})
	if o.Result != Applied || o.Attempts != 1 || o.Code != 0 || o.Detail != nil {
		t.Fatalf("outcome = %+v, want applied after 1 attempt", o)
	}
	g := h.api.group("alice", "friends")
	if g == nil || len(g.contacts) != 2 {
		t.Fatalf("group = %+v, want 2 contacts", g)
	}
	if err := h.d.Ready(); err != nil {
		t.Errorf("Ready after an accepted call = %v", err)
	}
}

func TestTransientThenSuccess(t *testing.T) {
	for _, tc := range []struct {
		name      string
		err       error
		wantCode  string
		wantCheck bool // ambiguous: the group must be looked up before the second create
	}{
		{"60008", imErr(im.APICreate, 60008), "60008", false},
		{"70169", imErr(im.APICreate, 70169), "70169", false},
		{"50004 ambiguous", imErr(im.APICreate, im.CodeInternal), "50004", true},
		{"http 502", &im.Error{API: im.APICreate, Class: im.ClassTransient, HTTPStatus: http.StatusBadGateway}, "http_502", true},
		{"network", &im.Error{API: im.APICreate, Class: im.ClassTransient, Network: true, Err: errNetwork}, "network", true},
		{"plain error", errNetwork, "network", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.api.fail(im.APICreate, step{err: tc.err}, step{err: tc.err})
			o := h.dispatch(Task{Event: newEvent("alice", "friends")})
			if o.Result != Applied {
				t.Fatalf("outcome = %+v, want applied", o)
			}
			if got := h.api.count(im.APICreate); got != 3 {
				t.Errorf("creates = %d, want 3", got)
			}
			gets := h.api.count(im.APIGet)
			if tc.wantCheck != (gets > 0) {
				t.Errorf("gets = %d, want a check before re-creating: %v", gets, tc.wantCheck)
			}
			if o.Attempts != 3+gets {
				t.Errorf("attempts = %d, want %d", o.Attempts, 3+gets)
			}
			if got := testutil.ToFloat64(h.m.Retries.WithLabelValues(im.APICreate, tc.wantCode)); got != 2 {
				t.Errorf("retries{%s} = %v, want 2", tc.wantCode, got)
			}
			if n := h.api.groupCount("alice"); n != 1 {
				t.Errorf("groups = %d, want 1", n)
			}
		})
	}
}

func TestTransientPastBudgetExhausted(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.RetryBudget = 10 * time.Minute })
	h.api.setAlways(im.APICreate, imErr(im.APICreate, 60008))
	start := h.clock.Now()
	o := h.dispatch(Task{Event: newEvent("alice", "friends")})
	if o.Result != Exhausted || o.Code != 60008 {
		t.Fatalf("outcome = %+v, want exhausted with code 60008", o)
	}
	if spent := h.clock.Now().Sub(start); spent < 10*time.Minute {
		t.Errorf("gave up after %v, before the 10m budget", spent)
	}
	if o.Attempts < 5 || o.Attempts != h.api.count(im.APICreate) {
		t.Errorf("attempts = %d, creates = %d; want equal and several", o.Attempts, h.api.count(im.APICreate))
	}
	if !strings.Contains(o.Info, "60008") {
		t.Errorf("info %q does not name the last code", o.Info)
	}
}

// TestExhaustedCodeNetworkAndTimeout: an event exhausted by failures that got no answer is told
// apart from an invalid event (code 0) and from each other: dlq-error-code network or timeout.
func TestExhaustedCodeNetworkAndTimeout(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"refused", &im.Error{API: im.APICreate, Class: im.ClassTransient, Network: true, Err: errors.New("connect: connection refused")}, dlq.CodeNetwork},
		{"malformed", &im.Error{API: im.APICreate, Class: im.ClassTransient, Malformed: true, HTTPStatus: 200, Err: im.ErrMalformedResponse}, dlq.CodeNetwork},
		{"deadline", &im.Error{API: im.APICreate, Class: im.ClassTransient, Network: true, Err: fmt.Errorf("post: %w", context.DeadlineExceeded)}, dlq.CodeTimeout},
		{"net timeout", &im.Error{API: im.APICreate, Class: im.ClassTransient, Network: true, Err: &net.OpError{Op: "read", Err: timeoutErr{}}}, dlq.CodeTimeout},
		{"http 503", &im.Error{API: im.APICreate, Class: im.ClassTransient, HTTPStatus: 503}, 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.RetryBudget = time.Minute })
			h.api.setAlways(im.APICreate, tc.err)
			o := h.dispatch(Task{Event: newEvent("alice", "friends")})
			if o.Result != Exhausted || o.Code != tc.want {
				t.Fatalf("outcome %v code %d, want exhausted with %d", o.Result, o.Code, tc.want)
			}
		})
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestBackoffIsExponentialAndCapped(t *testing.T) {
	var mu sync.Mutex
	var sleeps []time.Duration
	clock := newFakeClock()
	h := newHarness(t, func(c *Config) {
		c.BackoffBase, c.BackoffMax = 100*time.Millisecond, 800*time.Millisecond
		c.RetryBudget = time.Hour
		c.Sleep = func(ctx context.Context, d time.Duration) error {
			if d > 10*time.Millisecond { // ignore limiter pacing
				mu.Lock()
				sleeps = append(sleeps, d)
				mu.Unlock()
			}
			return clock.Sleep(ctx, d)
		}
		c.Now = clock.Now
	})
	h.api.failCodes(im.APICreate, 60008, 40)
	if o := h.dispatch(Task{Event: newEvent("alice", "friends")}); o.Result != Applied {
		t.Fatalf("outcome = %+v", o)
	}
	mu.Lock()
	defer mu.Unlock()
	var late time.Duration
	for i, d := range sleeps {
		if d > 800*time.Millisecond {
			t.Fatalf("sleep %d = %v above BackoffMax", i, d)
		}
		if i >= 10 {
			late = max(late, d)
		}
	}
	// Full jitter draws from [0, ceiling]; with the ceiling at the 800ms cap for 30 draws, some
	// draw above 100ms is all but certain (probability of none: 0.125^30).
	if late <= 100*time.Millisecond {
		t.Errorf("late backoffs all <= base: %v", sleeps)
	}
}

// offsetClock is real time plus an offset the test can jump forward.
type offsetClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *offsetClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *offsetClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

func TestFrequencyLimitStormSlowsAndRecovers(t *testing.T) {
	clock := &offsetClock{}
	var d *Dispatcher
	var mu sync.Mutex
	lowest := 200.0
	h := newHarness(t, func(c *Config) {
		c.RateLimit = 200
		c.Now = clock.Now
		c.BackoffBase, c.BackoffMax = 5*time.Millisecond, 20*time.Millisecond
		c.Sleep = func(ctx context.Context, dur time.Duration) error {
			if dur >= time.Millisecond && d != nil {
				r := d.create.Rate()
				mu.Lock()
				lowest = min(lowest, r)
				mu.Unlock()
			}
			return sleep(ctx, dur)
		}
	})
	d = h.d
	// Someone else is using the quota: the first 120 creates are answered 60007.
	h.api.failCodes(im.APICreate, im.CodeFrequency, 120)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var results []<-chan result
	for i := range 40 {
		results = append(results, h.async(ctx, Task{Event: newEvent(fmt.Sprintf("user%d", i), "friends")}))
	}
	for i, ch := range results {
		r := <-ch
		if r.err != nil || r.o.Result != Applied {
			t.Fatalf("event %d = %+v, %v; want applied (frequency limits are never dead-lettered)", i, r.o, r.err)
		}
	}
	if down := testutil.ToFloat64(h.m.LimiterChanges.WithLabelValues("down")); down < 1 {
		t.Fatalf("limiter changes down = %v, want >= 1", down)
	}
	mu.Lock()
	low := lowest
	mu.Unlock()
	if low > 200*ratelimit.DefaultSlowDownFactor+1e-9 || low < 200*ratelimit.DefaultMinRateFactor {
		t.Fatalf("lowest rate during storm = %v, want within [20, 140]", low)
	}
	if got := testutil.ToFloat64(h.m.Retries.WithLabelValues(im.APICreate, "60007")); got != 120 {
		t.Errorf("retries{60007} = %v, want 120", got)
	}
	clock.Advance(time.Minute)
	if got := h.d.create.Rate(); got != 200 {
		t.Errorf("rate a minute later = %v, want 200", got)
	}
	if up := testutil.ToFloat64(h.m.LimiterChanges.WithLabelValues("up")); up < 1 {
		t.Errorf("limiter changes up = %v, want >= 1", up)
	}
	if got := testutil.ToFloat64(h.m.RateLimitLimit); got != 200 {
		t.Errorf("ratelimit_limit gauge = %v after recovery, want 200", got)
	}
}

func TestCredentialsRefreshSig(t *testing.T) {
	h := newHarness(t, nil)
	h.run()
	h.api.failCodes(im.APICreate, im.CodeSigExpired, 1)
	o := h.dispatch(Task{Event: newEvent("alice", "friends")})
	if o.Result != Applied || o.Attempts != 2 {
		t.Fatalf("outcome = %+v, want applied after 2 attempts", o)
	}
	if n := h.api.refreshCount(); n != 1 {
		t.Errorf("RefreshSig calls = %d, want 1", n)
	}
	if err := h.d.Ready(); err != nil {
		t.Errorf("Ready = %v, want nil (one refresh fixed it)", err)
	}
}

func TestCredentialsPersistingPausesLikeConfig(t *testing.T) {
	h := newHarness(t, nil)
	h.run()
	testwait.For(t, 5*time.Second, "startup probe", func() bool { return h.d.Ready() == nil })
	h.api.setAlways(im.APICreate, imErr(im.APICreate, im.CodeSigInvalidated))
	h.api.setAlways(im.APIGet, imErr(im.APIGet, im.CodeSigInvalidated))
	res := h.async(context.Background(), Task{Event: newEvent("alice", "friends")})
	testwait.For(t, 5*time.Second, "config pause", func() bool { return errors.Is(h.d.Ready(), ErrConfig) })
	if h.api.refreshCount() < 2 {
		t.Errorf("RefreshSig calls = %d, want >= 2", h.api.refreshCount())
	}
	h.api.setAlways(im.APICreate, nil)
	h.api.setAlways(im.APIGet, nil)
	wantApplied(t, "Dispatch after the sig is accepted", res, 5*time.Second)
}

func TestConfigFailurePausesUntilFixed(t *testing.T) {
	h := newHarness(t, nil)
	bad := imErr(im.APICreate, im.CodeSigKeyMismatch)
	h.api.setAlways(im.APICreate, bad)
	h.api.setAlways(im.APIGet, imErr(im.APIGet, im.CodeSigKeyMismatch))
	h.run()
	testwait.For(t, 5*time.Second, "startup probe to detect the bad key", func() bool { return errors.Is(h.d.Ready(), ErrConfig) })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var results []<-chan result
	for i := range 5 {
		results = append(results, h.async(ctx, Task{Event: newEvent(fmt.Sprintf("user%d", i), "friends")}))
	}
	time.Sleep(100 * time.Millisecond)
	for i, ch := range results {
		select {
		case r := <-ch:
			t.Fatalf("event %d ended while paused: %+v, %v", i, r.o, r.err)
		default:
		}
	}
	if n := h.api.count(im.APICreate); n != 0 {
		t.Errorf("creates while paused = %d, want 0 (no event is at fault)", n)
	}
	if got := testutil.ToFloat64(h.m.Paused.WithLabelValues(ReasonConfig)); got != 1 {
		t.Errorf("paused{config} = %v, want 1", got)
	}
	err := h.d.Ready()
	if !strings.Contains(err.Error(), "70009") {
		t.Errorf("Ready = %v, want the code that caused it", err)
	}

	h.api.setAlways(im.APICreate, nil)
	h.api.setAlways(im.APIGet, nil)
	for i, ch := range results {
		wantApplied(t, fmt.Sprintf("event %d", i), ch, 5*time.Second)
	}
	if err := h.d.Ready(); err != nil {
		t.Errorf("Ready after fix = %v", err)
	}
	if got := testutil.ToFloat64(h.m.Paused.WithLabelValues(ReasonConfig)); got != 0 {
		t.Errorf("paused{config} = %v after resume, want 0", got)
	}
}

func TestConfigFailureMidStreamHoldsTheEvent(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.RetryBudget = time.Second })
	h.run()
	testwait.For(t, 5*time.Second, "startup probe", func() bool { return h.d.Ready() == nil })
	h.api.setAlways(im.APICreate, imErr(im.APICreate, im.CodeAppIDMismatch))
	res := h.async(context.Background(), Task{Event: newEvent("alice", "friends")})
	testwait.For(t, 5*time.Second, "config pause", func() bool { return errors.Is(h.d.Ready(), ErrConfig) })
	// The prober keeps failing (create is broken, and so is get now) while the fake clock runs
	// far past the retry budget: pause time must not count.
	h.api.setAlways(im.APIGet, imErr(im.APIGet, im.CodeAppIDMismatch))
	testwait.For(t, 5*time.Second, "probes", func() bool { return h.api.count(im.APIGet) > 20 })
	select {
	case r := <-res:
		t.Fatalf("event ended while paused: %+v, %v", r.o, r.err)
	default:
	}
	h.api.setAlways(im.APIGet, nil)
	h.api.setAlways(im.APICreate, nil)
	wantApplied(t, "Dispatch", res, 5*time.Second)
}

func TestPermanentRejected(t *testing.T) {
	for _, code := range []int{im.CodeTooManyContacts, im.CodeTooManyGroups, im.CodeNotImported, im.CodeBadParams, 99999} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			h := newHarness(t, nil)
			h.api.failCodes(im.APICreate, code, 1)
			o := h.dispatch(Task{Event: newEvent("alice", "friends")})
			// 50002 is also the duplicate-name code: one look-up finds no such group first.
			lookups := 0
			if code == im.CodeBadParams {
				lookups = 1
			}
			if o.Result != Rejected || o.Code != code || o.Attempts != 1+lookups {
				t.Fatalf("outcome = %+v, want rejected with %d after %d attempts", o, code, 1+lookups)
			}
			var det ResultDetail
			if err := json.Unmarshal(o.Detail, &det); err != nil {
				t.Fatalf("detail %s: %v", o.Detail, err)
			}
			if det.GroupName != "friends" || det.GroupID != 0 || len(det.Failed) != 2 || det.Failed[0].ResultCode != code {
				t.Errorf("detail = %s", o.Detail)
			}
			if !strings.Contains(string(o.Detail), `"To_Account":"bob"`) || !strings.Contains(string(o.Detail), `"ToGroupId":"@TGS#1"`) {
				t.Errorf("detail %s lacks the conversations in API form", o.Detail)
			}
			if h.api.count(im.APIGet) != lookups || h.api.count(im.APICreate) != 1 {
				t.Errorf("%d lookups and %d creates, want %d and 1", h.api.count(im.APIGet), h.api.count(im.APICreate), lookups)
			}
		})
	}
}

func TestGroupCheckFailedRetriedThenRejected(t *testing.T) {
	h := newHarness(t, nil)
	h.api.failCodes(im.APICreate, im.CodeGroupCheckFailed, 2)
	if o := h.dispatch(Task{Event: newEvent("alice", "a")}); o.Result != Applied || o.Attempts != 3 {
		t.Fatalf("two 51007 then success = %+v, want applied after 3", o)
	}
	h.api.failCodes(im.APICreate, im.CodeGroupCheckFailed, 5)
	o := h.dispatch(Task{Event: newEvent("alice", "b")})
	if o.Result != Rejected || o.Code != im.CodeGroupCheckFailed || o.Attempts != 1+DefaultGroupCheckRetries {
		t.Fatalf("persistent 51007 = %+v, want rejected after %d attempts", o, 1+DefaultGroupCheckRetries)
	}
}

func TestPartialResult(t *testing.T) {
	h := newHarness(t, nil)
	h.api.itemCodes[item("carol").Key()] = im.CodeTooManyContacts
	o := h.dispatch(Task{Event: newEvent("alice", "friends", c2c("bob"), c2c("carol"))})
	if o.Result != Partial || o.Code != im.CodeTooManyContacts || o.Attempts != 1 {
		t.Fatalf("outcome = %+v, want partial 51008", o)
	}
	var det ResultDetail
	if err := json.Unmarshal(o.Detail, &det); err != nil {
		t.Fatal(err)
	}
	g := h.api.group("alice", "friends")
	want := ResultDetail{GroupName: "friends", GroupID: g.id, Failed: []FailedContact{
		{Type: 1, ToAccount: "carol", ResultCode: im.CodeTooManyContacts, ResultInfo: "fake item failure"}}}
	if diff := cmp.Diff(want, det); diff != "" {
		t.Errorf("detail (-want +got):\n%s", diff)
	}
}

func TestPartialWithGroupCheckFailureRetriesOnlyMissing(t *testing.T) {
	h := newHarness(t, nil)
	key := im.ContactItem{Type: im.ContactGroup, ToGroupID: "@TGS#gone"}.Key()
	h.api.itemCodes[key] = im.CodeGroupCheckFailed
	ev := newEvent("alice", "friends", c2c("bob"), event.Contact{Type: event.ContactGroup, ToGroupID: "@TGS#gone"})
	o := h.dispatch(Task{Event: ev})
	if o.Result != Partial || o.Code != im.CodeGroupCheckFailed {
		t.Fatalf("outcome = %+v, want partial 51007 after retries", o)
	}
	if n := h.api.count(im.APICreate); n != 1 {
		t.Errorf("creates = %d, want 1 (retries go through update)", n)
	}
	if n := h.api.count(im.APIUpdate); n != DefaultGroupCheckRetries {
		t.Errorf("updates = %d, want %d", n, DefaultGroupCheckRetries)
	}
	if !strings.Contains(string(o.Detail), "@TGS#gone") || strings.Contains(string(o.Detail), "bob") {
		t.Errorf("detail %s should list only the failed conversation", o.Detail)
	}
}

func TestAmbiguousApplyThenTimeoutCreatesOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"50005", imErr(im.APICreate, im.CodeTimeout)},
		{"network", &im.Error{API: im.APICreate, Class: im.ClassTransient, Network: true, Err: errNetwork}},
		{"http 504", &im.Error{API: im.APICreate, Class: im.ClassTransient, HTTPStatus: http.StatusGatewayTimeout}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.api.fail(im.APICreate, step{err: tc.err, apply: true})
			o := h.dispatch(Task{Event: newEvent("alice", "friends")})
			if o.Result != Applied {
				t.Fatalf("outcome = %+v, want applied", o)
			}
			if n := h.api.groupCount("alice"); n != 1 {
				t.Fatalf("groups = %d, want exactly 1", n)
			}
			if c, g := h.api.count(im.APICreate), h.api.count(im.APIGet); c != 1 || g != 1 || o.Attempts != 2 {
				t.Errorf("creates %d, gets %d, attempts %d; want 1, 1, 2", c, g, o.Attempts)
			}
			if got := testutil.ToFloat64(h.m.UncertainChecks.WithLabelValues("true")); got != 1 {
				t.Errorf("uncertain_checks{found=true} = %v, want 1", got)
			}
		})
	}
}

func TestUncertainTask(t *testing.T) {
	t.Run("group present, missing contacts added", func(t *testing.T) {
		h := newHarness(t, nil)
		h.api.seed("alice", "friends", item("bob"))
		o := h.dispatch(Task{Event: newEvent("alice", "friends", c2c("bob"), c2c("carol")), Uncertain: true})
		if o.Result != Applied || o.Attempts != 2 {
			t.Fatalf("outcome = %+v, want applied via get+update", o)
		}
		if h.api.count(im.APICreate) != 0 {
			t.Error("created although the group existed")
		}
		g := h.api.group("alice", "friends")
		if len(g.contacts) != 2 || g.contacts[1] != item("carol") {
			t.Errorf("group contacts = %v, want bob and carol", g.contacts)
		}
	})
	t.Run("group complete, nothing to do", func(t *testing.T) {
		h := newHarness(t, nil)
		h.api.seed("alice", "friends", item("bob"))
		o := h.dispatch(Task{Event: newEvent("alice", "friends", c2c("bob")), ReplayCount: 1})
		if o.Result != Applied || o.Attempts != 1 || h.api.count(im.APIUpdate) != 0 {
			t.Fatalf("outcome = %+v, updates %d; want applied with one get", o, h.api.count(im.APIUpdate))
		}
	})
	t.Run("group absent, created", func(t *testing.T) {
		h := newHarness(t, nil)
		h.api.seed("alice", "other", item("bob"))
		o := h.dispatch(Task{Event: newEvent("alice", "friends"), ReplayCount: 2})
		if o.Result != Applied || h.api.count(im.APIGet) != 1 || h.api.count(im.APICreate) != 1 {
			t.Fatalf("outcome = %+v; want get then create", o)
		}
		if got := testutil.ToFloat64(h.m.UncertainChecks.WithLabelValues("false")); got != 1 {
			t.Errorf("uncertain_checks{found=false} = %v, want 1", got)
		}
	})
	t.Run("replay of a partial adds only failed, which fail again", func(t *testing.T) {
		h := newHarness(t, nil)
		h.api.seed("alice", "friends", item("bob"))
		h.api.itemCodes[item("carol").Key()] = im.CodeTooManyGroups
		o := h.dispatch(Task{Event: newEvent("alice", "friends", c2c("bob"), c2c("carol")), ReplayCount: 1})
		if o.Result != Partial || o.Code != im.CodeTooManyGroups {
			t.Fatalf("outcome = %+v, want partial", o)
		}
		var det ResultDetail
		if err := json.Unmarshal(o.Detail, &det); err != nil || det.GroupID == 0 || len(det.Failed) != 1 || det.Failed[0].ToAccount != "carol" {
			t.Errorf("detail = %s (%v)", o.Detail, err)
		}
	})
	t.Run("update rejected at top level is partial", func(t *testing.T) {
		h := newHarness(t, nil)
		h.api.seed("alice", "friends", item("bob"))
		h.api.failCodes(im.APIUpdate, im.CodeTooManyContacts, 1)
		o := h.dispatch(Task{Event: newEvent("alice", "friends", c2c("bob"), c2c("carol")), Uncertain: true})
		if o.Result != Partial || o.Code != im.CodeTooManyContacts || !strings.Contains(string(o.Detail), "carol") {
			t.Fatalf("outcome = %+v (%s), want partial listing carol", o, o.Detail)
		}
	})
	t.Run("update answers 51009: look again", func(t *testing.T) {
		h := newHarness(t, nil)
		h.api.seed("alice", "friends", item("bob"))
		h.api.failCodes(im.APIUpdate, im.CodeGroupNotFound, 1) // as if deleted and re-created meanwhile
		o := h.dispatch(Task{Event: newEvent("alice", "friends", c2c("bob"), c2c("carol")), Uncertain: true})
		if o.Result != Applied {
			t.Fatalf("outcome = %+v, want applied after looking again", o)
		}
		if u, g := h.api.count(im.APIUpdate), h.api.count(im.APIGet); u < 2 || g < 2 {
			t.Errorf("updates %d, gets %d; want the update retried after a second look", u, g)
		}
	})
	t.Run("get transient then found", func(t *testing.T) {
		h := newHarness(t, nil)
		h.api.seed("alice", "friends", item("bob"))
		h.api.failCodes(im.APIGet, 60008, 2)
		o := h.dispatch(Task{Event: newEvent("alice", "friends", c2c("bob")), Uncertain: true})
		if o.Result != Applied || h.api.count(im.APICreate) != 0 || o.Attempts != 3 {
			t.Fatalf("outcome = %+v, want applied after 3 gets and no create", o)
		}
	})
}

func TestInvalidEventNeverSent(t *testing.T) {
	h := newHarness(t, nil)
	ev := newEvent("alice", strings.Repeat("x", 33))
	o := h.dispatch(Task{Event: ev})
	if o.Result != Rejected || o.Code != im.CodeBadParams || o.Attempts != 0 || !strings.Contains(o.Info, "group_name") {
		t.Fatalf("outcome = %+v, want rejected 50002 naming group_name with 0 attempts", o)
	}
	if o := h.dispatch(Task{}); o.Result != Rejected || o.Attempts != 0 {
		t.Fatalf("nil event = %+v", o)
	}
	if n := h.api.count(im.APICreate) + h.api.count(im.APIGet); n != 0 {
		t.Errorf("calls = %d, want 0", n)
	}
}

func TestOutagePausesInsteadOfExhausting(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.RetryBudget = 2 * time.Minute
		c.ProbeInterval = 10 * time.Second
		c.OutageSpan = time.Hour // the fake clock races ahead while 30 events back off at once
		c.BackoffBase, c.BackoffMax = time.Second, 4*time.Second
	})
	h.run()
	testwait.For(t, 5*time.Second, "startup probe", func() bool { return h.d.Ready() == nil })
	down := imErr(im.APICreate, 70500)
	h.api.setAlways(im.APICreate, down)
	h.api.setAlways(im.APIGet, imErr(im.APIGet, 70500))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var results []<-chan result
	for i := range 30 {
		results = append(results, h.async(ctx, Task{Event: newEvent(fmt.Sprintf("user%d", i), "friends")}))
	}
	testwait.For(t, 5*time.Second, "outage pause", func() bool { return testutil.ToFloat64(h.m.Paused.WithLabelValues(ReasonOutage)) == 1 })
	if err := h.d.Ready(); err != nil {
		t.Errorf("Ready during an outage = %v, want nil", err)
	}
	// Probes fail for a while (each advancing the fake clock by ProbeInterval), far past the
	// retry budget.
	testwait.For(t, 5*time.Second, "probes", func() bool { return h.api.count(im.APIGet) > 40 })
	calls := h.api.count(im.APICreate)
	time.Sleep(20 * time.Millisecond)
	if h.api.count(im.APICreate) != calls {
		t.Error("creates continue while paused for an outage")
	}
	h.api.setAlways(im.APICreate, nil)
	h.api.setAlways(im.APIGet, nil)
	for i, ch := range results {
		wantApplied(t, fmt.Sprintf("event %d after the outage", i), ch, 10*time.Second)
	}
	if got := testutil.ToFloat64(h.m.Paused.WithLabelValues(ReasonOutage)); got != 0 {
		t.Errorf("paused{outage} = %v after recovery", got)
	}
}

func TestShutdownReturnsPromptly(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tweak func(*Config)
		setup func(*fakeAPI)
	}{
		{"paused", nil, func(f *fakeAPI) {
			f.setAlways(im.APICreate, imErr(im.APICreate, im.CodeSigKeyMismatch))
			f.setAlways(im.APIGet, imErr(im.APIGet, im.CodeSigKeyMismatch))
		}},
		{"backing off", func(c *Config) {
			c.Sleep = sleep // real time: a 10-minute backoff
			c.BackoffBase, c.BackoffMax = 10*time.Minute, 10*time.Minute
		}, func(f *fakeAPI) { f.setAlways(im.APICreate, imErr(im.APICreate, 60008)) }},
		{"no share yet", func(c *Config) { c.Limiter.Standalone = false }, nil},
		{"call in flight", nil, func(f *fakeAPI) { f.gate = make(chan struct{}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.tweak)
			if tc.setup != nil {
				tc.setup(h.api)
			}
			h.run()
			ctx, cancel := context.WithCancel(context.Background())
			res := h.async(ctx, Task{Event: newEvent("alice", "friends")})
			time.Sleep(50 * time.Millisecond)
			cancel()
			select {
			case r := <-res:
				if r.err == nil || !errors.Is(r.err, context.Canceled) {
					t.Fatalf("Dispatch after cancel = %+v, %v; want context.Canceled and no outcome", r.o, r.err)
				}
				if r.o.Result != Applied || r.o.Attempts != 0 || r.o.Detail != nil {
					t.Errorf("outcome %+v returned with the error", r.o)
				}
			case <-time.After(time.Second):
				t.Fatal("Dispatch did not return within 1s of cancel")
			}
		})
	}
}

func mustNew(t *testing.T, cfg Config) *Dispatcher {
	t.Helper()
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestReadyBeforeAndAfterStartupProbe(t *testing.T) {
	h := newHarness(t, nil)
	if err := h.d.Ready(); !errors.Is(err, ErrUnverified) {
		t.Fatalf("Ready before any call = %v, want ErrUnverified", err)
	}
	h.run()
	testwait.For(t, 5*time.Second, "ready", func() bool { return h.d.Ready() == nil })
	// A permanent answer to the probe (say the probe account is not imported) still proves
	// the credentials.
	h2 := newHarness(t, nil)
	h2.api.setAlways(im.APIGet, imErr(im.APIGet, im.CodeNotImported))
	h2.run()
	testwait.For(t, 5*time.Second, "ready on a permanent probe answer", func() bool { return h2.d.Ready() == nil })
}

func TestConfigValidate(t *testing.T) {
	api := newFakeAPI()
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"defaults", Config{API: api}, nil},
		{"no api", Config{}, []string{"dispatcher config: api: API is required"}},
		{"negative rate", Config{API: api, RateLimit: -1}, []string{"rate limit: rate limits must be positive, got -1"}},
		{"negative get rate", Config{API: api, GetRateLimit: -1}, []string{"get rate limit: rate limits must be positive, got -1"}},
		{"negative update rate", Config{API: api, UpdateRateLimit: -1}, []string{"update rate limit: rate limits must be positive, got -1"}},
		{"negative delete rate", Config{API: api, DeleteRateLimit: -1}, []string{"delete rate limit: rate limits must be positive, got -1"}},
		{"negative retry budget", Config{API: api, RetryBudget: -1}, []string{"retry budget: -1ns is negative"}},
		{"negative backoff base", Config{API: api, BackoffBase: -1}, []string{"backoff base: -1ns is negative"}},
		{"backoff max below base", Config{API: api, BackoffBase: time.Second, BackoffMax: time.Millisecond}, []string{"backoff max: 1ms below backoff base 1s"}},
		{"negative probe interval", Config{API: api, ProbeInterval: -1}, []string{"probe interval: -1ns is negative"}},
		{"outage window", Config{API: api, OutageWindow: -1}, []string{"outage window: -1 must be positive"}},
		{"outage span", Config{API: api, OutageSpan: -1}, []string{"outage span: -1ns must be positive"}},
		{"outage accounts", Config{API: api, OutageAccounts: -1}, []string{"outage accounts: -1 must be positive"}},
		{"ratio above 1", Config{API: api, OutageRatio: 1.5}, []string{"outage ratio: 1.5 outside 0-1"}},
		{"group check retries", Config{API: api, GroupCheckRetries: -1}, []string{"group check retries: -1 is negative"}},
		{"duplicate names", Config{API: api, DuplicateNames: "allow"}, []string{`duplicate names: "allow": want merge or reject`}},
		// The limiter's problems are the dispatcher's (each of them is tested in ratelimit).
		{"limiter", Config{API: api, Limiter: ratelimit.Config{JitterMargin: time.Second, SlowDownFactor: 1}},
			[]string{"dispatcher config: ratelimit config: jitter margin: 1s outside", "slow-down factor: 1 outside"}},
		{"late arrival shift off", Config{API: api, Limiter: ratelimit.Config{LateArrivalMax: ratelimit.LateArrivalOff}}, nil},
		{"everything", Config{
			RateLimit: -1, GetRateLimit: -1, UpdateRateLimit: -1, DeleteRateLimit: -1, RetryBudget: -1, BackoffBase: -1, ProbeInterval: -1,
			OutageWindow: -1, OutageSpan: -1, OutageAccounts: -1, OutageRatio: 2, GroupCheckRetries: -1,
			DuplicateNames: "x", Limiter: ratelimit.Config{JitterMargin: -1, RecoverStep: -1},
		}, []string{"api", "rate limit", "get rate limit", "update rate limit", "delete rate limit", "retry budget", "backoff base", "probe interval",
			"outage window", "outage span", "outage accounts", "outage ratio", "group check retries",
			"duplicate names", "ratelimit config: jitter margin", "recover step"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			configtest.Problems(t, tc.cfg.Validate(), tc.want...)
			if _, err := New(tc.cfg); (err == nil) != (len(tc.want) == 0) {
				t.Errorf("New error %v disagrees with Validate", err)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	var c Config
	c.setDefaults()
	if c.RateLimit != DefaultRateLimit || c.GetRateLimit != DefaultRateLimit || c.UpdateRateLimit != DefaultRateLimit ||
		c.DeleteRateLimit != DefaultRateLimit ||
		c.DuplicateNames != DuplicateMerge || c.Logger == nil || c.Metrics == nil || c.Now == nil || c.Sleep == nil {
		t.Errorf("defaults not applied: %+v", c)
	}
	// The limiter's clock, logger and metrics are the dispatcher's unless set.
	if c.Limiter.Logger != c.Logger || c.Limiter.Metrics != c.Metrics || c.Limiter.Now == nil || c.Limiter.Sleep == nil {
		t.Errorf("limiter defaults not the dispatcher's: %+v", c.Limiter)
	}
	now := func() time.Time { return time.Unix(7, 0) }
	c = Config{RateLimit: 50, Now: now, Limiter: ratelimit.Config{LateArrivalMax: ratelimit.LateArrivalOff}}
	c.setDefaults()
	if c.RateLimit != 50 || c.GetRateLimit != DefaultRateLimit || c.Limiter.LateArrivalMax != ratelimit.LateArrivalOff ||
		!c.Limiter.Now().Equal(time.Unix(7, 0)) {
		t.Errorf("set values overwritten: %+v", c)
	}
}

func TestPauseStopsCallsQueuedInTheLimiter(t *testing.T) {
	// Real time at 50 calls/s: 20ms between grants, so most events are still queued in the
	// limiter when the first answers arrive.
	h := newHarness(t, func(c *Config) { c.RateLimit, c.Now, c.Sleep = 50, time.Now, sleep })
	h.api.setAlways(im.APICreate, imErr(im.APICreate, im.CodeSigKeyMismatch))
	gate := make(chan struct{})
	h.api.gate = gate // the first creates hang until the rest have queued in the limiter
	ctx, cancel := context.WithCancel(context.Background())
	var results []<-chan result
	for i := range 50 {
		results = append(results, h.async(ctx, Task{Event: newEvent(fmt.Sprintf("user%d", i), "friends")}))
	}
	time.Sleep(100 * time.Millisecond)
	h.api.mu.Lock()
	inFlight := h.api.entered
	h.api.mu.Unlock()
	close(gate)
	testwait.For(t, 5*time.Second, "config pause", func() bool { return errors.Is(h.d.Ready(), ErrConfig) })
	time.Sleep(300 * time.Millisecond)
	if n := h.api.count(im.APICreate); n > inFlight+2 || n > 20 {
		t.Errorf("creates = %d: events queued in the limiter kept calling after the pause", n)
	}
	cancel()
	for _, ch := range results {
		if r := <-ch; r.err == nil {
			t.Fatalf("event ended while paused: %+v", r.o)
		}
	}
}

func TestCheckPagesThroughContacts(t *testing.T) {
	h := newHarness(t, nil)
	h.api.pageSize = 2
	h.api.seed("alice", "other", item("a1"), item("a2"), item("a3"))
	h.api.seed("alice", "friends", item("x1"), item("x2"), item("x3"))
	o := h.dispatch(Task{Event: newEvent("alice", "friends", c2c("x1"), c2c("x2"), c2c("x3")), Uncertain: true})
	if o.Result != Applied {
		t.Fatalf("outcome = %+v", o)
	}
	if gets := h.api.count(im.APIGet); gets != 3 || o.Attempts != 3 {
		t.Errorf("gets = %d, attempts = %d; want 3 pages of 2 for 6 conversations", gets, o.Attempts)
	}
	if n := h.api.count(im.APIUpdate) + h.api.count(im.APICreate); n != 0 {
		t.Errorf("%d writes, want none: every conversation is on some page", n)
	}
}

// retryingAccount fails every create of one account.
type retryingAccount struct {
	*fakeAPI
	account string
}

func (r retryingAccount) CreateContactGroup(ctx context.Context, req *im.CreateRequest) (*im.CreateResponse, error) {
	if req.FromAccount == r.account {
		return nil, imErr(im.APICreate, 60008)
	}
	return r.fakeAPI.CreateContactGroup(ctx, req)
}

func TestRetryingAccountDoesNotStallOthers(t *testing.T) {
	api := newFakeAPI()
	m := metrics.NewNop()
	d := mustNew(t, Config{API: retryingAccount{api, "slow"}, Limiter: ratelimit.Config{Standalone: true}, Metrics: m,
		BackoffBase: time.Minute, BackoffMax: time.Minute}) // real clock: "slow" sleeps for up to a minute
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slow := make(chan error, 1)
	go func() {
		_, err := d.Dispatch(ctx, Task{Event: newEvent("slow", "friends")})
		slow <- err
	}()
	testwait.For(t, 5*time.Second, "the slow account's first retry", func() bool {
		return testutil.ToFloat64(m.Retries.WithLabelValues(im.APICreate, "60008")) >= 1
	})
	start := time.Now()
	for i := range 5 {
		o, err := d.Dispatch(ctx, Task{Event: newEvent(fmt.Sprintf("fast%d", i), "friends")})
		if err != nil || o.Result != Applied {
			t.Fatalf("fast%d: %+v, %v", i, o, err)
		}
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("other accounts took %v while one account backed off", took)
	}
	select {
	case err := <-slow:
		t.Fatalf("slow account ended early: %v", err)
	default:
	}
	cancel()
	if err := <-slow; !errors.Is(err, context.Canceled) {
		t.Errorf("slow account after cancel: %v", err)
	}
}

// TestFrequencyLimitInItemResultsSlowsDown: 60007 inside the per-conversation results of an
// answer whose ErrorCode is 0 is the server saying we are over the quota, as much as a 60007 on
// the whole call; the limiter must slow down for it too.
func TestFrequencyLimitInItemResultsSlowsDown(t *testing.T) {
	for _, api := range []string{im.APICreate, im.APIUpdate} {
		t.Run(api, func(t *testing.T) {
			var (
				d      *Dispatcher
				mu     sync.Mutex
				lowest = 20.0
			)
			h := newHarness(t, func(c *Config) {
				c.RateLimit, c.GetRateLimit, c.UpdateRateLimit = 20, 20, 20
				c.RetryBudget = 3 * time.Second
				c.BackoffBase, c.BackoffMax = 5*time.Millisecond, 20*time.Millisecond
				sleep := c.Sleep
				c.Sleep = func(ctx context.Context, dur time.Duration) error {
					if d != nil {
						r := d.limiterFor(api).Rate()
						mu.Lock()
						lowest = min(lowest, r)
						mu.Unlock()
					}
					return sleep(ctx, dur)
				}
			})
			d = h.d
			h.api.itemCodes[item("carol").Key()] = im.CodeFrequency
			// Four accounts at once: each one's first create is answered with a 60007 item, and
			// its retries go through update (the group exists).
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var results []<-chan result
			for i := range 4 {
				results = append(results, h.async(ctx, Task{Event: newEvent(fmt.Sprintf("user%d", i), "friends", c2c("bob"), c2c("carol"))}))
			}
			for _, ch := range results {
				if r := <-ch; r.err != nil || r.o.Result != Exhausted {
					t.Fatalf("outcome = %+v, %v; want exhausted (60007 items are retried)", r.o, r.err)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if lowest > 20*ratelimit.DefaultSlowDownFactor+1e-9 {
				t.Errorf("lowest %s rate while items were answered 60007 = %v, want <= %v", api, lowest, 20*ratelimit.DefaultSlowDownFactor)
			}
		})
	}
}
