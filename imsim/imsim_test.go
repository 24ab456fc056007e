package imsim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/internal/fakeclock"
)

const (
	testKey   = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"
	testAppID = 1400000000
)

// newClock is the settable time source shared by the simulator and the test's signer.
func newClock() *fakeclock.Clock { return fakeclock.New(time.Unix(1700000000, 0)) }

type harness struct {
	t     *testing.T
	sim   *Server
	srv   *httptest.Server
	clock *fakeclock.Clock
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	clk := newClock()
	if cfg.SDKAppID == 0 {
		cfg.SDKAppID = testAppID
	}
	if cfg.SecretKey == "" {
		cfg.SecretKey = testKey
	}
	if cfg.Now == nil {
		cfg.Now = clk.Now
	}
	if cfg.Seed == 0 {
		cfg.Seed = 42
	}
	sim, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	t.Cleanup(func() { sim.Close(); srv.Close() })
	return &harness{t: t, sim: sim, srv: srv, clock: clk}
}

func (h *harness) sig(id string) string {
	s, err := im.GenUserSig(testKey, testAppID, id, h.clock.Now(), 24*time.Hour)
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

func (h *harness) query() url.Values {
	q := url.Values{}
	q.Set("sdkappid", fmt.Sprint(testAppID))
	q.Set("identifier", DefaultAdmin)
	q.Set("usersig", h.sig(DefaultAdmin))
	q.Set("random", "1")
	q.Set("contenttype", "json")
	return q
}

// result is a decoded answer with every field any API may return.
type result struct {
	im.BaseResponse
	GroupResultItem   []im.GroupResultItem
	GroupItem         []im.GroupItem
	ContactItem       []im.ContactInfo
	CompleteFlag      int
	NextStartIndex    int
	UpdateGroupResult im.UpdateGroupResult
	status            int
}

// post sends body (a string is sent as is, anything else as JSON) with query q.
func (h *harness) post(path string, q url.Values, body any) result {
	h.t.Helper()
	var b []byte
	if s, ok := body.(string); ok {
		b = []byte(s)
	} else {
		var err error
		if b, err = json.Marshal(body); err != nil {
			h.t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.srv.URL+path+"?"+q.Encode(), bytes.NewReader(b))
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	r := result{status: resp.StatusCode}
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(data, &r); err != nil {
			h.t.Fatalf("decode %q: %v", data, err)
		}
	}
	return r
}

func (h *harness) call(path string, body any) result { return h.post(path, h.query(), body) }

func createReq(acct, name string, contacts ...im.ContactItem) im.CreateRequest {
	return im.CreateRequest{FromAccount: acct, GroupContactItem: []im.GroupContactItem{{GroupName: name, ContactItem: contacts}}}
}

func c2c(n int) im.ContactItem {
	return im.ContactItem{Type: im.ContactC2C, ToAccount: fmt.Sprintf("u%d", n)}
}

func c2cs(from, to int) []im.ContactItem {
	var out []im.ContactItem
	for i := from; i < to; i++ {
		out = append(out, c2c(i))
	}
	return out
}

func TestAuthCodes(t *testing.T) {
	h := newHarness(t, Config{})
	body := createReq("alice", "g", c2c(1))
	gen := func(key string, app int64, id string, at time.Time, exp time.Duration) string {
		s, err := im.GenUserSig(key, app, id, at, exp)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	now := h.clock.Now()
	tests := []struct {
		name string
		edit func(q url.Values)
		want int
	}{
		{"ok", func(url.Values) {}, 0},
		{"no sdkappid", func(q url.Values) { q.Del("sdkappid") }, 60012},
		{"other sdkappid", func(q url.Values) { q.Set("sdkappid", "1400000001") }, im.CodeAppIDNotFound},
		{"not admin", func(q url.Values) { q.Set("identifier", "bob") }, im.CodeNotAdmin},
		{"empty sig", func(q url.Values) { q.Set("usersig", "") }, im.CodeSigEmpty},
		{"garbage sig", func(q url.Values) { q.Set("usersig", "not-a-sig") }, im.CodeSigMismatch},
		{"expired", func(q url.Values) {
			q.Set("usersig", gen(testKey, testAppID, DefaultAdmin, now.Add(-2*time.Hour), time.Hour))
		}, im.CodeSigExpired},
		{"sig for other identifier", func(q url.Values) {
			q.Set("usersig", gen(testKey, testAppID, "bob", now, time.Hour))
		}, im.CodeIdentifierInvalid},
		{"sig for other appid", func(q url.Values) {
			q.Set("usersig", gen(testKey, testAppID+1, DefaultAdmin, now, time.Hour))
		}, im.CodeAppIDMismatch},
		{"wrong key", func(q url.Values) {
			q.Set("usersig", gen(strings.Repeat("0", 64), testAppID, DefaultAdmin, now, time.Hour))
		}, im.CodeSigKeyMismatch},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := h.query()
			tt.edit(q)
			body.GroupContactItem[0].GroupName = fmt.Sprintf("g%d", i)
			r := h.post(im.PathCreateContactGroup, q, body)
			if r.ErrorCode != tt.want {
				t.Fatalf("code %d (%s), want %d", r.ErrorCode, r.ErrorInfo, tt.want)
			}
			if tt.want != 0 && (r.ActionStatus != "FAIL" || im.Classify(r.ErrorCode) != im.ClassConfig && im.Classify(r.ErrorCode) != im.ClassCredentials) {
				t.Errorf("status %q class %v", r.ActionStatus, im.Classify(r.ErrorCode))
			}
		})
	}
	// Only the one good call created a group; auth failures used no quota.
	if g := h.sim.Groups("alice"); len(g) != 1 {
		t.Errorf("groups = %v", g)
	}
	if st := h.sim.Stats().APIs[im.APICreate]; st.Accepted != 1 || st.Total != len(tests) {
		t.Errorf("stats %+v", st)
	}
}

func TestInvalidateSigs(t *testing.T) {
	h := newHarness(t, Config{})
	q := h.query() // issued at t0
	h.clock.Advance(10 * time.Second)
	h.sim.InvalidateSigs()
	if r := h.post(im.PathGetContactGroup, q, im.GetRequest{FromAccount: "a"}); r.ErrorCode != im.CodeSigInvalidated {
		t.Fatalf("old sig: code %d", r.ErrorCode)
	}
	if r := h.call(im.PathGetContactGroup, im.GetRequest{FromAccount: "a"}); r.ErrorCode != 0 {
		t.Fatalf("fresh sig: code %d", r.ErrorCode)
	}
}

func TestCreateRules(t *testing.T) {
	long := strings.Repeat("x", 33)
	tests := []struct {
		name string
		cfg  Config
		body any
		want int
	}{
		{"ok", Config{}, createReq("a", "g", c2c(1)), 0},
		{"32-byte name", Config{}, createReq("a", strings.Repeat("名", 10)+"xx", c2c(1)), 0},
		{"33-byte name", Config{}, createReq("a", long, c2c(1)), im.CodeNameTooLong},
		{"empty name", Config{}, createReq("a", "", c2c(1)), im.CodeBadParams},
		{"bad json", Config{}, `{"From_Account":`, im.CodeBadParams},
		{"no account", Config{}, createReq("", "g", c2c(1)), im.CodeBadParams},
		{"long account", Config{}, createReq(long, "g", c2c(1)), im.CodeBadParams},
		{"two groups", Config{}, im.CreateRequest{FromAccount: "a", GroupContactItem: []im.GroupContactItem{
			{GroupName: "x", ContactItem: c2cs(0, 1)}, {GroupName: "y", ContactItem: c2cs(0, 1)}}}, im.CodeBadParams},
		{"no groups", Config{}, im.CreateRequest{FromAccount: "a"}, im.CodeBadParams},
		{"no contacts", Config{}, createReq("a", "g"), im.CodeBadParams},
		{"101 contacts", Config{}, createReq("a", "g", c2cs(0, 101)...), im.CodeBadParams},
		{"100 contacts", Config{}, createReq("a", "g", c2cs(0, 100)...), 0},
		{"bad type", Config{}, createReq("a", "g", im.ContactItem{Type: 3, ToAccount: "b"}), im.CodeBadParams},
		{"type 1 without account", Config{}, createReq("a", "g", im.ContactItem{Type: 1, ToGroupID: "x"}), im.CodeBadParams},
		{"type 2 without group", Config{}, createReq("a", "g", im.ContactItem{Type: 2, ToAccount: "x"}), im.CodeBadParams},
		{"type 2 ok", Config{}, createReq("a", "g", im.ContactItem{Type: 2, ToGroupID: "@TGS#1"}), 0},
		{"not imported (list)", Config{NotImported: []string{"a"}}, createReq("a", "g", c2c(1)), im.CodeNotImported},
		{"not imported (predicate)", Config{Imported: func(a string) bool { return !strings.HasPrefix(a, "ghost") }},
			createReq("ghost1", "g", c2c(1)), im.CodeNotImported},
		{"imported (predicate)", Config{Imported: func(a string) bool { return !strings.HasPrefix(a, "ghost") }},
			createReq("alice", "g", c2c(1)), 0},
		{"dismissed group only", Config{DismissedGroups: []string{"@gone"}},
			createReq("a", "g", im.ContactItem{Type: 2, ToGroupID: "@gone"}), im.CodeGroupCheckFailed},
		{"small name limit", Config{MaxNameBytes: 4}, createReq("a", "abcde", c2c(1)), im.CodeNameTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.cfg)
			r := h.call(im.PathCreateContactGroup, tt.body)
			if r.ErrorCode != tt.want {
				t.Fatalf("code %d (%s), want %d", r.ErrorCode, r.ErrorInfo, tt.want)
			}
			acct := "a"
			if cr, ok := tt.body.(im.CreateRequest); ok {
				acct = cr.FromAccount
			}
			groups := h.sim.Groups(acct)
			if (tt.want == 0) != (len(groups) == 1) {
				t.Errorf("groups after code %d: %v", r.ErrorCode, groups)
			}
			if tt.want == 0 && (len(r.GroupResultItem) != 1 || r.GroupResultItem[0].GroupItem.GroupID != 1) {
				t.Errorf("result %+v", r.GroupResultItem)
			}
		})
	}
}

func TestTwentyGroups(t *testing.T) {
	h := newHarness(t, Config{})
	for i := range 20 {
		if r := h.call(im.PathCreateContactGroup, createReq("a", fmt.Sprint("g", i), c2c(i))); r.ErrorCode != 0 {
			t.Fatalf("group %d: code %d", i, r.ErrorCode)
		}
	}
	if r := h.call(im.PathCreateContactGroup, createReq("a", "g20", c2c(99))); r.ErrorCode != im.CodeTooManyGroups {
		t.Fatalf("21st group: code %d", r.ErrorCode)
	}
	if n := len(h.sim.Groups("a")); n != 20 {
		t.Fatalf("%d groups", n)
	}
	// Another user is unaffected.
	if r := h.call(im.PathCreateContactGroup, createReq("b", "g20", c2c(99))); r.ErrorCode != 0 {
		t.Fatalf("other user: code %d", r.ErrorCode)
	}
}

func TestThousandConversationsPartial(t *testing.T) {
	h := newHarness(t, Config{})
	// 9 groups of 100 and one of 90: 990 distinct conversations.
	for i := range 10 {
		n := 100
		if i == 9 {
			n = 90
		}
		if r := h.call(im.PathCreateContactGroup, createReq("a", fmt.Sprint("g", i), c2cs(i*100, i*100+n)...)); r.ErrorCode != 0 {
			t.Fatalf("group %d: code %d", i, r.ErrorCode)
		}
	}
	// 5 already grouped conversations count once; 15 new ones, of which 10 fit.
	items := append(c2cs(0, 5), c2cs(2000, 2015)...)
	r := h.call(im.PathCreateContactGroup, createReq("a", "last", items...))
	if r.ErrorCode != 0 || len(r.GroupResultItem) != 1 {
		t.Fatalf("partial create: code %d %+v", r.ErrorCode, r)
	}
	var failed []string
	for _, it := range r.GroupResultItem[0].ResultItem {
		if it.ResultCode != 0 {
			if it.ResultCode != im.CodeTooManyContacts {
				t.Errorf("item %v code %d", it.ContactItem, it.ResultCode)
			}
			failed = append(failed, it.ContactItem.ToAccount)
		}
	}
	if want := "u2010 u2011 u2012 u2013 u2014"; strings.Join(failed, " ") != want {
		t.Errorf("failed %v, want %s", failed, want)
	}
	g := h.sim.Groups("a")
	if len(g) != 11 || len(g[10].Contacts) != 15 {
		t.Fatalf("last group %+v", g[len(g)-1])
	}
	// Now full: nothing new fits, so no group and a top-level 51008.
	if r := h.call(im.PathCreateContactGroup, createReq("a", "none", c2c(3000))); r.ErrorCode != im.CodeTooManyContacts {
		t.Fatalf("full: code %d", r.ErrorCode)
	}
	// A conversation already grouped still fits.
	if r := h.call(im.PathCreateContactGroup, createReq("a", "again", c2c(1))); r.ErrorCode != 0 {
		t.Fatalf("regroup: code %d", r.ErrorCode)
	}
}

func TestDismissedGroupPerItem(t *testing.T) {
	h := newHarness(t, Config{DismissedGroups: []string{"@gone"}})
	r := h.call(im.PathCreateContactGroup, createReq("a", "g", c2c(1), im.ContactItem{Type: 2, ToGroupID: "@gone"}))
	if r.ErrorCode != 0 || r.GroupResultItem[0].ResultItem[1].ResultCode != im.CodeGroupCheckFailed || r.GroupResultItem[0].ResultItem[0].ResultCode != 0 {
		t.Fatalf("%+v", r)
	}
}

func TestDuplicateNames(t *testing.T) {
	tests := []struct {
		mode       string
		wantCode   int
		wantGroups int
		wantLen    []int
	}{
		{"", im.CodeBadParams, 1, []int{1}},
		{DuplicateReject, im.CodeBadParams, 1, []int{1}},
		{DuplicateMerge, 0, 1, []int{2}},
		{DuplicateAllow, 0, 2, []int{1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			h := newHarness(t, Config{DuplicateNames: tt.mode})
			h.call(im.PathCreateContactGroup, createReq("a", "g", c2c(1)))
			r := h.call(im.PathCreateContactGroup, createReq("a", "g", c2c(2)))
			if r.ErrorCode != tt.wantCode {
				t.Fatalf("code %d", r.ErrorCode)
			}
			g := h.sim.Groups("a")
			if len(g) != tt.wantGroups {
				t.Fatalf("groups %+v", g)
			}
			for i, n := range tt.wantLen {
				if len(g[i].Contacts) != n {
					t.Errorf("group %d: %+v", i, g[i])
				}
			}
			if d := h.sim.Stats().DuplicateCreates; d != 1 {
				t.Errorf("duplicate creates %d", d)
			}
		})
	}
	h := newHarness(t, Config{DuplicateCode: 51099})
	h.call(im.PathCreateContactGroup, createReq("a", "g", c2c(1)))
	if r := h.call(im.PathCreateContactGroup, createReq("a", "g", c2c(1))); r.ErrorCode != 51099 {
		t.Errorf("custom duplicate code: %d", r.ErrorCode)
	}
	if _, err := New(Config{SDKAppID: 1, SecretKey: "k", DuplicateNames: "ignore"}); err == nil {
		t.Error("unknown duplicate mode accepted")
	}
}

func TestGetPaging(t *testing.T) {
	h := newHarness(t, Config{PageSize: 7})
	if r := h.call(im.PathGetContactGroup, im.GetRequest{FromAccount: "a"}); r.ErrorCode != 0 || r.CompleteFlag != 1 || len(r.ContactItem) != 0 {
		t.Fatalf("empty account: %+v", r)
	}
	h.call(im.PathCreateContactGroup, createReq("a", "g1", c2cs(0, 10)...))
	h.call(im.PathCreateContactGroup, createReq("a", "g2", c2cs(5, 15)...))
	var got []im.ContactInfo
	start, pages := 0, 0
	for {
		r := h.call(im.PathGetContactGroup, im.GetRequest{FromAccount: "a", StartIndex: start})
		if r.ErrorCode != 0 || len(r.GroupItem) != 2 {
			t.Fatalf("page %d: %+v", pages, r)
		}
		pages++
		got = append(got, r.ContactItem...)
		if r.CompleteFlag == 1 {
			break
		}
		if r.NextStartIndex != start+7 {
			t.Fatalf("next %d from %d", r.NextStartIndex, start)
		}
		start = r.NextStartIndex
	}
	if pages != 3 || len(got) != 15 {
		t.Fatalf("pages %d contacts %d", pages, len(got))
	}
	if ids := got[7].ContactGroupID; len(ids) != 2 || ids[0] != 1 || ids[1] != 2 {
		t.Errorf("u7 in groups %v", ids)
	}
	if r := h.call(im.PathGetContactGroup, im.GetRequest{FromAccount: "a", StartIndex: -1}); r.ErrorCode != im.CodeBadParams {
		t.Errorf("negative start: %d", r.ErrorCode)
	}
	h2 := newHarness(t, Config{NotImported: []string{"x"}})
	if r := h2.call(im.PathGetContactGroup, im.GetRequest{FromAccount: "x"}); r.ErrorCode != im.CodeNotImported {
		t.Errorf("not imported: %d", r.ErrorCode)
	}
}

func TestUpdateAndDelete(t *testing.T) {
	h := newHarness(t, Config{DismissedGroups: []string{"@gone"}})
	h.call(im.PathCreateContactGroup, createReq("a", "g", c2c(1), c2c(2)))
	h.call(im.PathCreateContactGroup, createReq("a", "other", c2c(9)))
	upd := func(u im.UpdateGroup) result {
		return h.call(im.PathUpdateContactGroup, im.UpdateRequest{FromAccount: "a", UpdateType: 1, UpdateGroup: u})
	}
	r := upd(im.UpdateGroup{UpdateGroupType: im.UpdateGroupTypeAddDel, OldGroupName: "g", ContactUpdateItem: []im.ContactUpdateItem{
		{ContactOptType: im.ContactOptAdd, ContactItem: c2c(3)},
		{ContactOptType: im.ContactOptDel, ContactItem: c2c(1)},
		{ContactOptType: im.ContactOptAdd, ContactItem: im.ContactItem{Type: 2, ToGroupID: "@gone"}},
	}})
	if r.ErrorCode != 0 || r.UpdateGroupResult.GroupID != 1 || len(r.UpdateGroupResult.ContactResultItem) != 3 ||
		r.UpdateGroupResult.ContactResultItem[2].ResultCode != im.CodeGroupCheckFailed {
		t.Fatalf("add/remove: %+v", r)
	}
	if g := h.sim.Groups("a")[0]; fmt.Sprint(g.Contacts) != fmt.Sprint([]im.ContactItem{c2c(2), c2c(3)}) {
		t.Fatalf("contacts %v", g.Contacts)
	}
	if r := upd(im.UpdateGroup{UpdateGroupType: im.UpdateGroupTypeRename, OldGroupName: "g", NewGroupName: "other"}); r.ErrorCode != im.CodeBadParams {
		t.Errorf("rename onto existing: %d", r.ErrorCode)
	}
	if r := upd(im.UpdateGroup{UpdateGroupType: im.UpdateGroupTypeRename, OldGroupName: "g", NewGroupName: strings.Repeat("n", 33)}); r.ErrorCode != im.CodeNameTooLong {
		t.Errorf("long rename: %d", r.ErrorCode)
	}
	if r := upd(im.UpdateGroup{UpdateGroupType: im.UpdateGroupTypeRename, OldGroupName: "g", NewGroupName: "h"}); r.ErrorCode != 0 || r.UpdateGroupResult.GroupName != "h" {
		t.Errorf("rename: %+v", r)
	}
	for name, u := range map[string]im.UpdateGroup{
		"missing group":  {UpdateGroupType: im.UpdateGroupTypeRename, OldGroupName: "nope", NewGroupName: "x"},
		"bad type":       {UpdateGroupType: 3, OldGroupName: "h"},
		"no items":       {UpdateGroupType: 2, OldGroupName: "h"},
		"bad opt":        {UpdateGroupType: 2, OldGroupName: "h", ContactUpdateItem: []im.ContactUpdateItem{{ContactOptType: 3, ContactItem: c2c(1)}}},
		"no old name":    {UpdateGroupType: 1, NewGroupName: "x"},
		"empty new name": {UpdateGroupType: 1, OldGroupName: "h"},
	} {
		want := im.CodeBadParams
		if name == "missing group" {
			want = im.CodeGroupNotFound
		}
		if r := upd(u); r.ErrorCode != want {
			t.Errorf("%s: code %d, want %d", name, r.ErrorCode, want)
		}
	}
	if r := h.call(im.PathUpdateContactGroup, im.UpdateRequest{FromAccount: "a", UpdateType: 2}); r.ErrorCode != im.CodeBadParams {
		t.Errorf("UpdateType 2: %d", r.ErrorCode)
	}

	del := func(names ...string) int {
		return h.call(im.PathDelContactGroup, im.DeleteRequest{FromAccount: "a", GroupName: names}).ErrorCode
	}
	if c := del("nope"); c != im.CodeGroupNotFound {
		t.Errorf("delete missing: %d", c)
	}
	if c := del(); c != im.CodeBadParams {
		t.Errorf("delete nothing: %d", c)
	}
	if c := del("h", "nope"); c != im.CodeGroupNotFound || len(h.sim.Groups("a")) != 2 {
		t.Errorf("delete with one missing: %d, %d groups left", c, len(h.sim.Groups("a")))
	}
	if c := del("h"); c != 0 || len(h.sim.Groups("a")) != 1 {
		t.Errorf("delete: %d", c)
	}
	if c := del("h"); c != im.CodeGroupNotFound {
		t.Errorf("delete twice: %d", c)
	}
	// Deleting released the conversations from the 1000 count.
	h.sim.mu.Lock()
	n := len(h.sim.accounts["a"].refs)
	h.sim.mu.Unlock()
	if n != 1 {
		t.Errorf("refs after delete: %d", n)
	}
}

func TestHTTPShape(t *testing.T) {
	h := newHarness(t, Config{})
	resp, err := h.srv.Client().Get(h.srv.URL + im.PathCreateContactGroup)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", resp.StatusCode)
	}
	if r := h.call("/v4/recentcontact/nope", struct{}{}); r.status != http.StatusNotFound {
		t.Errorf("unknown path: %d", r.status)
	}
}

// TestRateLimitSlidingWindow sends 300 calls spread over 897 ms: exactly the 100 beyond the
// limit of 200 answer 60007, and the window slides rather than resetting on second boundaries.
func TestRateLimitSlidingWindow(t *testing.T) {
	h := newHarness(t, Config{})
	t0 := h.clock.Now().Add(500 * time.Millisecond) // straddles a wall-clock second boundary
	q := h.query()
	codes := map[int]int{}
	for i := range 300 {
		h.clock.Set(t0.Add(time.Duration(i) * 3 * time.Millisecond))
		r := h.post(im.PathGetContactGroup, q, im.GetRequest{FromAccount: "a"})
		codes[r.ErrorCode]++
		if i < 200 && r.ErrorCode != 0 {
			t.Fatalf("call %d answered %d", i, r.ErrorCode)
		}
	}
	if codes[0] != 200 || codes[im.CodeFrequency] != 100 {
		t.Fatalf("codes %v, want 200×0 and 100×60007", codes)
	}
	st := h.sim.Stats().APIs[im.APIGet]
	if st.Total != 300 || st.Accepted != 200 || st.RateLimited != 100 || st.MaxWindow != 300 {
		t.Fatalf("stats %+v", st)
	}
	// Other APIs have their own budget.
	if r := h.call(im.PathCreateContactGroup, createReq("a", "g", c2c(1))); r.ErrorCode != 0 {
		t.Fatalf("create during get flood: %d", r.ErrorCode)
	}
	// The first accepted call was at t0: (t0, t0+1s] no longer holds it, so one call fits.
	h.clock.Set(t0.Add(time.Second - time.Millisecond))
	if r := h.post(im.PathGetContactGroup, q, im.GetRequest{FromAccount: "a"}); r.ErrorCode != im.CodeFrequency {
		t.Fatalf("just before the slide: %d", r.ErrorCode)
	}
	h.clock.Set(t0.Add(time.Second))
	if r := h.post(im.PathGetContactGroup, q, im.GetRequest{FromAccount: "a"}); r.ErrorCode != 0 {
		t.Fatalf("after the slide: %d", r.ErrorCode)
	}
	if r := h.post(im.PathGetContactGroup, q, im.GetRequest{FromAccount: "a"}); r.ErrorCode != im.CodeFrequency {
		t.Fatalf("second call after the slide: %d", r.ErrorCode)
	}
}

// TestWindowOutOfOrder records calls whose clock readings reach the window out of order, as
// concurrent handlers do: the window must still hold exactly the calls of the last second.
func TestWindowOutOfOrder(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	var w window
	for _, at := range []int{0, 2, 1, 500, 999} {
		if !w.admit(ms(at), 5, false) {
			t.Fatalf("call at %d ms refused", at)
		}
	}
	// At 1001.5 ms the calls at 0 and 1 ms have left (t-1s, t]: 2, 500, 999 and this one remain.
	if !w.admit(t0.Add(1001500*time.Microsecond), 5, false) {
		t.Fatal("call at 1001.5 ms refused")
	}
	if len(w.all) != 4 || len(w.accepted) != 4 {
		t.Fatalf("window holds %d calls (%d accepted), want 4: %v", len(w.all), len(w.accepted), w.all)
	}
	if !slices.IsSortedFunc(w.all, func(a, b time.Time) int { return a.Compare(b) }) {
		t.Fatalf("window out of order: %v", w.all)
	}
	if w.max != 5 {
		t.Fatalf("max %d, want 5", w.max)
	}
}

func TestRateLimitConfigurable(t *testing.T) {
	h := newHarness(t, Config{RateLimit: 5})
	codes := map[int]int{}
	for range 8 {
		codes[h.call(im.PathGetContactGroup, im.GetRequest{FromAccount: "a"}).ErrorCode]++
	}
	if codes[0] != 5 || codes[im.CodeFrequency] != 3 {
		t.Fatalf("codes %v", codes)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	h := newHarness(t, Config{Registerer: reg, RateLimit: 2, DuplicateNames: DuplicateMerge})
	for range 3 {
		h.call(im.PathCreateContactGroup, createReq("a", "g", c2c(1)))
	}
	if v := testutil.ToFloat64(h.sim.calls.WithLabelValues(im.APICreate, "60007")); v != 1 {
		t.Errorf("60007 calls %v", v)
	}
	if v := testutil.ToFloat64(h.sim.calls.WithLabelValues(im.APICreate, "0")); v != 2 {
		t.Errorf("ok calls %v", v)
	}
	if v := testutil.ToFloat64(h.sim.maxWindow.WithLabelValues(im.APICreate)); v != 3 {
		t.Errorf("max window %v", v)
	}
	if v := testutil.ToFloat64(h.sim.dupCount); v != 1 {
		t.Errorf("duplicates %v", v)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n == 0 {
		t.Errorf("gather: %d %v", n, err)
	}
	// A second simulator on the same registry is refused, not a panic.
	if _, err := New(Config{SDKAppID: 1, SecretKey: "k", Registerer: reg}); err == nil {
		t.Error("double registration accepted")
	}
}

func TestStateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	h := newHarness(t, Config{})
	h.call(im.PathCreateContactGroup, createReq("a", "g1", c2c(1), c2c(2)))
	h.call(im.PathCreateContactGroup, createReq("a", "g2", c2c(2)))
	if err := h.sim.SaveState(path); err != nil {
		t.Fatal(err)
	}
	h2 := newHarness(t, Config{MaxContacts: 3})
	if err := h2.sim.LoadState(filepath.Join(t.TempDir(), "missing.json")); err != nil {
		t.Fatalf("missing file: %v", err)
	}
	if err := h2.sim.LoadState(path); err != nil {
		t.Fatal(err)
	}
	if g := h2.sim.Groups("a"); len(g) != 2 || len(g[0].Contacts) != 2 || g[1].ID != 2 {
		t.Fatalf("loaded %+v", g)
	}
	// Ids continue and the conversation count was rebuilt (2 of 3 used).
	r := h2.call(im.PathCreateContactGroup, createReq("a", "g3", c2c(3), c2c(4)))
	if r.ErrorCode != 0 || r.GroupResultItem[0].GroupItem.GroupID != 3 || r.GroupResultItem[0].ResultItem[1].ResultCode != im.CodeTooManyContacts {
		t.Fatalf("after load: %+v", r)
	}
	if err := h2.sim.LoadState("/dev/null/x"); err == nil {
		t.Error("unreadable path accepted")
	}
}

func TestSigCacheHonoursExpiryAndIdentity(t *testing.T) {
	h := newHarness(t, Config{Admins: []string{DefaultAdmin, "ops"}})
	s, err := im.GenUserSig(testKey, testAppID, DefaultAdmin, h.clock.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	q := h.query()
	q.Set("usersig", s)
	get := im.GetRequest{FromAccount: "a"}
	if r := h.post(im.PathGetContactGroup, q, get); r.ErrorCode != 0 {
		t.Fatalf("first use: %d", r.ErrorCode)
	}
	q.Set("identifier", "ops") // same (cached) sig, another admin
	if r := h.post(im.PathGetContactGroup, q, get); r.ErrorCode != im.CodeIdentifierInvalid {
		t.Fatalf("cached sig for another identifier: %d", r.ErrorCode)
	}
	q.Set("identifier", DefaultAdmin)
	h.clock.Advance(time.Hour)
	if r := h.post(im.PathGetContactGroup, q, get); r.ErrorCode != 0 {
		t.Fatalf("at expiry: %d", r.ErrorCode)
	}
	h.clock.Advance(time.Second)
	if r := h.post(im.PathGetContactGroup, q, get); r.ErrorCode != im.CodeSigExpired {
		t.Fatalf("cached sig after expiry: %d", r.ErrorCode)
	}
}
