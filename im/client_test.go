package im

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/chatgroupd/chatgroupd/internal/configtest"
)

// recorder is a hand-written IM server: it answers each call with the next scripted reply and
// remembers the query strings it saw.
type recorder struct {
	mu      sync.Mutex
	replies []reply
	queries []url.Values
	bodies  []string
}

type reply struct {
	status int
	body   string
	hang   bool // block until the client gives up
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	rec.mu.Lock()
	rec.queries = append(rec.queries, r.URL.Query())
	rec.bodies = append(rec.bodies, string(b))
	rp := reply{status: 200, body: `{"ActionStatus":"OK","ErrorCode":0}`}
	if len(rec.replies) > 0 {
		rp = rec.replies[0]
		if len(rec.replies) > 1 {
			rec.replies = rec.replies[1:]
		}
	}
	rec.mu.Unlock()
	if rp.hang {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
		return
	}
	w.WriteHeader(rp.status)
	io.WriteString(w, rp.body)
}

func (rec *recorder) calls() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return len(rec.queries)
}

type fixture struct {
	c    *Client
	rec  *recorder
	srv  *httptest.Server
	obs  *countObserver
	logs *observer.ObservedLogs
	now  *time.Time
	mu   *sync.Mutex
}

// countObserver counts the requests the client reports, by api and code.
type countObserver struct {
	mu   sync.Mutex
	n    map[[2]string]int
	took []time.Duration
}

func (o *countObserver) RequestDone(api, code string, took time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n == nil {
		o.n = map[[2]string]int{}
	}
	o.n[[2]string{api, code}]++
	o.took = append(o.took, took)
}

func (o *countObserver) count(api, code string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[[2]string{api, code}]
}

func newFixture(t *testing.T, replies ...reply) *fixture {
	t.Helper()
	rec := &recorder{replies: replies}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	core, logs := observer.New(zapcore.DebugLevel)
	obs := &countObserver{}
	now := time.Unix(1700000000, 0)
	var mu sync.Mutex
	c, err := New(Config{SDKAppID: 1400000000, SecretKey: katKey, BaseURL: srv.URL, Observer: obs,
		Logger: zap.New(core), Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{c: c, rec: rec, srv: srv, obs: obs, logs: logs, now: &now, mu: &mu}
}

func (f *fixture) advance(d time.Duration) {
	f.mu.Lock()
	*f.now = f.now.Add(d)
	f.mu.Unlock()
}

// assertNoSig fails when err or any log line mentions the UserSig in any form.
func (f *fixture) assertNoSig(t *testing.T, err error) {
	t.Helper()
	f.rec.mu.Lock()
	var sigs []string
	for _, q := range f.rec.queries {
		sigs = append(sigs, q.Get("usersig"), url.QueryEscape(q.Get("usersig")))
	}
	f.rec.mu.Unlock()
	f.c.mu.Lock()
	sigs = append(sigs, f.c.sig, url.QueryEscape(f.c.sig))
	f.c.mu.Unlock()
	texts := []string{}
	if err != nil {
		texts = append(texts, err.Error(), fmt.Sprintf("%+v", err))
	}
	for _, e := range f.logs.All() {
		b, _ := json.Marshal(e.ContextMap())
		texts = append(texts, e.Message, string(b))
	}
	for _, s := range sigs {
		if len(s) < 16 {
			continue
		}
		for _, txt := range texts {
			if strings.Contains(txt, s) || strings.Contains(txt, s[:16]) {
				t.Fatalf("usersig leaked into %q", txt)
			}
		}
	}
}

func createReq() *CreateRequest {
	return &CreateRequest{FromAccount: "alice", GroupContactItem: []GroupContactItem{{GroupName: "g",
		ContactItem: []ContactItem{{Type: 1, ToAccount: "bob"}, {Type: 1, ToAccount: "carol"}}}}}
}

func TestClientErrorClasses(t *testing.T) {
	fail := func(code int) reply {
		return reply{status: 200, body: fmt.Sprintf(`{"ActionStatus":"FAIL","ErrorCode":%d,"ErrorInfo":"boom %d","Extra":1}`, code, code)}
	}
	tests := []struct {
		name       string
		reply      reply
		class      Class
		code       int
		status     int
		network    bool
		malformed  bool
		ambiguous  bool
		metricCode string
		calls      int
		wantErr    error
	}{
		{"server error", fail(50004), ClassTransient, 50004, 200, false, false, true, "50004", 1, nil},
		{"server timeout", fail(50005), ClassTransient, 50005, 200, false, false, true, "50005", 1, nil},
		{"frequency", fail(60007), ClassRateLimited, 60007, 200, false, false, false, "60007", 1, nil},
		{"sig expired twice", fail(70001), ClassCredentials, 70001, 200, false, false, false, "70001", 2, nil},
		{"sig invalidated twice", fail(70052), ClassCredentials, 70052, 200, false, false, false, "70052", 2, nil},
		{"bad sig", fail(70003), ClassConfig, 70003, 200, false, false, false, "70003", 1, nil},
		{"not admin", fail(50003), ClassConfig, 50003, 200, false, false, false, "50003", 1, nil},
		{"not imported", fail(50001), ClassPermanent, 50001, 200, false, false, false, "50001", 1, nil},
		{"bad params", fail(50002), ClassPermanent, 50002, 200, false, false, false, "50002", 1, nil},
		{"unknown code", fail(99999), ClassPermanent, 99999, 200, false, false, false, "99999", 1, nil},
		{"http 502", reply{status: 502, body: "<html>bad gateway</html>"}, ClassTransient, 0, 502, false, false, true, "http_502", 1, nil},
		{"http 500", reply{status: 500}, ClassTransient, 0, 500, false, false, true, "http_500", 1, nil},
		{"http 429", reply{status: 429}, ClassRateLimited, 0, 429, false, false, false, "http_429", 1, nil},
		{"http 404", reply{status: 404}, ClassConfig, 0, 404, false, false, false, "http_404", 1, nil},
		{"redirect not followed", reply{status: 302}, ClassTransient, 0, 302, false, false, false, "http_302", 1, nil},
		{"malformed json", reply{status: 200, body: `{"ActionStatus":"OK","ErrorCode":0,`}, ClassTransient, 0, 200, false, true, true, "network", 1, ErrMalformedResponse},
		{"html 200", reply{status: 200, body: `<html>proxy</html>`}, ClassTransient, 0, 200, false, true, true, "network", 1, ErrMalformedResponse},
		{"empty object", reply{status: 200, body: `{}`}, ClassTransient, 0, 200, false, true, true, "network", 1, ErrMalformedResponse},
		{"oversized", reply{status: 200, body: `{"ActionStatus":"OK","ErrorCode":0,"Pad":"` + strings.Repeat("x", DefaultMaxResponseBytes) + `"}`},
			ClassTransient, 0, 200, false, true, true, "network", 1, ErrResponseTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.reply)
			resp, err := f.c.CreateContactGroup(context.Background(), createReq())
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v (%T), want *Error", err, err)
			}
			if resp != nil {
				t.Errorf("resp = %+v on failure", resp)
			}
			if e.Class != tt.class || e.Code != tt.code || e.HTTPStatus != tt.status || e.Network != tt.network ||
				e.Malformed != tt.malformed || e.Ambiguous() != tt.ambiguous || e.MetricCode() != tt.metricCode || e.Partial {
				t.Errorf("error %+v (ambiguous %v, metric %s)", e, e.Ambiguous(), e.MetricCode())
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.wantErr)
			}
			if ClassOf(err) != tt.class {
				t.Errorf("ClassOf = %v", ClassOf(err))
			}
			if n := f.rec.calls(); n != tt.calls {
				t.Errorf("%d HTTP calls, want %d", n, tt.calls)
			}
			if v := f.obs.count(APICreate, tt.metricCode); v != tt.calls {
				t.Errorf("api_requests{code=%s} = %v", tt.metricCode, v)
			}
			if e.API != APICreate || !strings.HasPrefix(err.Error(), "im create_contact_group: ") {
				t.Errorf("message %q", err.Error())
			}
			f.assertNoSig(t, err)
		})
	}
}

func TestClientPartialCreate(t *testing.T) {
	f := newFixture(t, reply{status: 200, body: `{"ActionStatus":"OK","ErrorCode":0,"GroupResultItem":[{"GroupItem":{"GroupName":"g","GroupId":7},
		"ResultItem":[{"ContactItem":{"Type":1,"To_Account":"bob"},"ResultCode":0},{"ContactItem":{"Type":1,"To_Account":"carol"},"ResultCode":51008,"ResultInfo":"too many"}]}]}`})
	resp, err := f.c.CreateContactGroup(context.Background(), createReq())
	var e *Error
	if !errors.As(err, &e) || !e.Partial {
		t.Fatalf("err = %v, want partial *Error", err)
	}
	if resp == nil || resp.GroupResultItem[0].GroupItem.GroupID != 7 {
		t.Fatalf("resp = %+v", resp)
	}
	if e.Code != 51008 || e.Info != "too many" || e.Class != ClassPermanent || e.Group == nil || e.Group.GroupID != 7 ||
		len(e.Results) != 2 || e.Results[1].ContactItem.ToAccount != "carol" || e.Ambiguous() {
		t.Errorf("error %+v", e)
	}
	if !strings.Contains(e.Error(), "partial result: code 51008") {
		t.Errorf("message %q", e.Error())
	}
}

func TestClientTopLevelFailureKeepsResults(t *testing.T) {
	f := newFixture(t, reply{status: 200, body: `{"ActionStatus":"FAIL","ErrorCode":51008,"ErrorInfo":"full","GroupResultItem":[{"GroupItem":{"GroupName":"","GroupId":0},
		"ResultItem":[{"ContactItem":{"Type":1,"To_Account":"bob"},"ResultCode":51008}]}]}`})
	_, err := f.c.CreateContactGroup(context.Background(), createReq())
	var e *Error
	if !errors.As(err, &e) || e.Partial || e.Code != 51008 || len(e.Results) != 1 || e.Group != nil {
		t.Fatalf("err = %+v", e)
	}
}

func TestClientPartialUpdate(t *testing.T) {
	f := newFixture(t, reply{status: 200, body: `{"ActionStatus":"OK","ErrorCode":0,"UpdateGroupResult":{"GroupName":"g","GroupId":3,
		"ContactResultItem":[{"ContactOptType":1,"ContactItem":{"Type":2,"ToGroupId":"@x"},"ResultCode":51007,"ResultInfo":"dismissed"}]}}`})
	resp, err := f.c.UpdateContactGroup(context.Background(), &UpdateRequest{FromAccount: "a", UpdateType: 1,
		UpdateGroup: UpdateGroup{UpdateGroupType: 2, OldGroupName: "g", ContactUpdateItem: []ContactUpdateItem{{ContactOptType: 1, ContactItem: ContactItem{Type: 2, ToGroupID: "@x"}}}}})
	var e *Error
	if !errors.As(err, &e) || !e.Partial || resp == nil {
		t.Fatalf("resp %+v err %v", resp, err)
	}
	if e.API != APIUpdate || e.Code != 51007 || e.Group.GroupID != 3 || len(e.Results) != 1 {
		t.Errorf("error %+v", e)
	}
}

func TestClientResignsOnce(t *testing.T) {
	f := newFixture(t,
		reply{status: 200, body: `{"ActionStatus":"FAIL","ErrorCode":70001,"ErrorInfo":"expired"}`},
		reply{status: 200, body: `{"ActionStatus":"OK","ErrorCode":0,"GroupItem":[{"GroupName":"g","GroupId":1}],"CompleteFlag":1}`})
	f.advance(time.Minute) // so the regenerated sig differs from the first
	resp, err := f.c.GetContactGroup(context.Background(), &GetRequest{FromAccount: "a"})
	if err != nil || len(resp.GroupItem) != 1 {
		t.Fatalf("resp %+v err %v", resp, err)
	}
	if n := f.rec.calls(); n != 2 {
		t.Fatalf("%d calls", n)
	}
	q0, q1 := f.rec.queries[0], f.rec.queries[1]
	if q0.Get("usersig") == q1.Get("usersig") {
		t.Error("retry reused the rejected sig")
	}
	if q0.Get("random") == q1.Get("random") {
		t.Error("random repeated")
	}
	if err := VerifyUserSig(katKey, 1400000000, DefaultAdmin, q1.Get("usersig"), *f.now); err != nil {
		t.Errorf("new sig: %v", err)
	}
	if v := f.obs.count(APIGet, "70001"); v != 1 {
		t.Errorf("70001 count %v", v)
	}
	if v := f.obs.count(APIGet, "0"); v != 1 {
		t.Errorf("ok count %v", v)
	}
	if len(f.obs.took) != 2 || f.obs.took[0] <= 0 || f.obs.took[1] <= 0 {
		t.Errorf("durations reported %v, want two positive", f.obs.took)
	}
	f.assertNoSig(t, err)
}

func TestClientRequestShape(t *testing.T) {
	f := newFixture(t)
	for range 3 {
		if _, err := f.c.DelContactGroup(context.Background(), &DeleteRequest{FromAccount: "a", GroupName: []string{"g"}}); err != nil {
			t.Fatal(err)
		}
	}
	randoms := map[string]bool{}
	for _, q := range f.rec.queries {
		if q.Get("sdkappid") != "1400000000" || q.Get("identifier") != DefaultAdmin || q.Get("contenttype") != "json" || q.Get("usersig") == "" {
			t.Errorf("query %v", q)
		}
		if _, err := fmt.Sscan(q.Get("random"), new(uint32)); err != nil {
			t.Errorf("random %q: %v", q.Get("random"), err)
		}
		randoms[q.Get("random")] = true
	}
	if len(randoms) != 3 {
		t.Errorf("random values %v", randoms)
	}
	if f.rec.bodies[0] != `{"From_Account":"a","GroupName":["g"]}` {
		t.Errorf("body %s", f.rec.bodies[0])
	}
}

func TestClientSigRenewal(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	sigAt := func() string {
		if _, err := f.c.GetContactGroup(ctx, &GetRequest{FromAccount: "a"}); err != nil {
			t.Fatal(err)
		}
		return f.rec.queries[len(f.rec.queries)-1].Get("usersig")
	}
	s0 := sigAt()
	f.advance(DefaultSigTTL*4/5 - time.Second)
	if sigAt() != s0 {
		t.Error("sig regenerated before 80% of its life")
	}
	f.advance(time.Second)
	s1 := sigAt()
	if s1 == s0 {
		t.Error("sig not regenerated at 80% of its life")
	}
	if err := VerifyUserSig(katKey, 1400000000, DefaultAdmin, s1, f.now.Add(DefaultSigTTL)); err != nil {
		t.Errorf("renewed sig: %v", err)
	}
	f.c.RefreshSig()
	f.advance(time.Second)
	f.c.RefreshSig()
	if sigAt() == s1 {
		t.Error("RefreshSig did not regenerate")
	}
}

func TestClientTimeouts(t *testing.T) {
	t.Run("client timeout", func(t *testing.T) {
		f := newFixture(t, reply{hang: true})
		f.c.timeout = 100 * time.Millisecond // Validate insists on > 3s; don't wait that long here
		start := time.Now()
		_, err := f.c.CreateContactGroup(context.Background(), createReq())
		checkNetwork(t, f, err, context.DeadlineExceeded)
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("took %v", d)
		}
	})
	t.Run("caller deadline", func(t *testing.T) {
		f := newFixture(t, reply{hang: true})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := f.c.CreateContactGroup(ctx, createReq())
		checkNetwork(t, f, err, context.DeadlineExceeded)
	})
	t.Run("caller cancel", func(t *testing.T) {
		f := newFixture(t, reply{hang: true})
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		_, err := f.c.CreateContactGroup(ctx, createReq())
		checkNetwork(t, f, err, context.Canceled)
	})
	t.Run("connection refused", func(t *testing.T) {
		f := newFixture(t)
		f.srv.Close()
		_, err := f.c.CreateContactGroup(context.Background(), createReq())
		checkNetwork(t, f, err, nil)
	})
}

func checkNetwork(t *testing.T, f *fixture, err error, cause error) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || !e.Network || e.Class != ClassTransient || !e.Ambiguous() || e.MetricCode() != "network" {
		t.Fatalf("err = %#v", err)
	}
	if cause != nil && !errors.Is(err, cause) {
		t.Errorf("errors.Is(%v, %v) = false", err, cause)
	}
	if !strings.Contains(err.Error(), "usersig=REDACTED") {
		t.Errorf("expected the redacted URL in %q", err.Error())
	}
	f.assertNoSig(t, err)
}

func TestClientGetAll(t *testing.T) {
	page := func(start, next, complete int, groups string) reply {
		return reply{status: 200, body: fmt.Sprintf(`{"ActionStatus":"OK","ErrorCode":0,"GroupItem":[%s],
			"ContactItem":[{"Type":1,"To_Account":"u%d","ContactGroupId":[1]}],"CompleteFlag":%d,"NextStartIndex":%d}`, groups, start, complete, next)}
	}
	g1, g12 := `{"GroupName":"a","GroupId":1}`, `{"GroupName":"a","GroupId":1},{"GroupName":"b","GroupId":2}`
	f := newFixture(t, page(0, 1, 0, g1), page(1, 2, 0, g12), page(2, 3, 1, g12))
	groups, contacts, err := f.c.GetAllContactGroups(context.Background(), "x")
	if err != nil || len(groups) != 2 || len(contacts) != 3 || contacts[2].ToAccount != "u2" {
		t.Fatalf("groups %v contacts %v err %v", groups, contacts, err)
	}
	var starts []int
	for _, b := range f.rec.bodies {
		var r GetRequest
		if err := json.Unmarshal([]byte(b), &r); err != nil {
			t.Fatal(err)
		}
		starts = append(starts, r.StartIndex)
	}
	if diff := cmp.Diff([]int{0, 1, 2}, starts); diff != "" {
		t.Errorf("start indexes (-want +got):\n%s", diff)
	}

	stuck := newFixture(t, page(0, 0, 0, g1))
	if _, _, err := stuck.c.GetAllContactGroups(context.Background(), "x"); !errors.Is(err, ErrMalformedResponse) || ClassOf(err) != ClassTransient {
		t.Errorf("non-advancing pages: %v", err)
	}
	failing := newFixture(t, page(0, 1, 0, g1), reply{status: 200, body: `{"ActionStatus":"FAIL","ErrorCode":50001}`})
	if _, _, err := failing.c.GetAllContactGroups(context.Background(), "x"); ClassOf(err) != ClassPermanent {
		t.Errorf("failing page: %v", err)
	}
}

func TestClientGetAllBounded(t *testing.T) {
	var n int
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		i := n
		mu.Unlock()
		fmt.Fprintf(w, `{"ActionStatus":"OK","ErrorCode":0,"CompleteFlag":0,"NextStartIndex":%d}`, i)
	}))
	defer srv.Close()
	c, err := New(Config{SDKAppID: 1, SecretKey: "k", BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.GetAllContactGroups(context.Background(), "x"); !errors.Is(err, ErrMalformedResponse) {
		t.Fatalf("endless pages: %v", err)
	}
	if n != maxGetPages {
		t.Errorf("%d pages fetched", n)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{SDKAppID: 1, SecretKey: "k"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		edit func(*Config)
		want []string
	}{
		{"no appid", func(c *Config) { c.SDKAppID = 0 }, []string{"im config: sdkappid: must be positive"}},
		{"no key", func(c *Config) { c.SecretKey = "" }, []string{"secret key: is empty"}},
		{"timeout 3s", func(c *Config) { c.Timeout = 3 * time.Second }, []string{"timeout: 3s must exceed"}},
		{"unknown region", func(c *Config) { c.Region = "mars" }, []string{`region: unknown region "mars"`}},
		{"region ignored with base url", func(c *Config) { c.Region = "mars"; c.BaseURL = "http://h" }, nil},
		{"bad base url", func(c *Config) { c.BaseURL = "127.0.0.1:8080" }, []string{"base url:"}},
		{"base url query", func(c *Config) { c.BaseURL = "http://h/?x=1" }, []string{"base url:"}},
		{"tiny body cap", func(c *Config) { c.MaxResponseBytes = 10 }, []string{"max response bytes: 10 below 1024"}},
		{"short sig ttl", func(c *Config) { c.SigTTL = time.Second }, []string{"sig ttl: 1s below one minute"}},
		{"long admin name", func(c *Config) { c.Admin = strings.Repeat("a", 33) }, []string{"admin: identifier over 32 bytes"}},
		{"everything", func(c *Config) {
			*c = Config{Admin: strings.Repeat("a", 33), Timeout: time.Second, MaxResponseBytes: 1, SigTTL: 1, Region: "mars"}
		}, []string{"sdkappid", "secret key", "admin", "timeout", "max response bytes", "sig ttl", "region"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			configtest.Problems(t, c.Validate(), tc.want...)
			if _, err := New(c); (err == nil) != (len(tc.want) == 0) {
				t.Errorf("New error %v disagrees with Validate", err)
			}
		})
	}
	for _, r := range RegionNames() {
		c, err := New(Config{SDKAppID: 1, SecretKey: "k", Region: r})
		d, ok := RegionDomain(r)
		if err != nil || !ok || c.BaseURL() != "https://"+d {
			t.Errorf("region %s: %v %v", r, c, err)
		}
	}
	if d, _ := RegionDomain("silicon-valley"); d != "adminapiusa.im.qcloud.com" || len(RegionNames()) != 8 {
		t.Errorf("region table: %s %v", d, RegionNames())
	}
	c, _ := New(Config{SDKAppID: 1, SecretKey: "k", Region: "tokyo", BaseURL: "http://127.0.0.1:1/"})
	if c.BaseURL() != "http://127.0.0.1:1" {
		t.Errorf("base url override: %s", c.BaseURL())
	}
	if d, _ := New(Config{SDKAppID: 1, SecretKey: "k"}); d.BaseURL() != "https://console.tim.qq.com" || d.timeout != DefaultTimeout {
		t.Errorf("defaults: %s %v", d.BaseURL(), d.timeout)
	}
}

// countingGate records its Waits and the requests the server had seen at each.
type countingGate struct {
	rec   *recorder
	seen  []int
	err   error
	after int // fail from this Wait on (0: never)
}

func (g *countingGate) Wait(ctx context.Context) error {
	g.seen = append(g.seen, g.rec.calls())
	if g.after > 0 && len(g.seen) >= g.after {
		return g.err
	}
	return nil
}

// TestClientGateAdmitsEveryRequest: the re-sign retry is a second request to the server, so it
// passes the gate like the first; a gate that refuses ends the call without sending.
func TestClientGateAdmitsEveryRequest(t *testing.T) {
	expired := reply{status: 200, body: `{"ActionStatus":"FAIL","ErrorCode":70001,"ErrorInfo":"expired"}`}
	ok := reply{status: 200, body: `{"ActionStatus":"OK","ErrorCode":0,"GroupItem":[{"GroupName":"g","GroupId":1}],"CompleteFlag":1}`}
	t.Run("retry waits", func(t *testing.T) {
		f := newFixture(t, expired, ok)
		g := &countingGate{rec: f.rec}
		if _, err := f.c.GetContactGroup(WithGate(context.Background(), g), &GetRequest{FromAccount: "a"}); err != nil {
			t.Fatal(err)
		}
		if !cmp.Equal(g.seen, []int{0, 1}) {
			t.Errorf("gate waits saw %v requests sent before each, want [0 1] (one wait per request)", g.seen)
		}
	})
	t.Run("refused retry is not sent", func(t *testing.T) {
		f := newFixture(t, expired, ok)
		g := &countingGate{rec: f.rec, err: context.Canceled, after: 2}
		_, err := f.c.GetContactGroup(WithGate(context.Background(), g), &GetRequest{FromAccount: "a"})
		var e *Error
		if !errors.As(err, &e) || !errors.Is(err, context.Canceled) || e.Class != ClassTransient {
			t.Fatalf("err = %v, want a transient *Error wrapping the gate's", err)
		}
		if n := f.rec.calls(); n != 1 {
			t.Errorf("%d requests reached the server, want 1", n)
		}
	})
}

// TestErrorBoundsServerText: ErrorInfo/ResultInfo are the server's words, as long as the response
// cap allows; an Error's message, which reaches logs and dlq-error-info, carries at most
// MaxInfoBytes of them, and control characters only escaped.
func TestErrorBoundsServerText(t *testing.T) {
	huge := strings.Repeat("界", 1<<20)
	for _, e := range []*Error{
		{API: APICreate, Class: ClassPermanent, Code: 50002, Info: huge},
		{API: APICreate, Class: ClassPermanent, Code: 51008, Info: huge, Partial: true},
		{API: APICreate, Class: ClassPermanent, Code: 50002, Info: "line\r\nforged: entry\x07\u202e"},
	} {
		msg := e.Error()
		if len(msg) > MaxInfoBytes+64 {
			t.Errorf("message is %d bytes", len(msg))
		}
		if strings.ContainsAny(msg, "\r\n\x07\u202e") {
			t.Errorf("message carries raw control characters: %q", msg)
		}
		if !utf8.ValidString(msg) {
			t.Errorf("message cut inside a rune")
		}
	}
}

// sendGate admits the first request (Wait) and answers Send with err.
type sendGate struct {
	err   error
	asked int
}

func (g *sendGate) Wait(context.Context) error { return nil }
func (g *sendGate) Send() error                { g.asked++; return g.err }

// TestSendGate: a SendGate refusing at the write aborts the request with nothing reaching the
// server (and the transport does not replay it); the error matches the gate's. Admitted, the
// call goes through as usual.
func TestSendGate(t *testing.T) {
	var (
		mu   sync.Mutex
		hits int
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
		fmt.Fprint(w, `{"ActionStatus":"OK","ErrorCode":0,"GroupResultItem":[{"GroupItem":{"GroupName":"g","GroupId":1},"ResultItem":[]}]}`)
	}))
	defer srv.Close()
	c, err := New(Config{SDKAppID: 1400000000, SecretKey: "k", BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	req := &CreateRequest{FromAccount: "alice", GroupContactItem: []GroupContactItem{{GroupName: "g"}}}
	refuse := errors.New("lease lapsed")
	for _, tc := range []struct {
		name     string
		gateErr  error
		wantHits int
	}{{"refused", refuse, 0}, {"admitted", nil, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			hits = 0
			mu.Unlock()
			g := &sendGate{err: tc.gateErr}
			_, err := c.CreateContactGroup(WithGate(context.Background(), g), req)
			if tc.gateErr != nil && !errors.Is(err, tc.gateErr) {
				t.Errorf("err = %v, want one matching %v", err, tc.gateErr)
			}
			if tc.gateErr == nil && err != nil {
				t.Errorf("err = %v", err)
			}
			if g.asked != 1 {
				t.Errorf("Send asked %d times, want 1", g.asked)
			}
			mu.Lock()
			defer mu.Unlock()
			if hits != tc.wantHits {
				t.Errorf("server saw %d requests, want %d", hits, tc.wantHits)
			}
		})
	}
}
