package imsim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
)

func rename(acct, from, to string) im.UpdateRequest {
	return im.UpdateRequest{FromAccount: acct, UpdateType: im.UpdateTypeGroup,
		UpdateGroup: im.UpdateGroup{UpdateGroupType: im.UpdateGroupTypeRename, OldGroupName: from, NewGroupName: to}}
}

// addDel is an add/remove of one group; each contact goes with opt.
func addDel(acct, group string, opt int, cs ...im.ContactItem) im.UpdateRequest {
	u := im.UpdateGroup{UpdateGroupType: im.UpdateGroupTypeAddDel, OldGroupName: group}
	for _, c := range cs {
		u.ContactUpdateItem = append(u.ContactUpdateItem, im.ContactUpdateItem{ContactOptType: opt, ContactItem: c})
	}
	return im.UpdateRequest{FromAccount: acct, UpdateType: im.UpdateTypeGroup, UpdateGroup: u}
}

func delReq(acct string, names ...string) im.DeleteRequest {
	return im.DeleteRequest{FromAccount: acct, GroupName: names}
}

// itemCodes are the per-item ResultCodes of an update's answer.
func itemCodes(r result) []int {
	var out []int
	for _, it := range r.UpdateGroupResult.ContactResultItem {
		out = append(out, it.ResultCode)
	}
	return out
}

// groupNames are acct's group names in creation order, each with its conversations' keys.
func groupNames(s *Server, acct string) string {
	var out []string
	for _, g := range s.Groups(acct) {
		var keys []string
		for _, c := range g.Contacts {
			keys = append(keys, c.Key())
		}
		out = append(out, fmt.Sprintf("%s#%d%v", g.Name, g.ID, keys))
	}
	return strings.Join(out, " ")
}

// TestLifecycleCodes: rename, add/remove and delete answer the documented codes and change
// exactly what they should. Each case starts from a user with groups g (u1, u2) and other (u9)
// and states the answer and the state after it.
func TestLifecycleCodes(t *testing.T) {
	long := strings.Repeat("n", 33)
	tests := []struct {
		name   string
		cfg    Config
		call   func(h *harness) result
		code   int    // top-level ErrorCode
		items  []int  // per-item ResultCodes of an add/remove
		state  string // groupNames after the call
		gname  string // UpdateGroupResult.GroupName of a successful update
		before func(h *harness)
	}{
		{name: "rename", call: func(h *harness) result { return h.call(im.PathUpdateContactGroup, rename("a", "g", "h")) },
			state: "h#1[1:u1 1:u2] other#2[1:u9]", gname: "h"},
		{name: "rename of a missing group is 51009", call: func(h *harness) result { return h.call(im.PathUpdateContactGroup, rename("a", "nope", "h")) },
			code: im.CodeGroupNotFound, state: "g#1[1:u1 1:u2] other#2[1:u9]"},
		{name: "rename of an unknown user's group is 51009", call: func(h *harness) result { return h.call(im.PathUpdateContactGroup, rename("z", "g", "h")) },
			code: im.CodeGroupNotFound, state: "g#1[1:u1 1:u2] other#2[1:u9]"},
		{name: "new name over 32 bytes is 51011", call: func(h *harness) result { return h.call(im.PathUpdateContactGroup, rename("a", "g", long)) },
			code: im.CodeNameTooLong, state: "g#1[1:u1 1:u2] other#2[1:u9]"},
		{name: "new name of 32 bytes of UTF-8 fits", call: func(h *harness) result {
			return h.call(im.PathUpdateContactGroup, rename("a", "g", strings.Repeat("名", 10)+"ab"))
		}, state: "名名名名名名名名名名ab#1[1:u1 1:u2] other#2[1:u9]", gname: "名名名名名名名名名名ab"},
		{name: "new name of 33 bytes of UTF-8 is 51011", call: func(h *harness) result {
			return h.call(im.PathUpdateContactGroup, rename("a", "g", strings.Repeat("名", 11)))
		}, code: im.CodeNameTooLong, state: "g#1[1:u1 1:u2] other#2[1:u9]"},
		{name: "rename onto an existing name is 50002", call: func(h *harness) result { return h.call(im.PathUpdateContactGroup, rename("a", "g", "other")) },
			code: im.CodeBadParams, state: "g#1[1:u1 1:u2] other#2[1:u9]"},
		{name: "empty new name is 50002", call: func(h *harness) result { return h.call(im.PathUpdateContactGroup, rename("a", "g", "")) },
			code: im.CodeBadParams, state: "g#1[1:u1 1:u2] other#2[1:u9]"},
		{name: "add and remove in order", call: func(h *harness) result {
			r := addDel("a", "g", im.ContactOptAdd, c2c(3))
			r.UpdateGroup.ContactUpdateItem = append(r.UpdateGroup.ContactUpdateItem, im.ContactUpdateItem{ContactOptType: im.ContactOptDel, ContactItem: c2c(1)})
			return h.call(im.PathUpdateContactGroup, r)
		}, items: []int{0, 0}, state: "g#1[1:u2 1:u3] other#2[1:u9]", gname: "g"},
		{name: "add to a missing group is 51009", call: func(h *harness) result {
			return h.call(im.PathUpdateContactGroup, addDel("a", "nope", im.ContactOptAdd, c2c(3)))
		}, code: im.CodeGroupNotFound, state: "g#1[1:u1 1:u2] other#2[1:u9]"},
		{name: "remove from a missing group is 51009", call: func(h *harness) result {
			return h.call(im.PathUpdateContactGroup, addDel("a", "nope", im.ContactOptDel, c2c(1)))
		}, code: im.CodeGroupNotFound, state: "g#1[1:u1 1:u2] other#2[1:u9]"},
		{name: "add past 1000 conversations is 51008 per item, the rest applied", cfg: Config{MaxContacts: 4},
			call: func(h *harness) result {
				return h.call(im.PathUpdateContactGroup, addDel("a", "g", im.ContactOptAdd, c2c(9), c2c(3), c2c(4)))
			}, items: []int{0, 0, im.CodeTooManyContacts}, state: "g#1[1:u1 1:u2 1:u9 1:u3] other#2[1:u9]", gname: "g"},
		{name: "every item over the limit: OK with 51008 on each", cfg: Config{MaxContacts: 3},
			call: func(h *harness) result {
				return h.call(im.PathUpdateContactGroup, addDel("a", "g", im.ContactOptAdd, c2c(4), c2c(5)))
			}, items: []int{im.CodeTooManyContacts, im.CodeTooManyContacts}, state: "g#1[1:u1 1:u2] other#2[1:u9]", gname: "g"},
		{name: "a remove first frees room for an add", cfg: Config{MaxContacts: 3},
			call: func(h *harness) result {
				r := addDel("a", "g", im.ContactOptDel, c2c(1))
				r.UpdateGroup.ContactUpdateItem = append(r.UpdateGroup.ContactUpdateItem, im.ContactUpdateItem{ContactOptType: im.ContactOptAdd, ContactItem: c2c(4)})
				return h.call(im.PathUpdateContactGroup, r)
			}, items: []int{0, 0}, state: "g#1[1:u2 1:u4] other#2[1:u9]", gname: "g"},
		{name: "dismissed group conversation is 51007 per item", cfg: Config{DismissedGroups: []string{"@gone"}},
			call: func(h *harness) result {
				return h.call(im.PathUpdateContactGroup, addDel("a", "g", im.ContactOptAdd, im.ContactItem{Type: 2, ToGroupID: "@gone"}, c2c(3)))
			}, items: []int{im.CodeGroupCheckFailed, 0}, state: "g#1[1:u1 1:u2 1:u3] other#2[1:u9]", gname: "g"},
		{name: "over 100 items is 50002", call: func(h *harness) result {
			return h.call(im.PathUpdateContactGroup, addDel("a", "g", im.ContactOptAdd, c2cs(10, 111)...))
		}, code: im.CodeBadParams, state: "g#1[1:u1 1:u2] other#2[1:u9]"},
		{name: "delete", call: func(h *harness) result { return h.call(im.PathDelContactGroup, delReq("a", "g")) },
			state: "other#2[1:u9]"},
		{name: "delete of a missing group is 51009", call: func(h *harness) result { return h.call(im.PathDelContactGroup, delReq("a", "nope")) },
			code: im.CodeGroupNotFound, state: "g#1[1:u1 1:u2] other#2[1:u9]"},
		{name: "delete twice is 51009 the second time", before: func(h *harness) { h.call(im.PathDelContactGroup, delReq("a", "g")) },
			call: func(h *harness) result { return h.call(im.PathDelContactGroup, delReq("a", "g")) },
			code: im.CodeGroupNotFound, state: "other#2[1:u9]"},
		{name: "delete of an unknown user is 51009", call: func(h *harness) result { return h.call(im.PathDelContactGroup, delReq("z", "g")) },
			code: im.CodeGroupNotFound, state: "g#1[1:u1 1:u2] other#2[1:u9]"},
		{name: "renamed group is deleted by its new name only", before: func(h *harness) { h.call(im.PathUpdateContactGroup, rename("a", "g", "h")) },
			call: func(h *harness) result { return h.call(im.PathDelContactGroup, delReq("a", "g")) },
			code: im.CodeGroupNotFound, state: "h#1[1:u1 1:u2] other#2[1:u9]"},
		{name: "a name listed twice deletes once", call: func(h *harness) result { return h.call(im.PathDelContactGroup, delReq("a", "g", "g")) },
			state: "other#2[1:u9]"},
		{name: "not imported is 50001", cfg: Config{NotImported: []string{"ghost"}},
			call: func(h *harness) result { return h.call(im.PathDelContactGroup, delReq("ghost", "g")) },
			code: im.CodeNotImported, state: "g#1[1:u1 1:u2] other#2[1:u9]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.cfg)
			for _, r := range []result{h.call(im.PathCreateContactGroup, createReq("a", "g", c2c(1), c2c(2))),
				h.call(im.PathCreateContactGroup, createReq("a", "other", c2c(9)))} {
				if r.ErrorCode != 0 {
					t.Fatalf("setup: %d %s", r.ErrorCode, r.ErrorInfo)
				}
			}
			if tt.before != nil {
				tt.before(h)
			}
			r := tt.call(h)
			if r.ErrorCode != tt.code {
				t.Fatalf("code %d (%s), want %d", r.ErrorCode, r.ErrorInfo, tt.code)
			}
			if (r.ActionStatus == "OK") != (tt.code == 0) {
				t.Errorf("ActionStatus %q with code %d", r.ActionStatus, r.ErrorCode)
			}
			if got := itemCodes(r); !slices.Equal(got, tt.items) {
				t.Errorf("item codes %v, want %v", got, tt.items)
			}
			if tt.gname != "" && (r.UpdateGroupResult.GroupName != tt.gname || r.UpdateGroupResult.GroupID != 1) {
				t.Errorf("UpdateGroupResult %+v, want %s#1", r.UpdateGroupResult, tt.gname)
			}
			if got := groupNames(h.sim, "a"); got != tt.state {
				t.Errorf("state %q, want %q", got, tt.state)
			}
		})
	}
}

// TestDeleteFreesAGroupSlot: 51010 is a create's code (update and delete never make a group):
// at the limit a create answers it, a rename still works, and a delete makes room again.
func TestDeleteFreesAGroupSlot(t *testing.T) {
	h := newHarness(t, Config{MaxGroups: 3})
	for i := range 3 {
		if r := h.call(im.PathCreateContactGroup, createReq("a", fmt.Sprint("g", i), c2c(i))); r.ErrorCode != 0 {
			t.Fatalf("create %d: %d", i, r.ErrorCode)
		}
	}
	if r := h.call(im.PathCreateContactGroup, createReq("a", "g3", c2c(3))); r.ErrorCode != im.CodeTooManyGroups {
		t.Fatalf("a group over the limit: %d", r.ErrorCode)
	}
	if r := h.call(im.PathUpdateContactGroup, rename("a", "g0", "r0")); r.ErrorCode != 0 {
		t.Fatalf("rename at the limit: %d", r.ErrorCode)
	}
	if r := h.call(im.PathDelContactGroup, delReq("a", "g1")); r.ErrorCode != 0 {
		t.Fatalf("delete: %d", r.ErrorCode)
	}
	r := h.call(im.PathCreateContactGroup, createReq("a", "g3", c2c(3)))
	if r.ErrorCode != 0 || r.GroupResultItem[0].GroupItem.GroupID != 4 {
		t.Fatalf("create after a delete: %+v", r)
	}
	if got := groupNames(h.sim, "a"); got != "r0#1[1:u0] g2#3[1:u2] g3#4[1:u3]" {
		t.Fatalf("state %s", got)
	}
}

// TestEachAPIHasItsOwnWindow: in one second each of the four APIs admits RateLimit calls and
// answers the next 60007, whatever the others did; rate-limited calls change nothing.
func TestEachAPIHasItsOwnWindow(t *testing.T) {
	h := newHarness(t, Config{RateLimit: 20})
	h.call(im.PathCreateContactGroup, createReq("a", "g", c2c(1)))
	h.clock.Advance(2 * time.Second)
	bodies := map[string]struct {
		path string
		body func(i int) any
	}{
		im.APICreate: {im.PathCreateContactGroup, func(i int) any { return createReq("b", fmt.Sprint("c", i), c2c(i)) }},
		im.APIGet:    {im.PathGetContactGroup, func(int) any { return im.GetRequest{FromAccount: "a"} }},
		im.APIUpdate: {im.PathUpdateContactGroup, func(i int) any { return addDel("a", "g", im.ContactOptAdd, c2c(100+i)) }},
		im.APIDelete: {im.PathDelContactGroup, func(i int) any { return delReq("a", fmt.Sprint("missing", i)) }},
	}
	q := h.query()
	for i := range 21 { // interleaved: the APIs share the second, not the budget
		for _, api := range apiNames {
			b := bodies[api]
			r := h.post(b.path, q, b.body(i))
			switch {
			case i < 20 && r.ErrorCode == im.CodeFrequency:
				t.Fatalf("%s call %d rate limited", api, i)
			case i == 20 && r.ErrorCode != im.CodeFrequency:
				t.Fatalf("%s call 21 in a second answered %d, want 60007", api, r.ErrorCode)
			}
		}
	}
	st := h.sim.Stats()
	for _, api := range apiNames {
		if a := st.APIs[api]; a.Accepted != 20 && !(api == im.APICreate && a.Accepted == 21) || a.RateLimited != 1 || a.MaxWindow != 21 {
			t.Errorf("%s: %+v", api, a)
		}
	}
	// The rate-limited add (u120) did not happen; the 20 admitted ones did.
	g := h.sim.Groups("a")[0]
	if len(g.Contacts) != 21 || g.has(c2c(120)) {
		t.Errorf("group after the flood: %d conversations, u120 in: %v", len(g.Contacts), g.has(c2c(120)))
	}
	// A second later each window admits again.
	h.clock.Advance(time.Second)
	if r := h.post(im.PathDelContactGroup, q, delReq("a", "g")); r.ErrorCode != 0 {
		t.Fatalf("delete a second later: %d", r.ErrorCode)
	}
}

// TestFaultsByAPI: an API with faults of its own meets those instead of the shared ones, so
// deletes can fail while creates and updates go through.
func TestFaultsByAPI(t *testing.T) {
	h := newHarness(t, Config{Faults: Faults{
		ErrorRates: map[int]float64{60008: 1},
		ByAPI: map[string]Faults{
			im.APICreate: {},
			im.APIUpdate: {},
			im.APIDelete: {ErrorRates: map[int]float64{50004: 1}},
		},
	}})
	if r := h.call(im.PathCreateContactGroup, createReq("a", "g", c2c(1))); r.ErrorCode != 0 {
		t.Fatalf("create: %d", r.ErrorCode)
	}
	if r := h.call(im.PathUpdateContactGroup, rename("a", "g", "h")); r.ErrorCode != 0 {
		t.Fatalf("update: %d", r.ErrorCode)
	}
	if r := h.call(im.PathDelContactGroup, delReq("a", "h")); r.ErrorCode != 50004 {
		t.Fatalf("delete: %d, want the delete's own 50004", r.ErrorCode)
	}
	if r := h.call(im.PathGetContactGroup, im.GetRequest{FromAccount: "a"}); r.ErrorCode != 60008 {
		t.Fatalf("get: %d, want the shared 60008", r.ErrorCode)
	}
	if got := groupNames(h.sim, "a"); got != "h#1[1:u1]" {
		t.Fatalf("state %s: the failed delete applied", got)
	}
	// Apply-then-fail on updates only: applied, answered 50005.
	if err := h.sim.SetFaults(Faults{ByAPI: map[string]Faults{im.APIUpdate: {ApplyThenFailRate: 1}}}); err != nil {
		t.Fatal(err)
	}
	if r := h.call(im.PathUpdateContactGroup, rename("a", "h", "k")); r.ErrorCode != im.CodeTimeout {
		t.Fatalf("apply-then-fail update: %d", r.ErrorCode)
	}
	if r := h.call(im.PathDelContactGroup, delReq("a", "k")); r.ErrorCode != 0 {
		t.Fatalf("delete after the rename applied: %d", r.ErrorCode)
	}

	for name, f := range map[string]struct {
		f    Faults
		want string
	}{
		"unknown api":     {Faults{ByAPI: map[string]Faults{"drop_contact_group": {}}}, `by api: unknown api "drop_contact_group"`},
		"nested apis":     {Faults{ByAPI: map[string]Faults{im.APIDelete: {APIs: []string{im.APICreate}}}}, "by api del_contact_group: an entry sets neither"},
		"nested by api":   {Faults{ByAPI: map[string]Faults{im.APIDelete: {ByAPI: map[string]Faults{}}}}, "by api del_contact_group: an entry sets neither"},
		"bad entry rate":  {Faults{ByAPI: map[string]Faults{im.APIUpdate: {HangRate: 2}}}, "by api update_contact_group: hang rate 2 outside [0, 1]"},
		"entry sum":       {Faults{ByAPI: map[string]Faults{im.APIUpdate: {HangRate: 0.6, HTTP502Rate: 0.6}}}, "by api update_contact_group: rates sum to"},
		"entry latency":   {Faults{ByAPI: map[string]Faults{im.APIGet: {Latency: time.Hour}}}, "by api get_contact_group: latency over"},
		"entry lognormal": {Faults{ByAPI: map[string]Faults{im.APIGet: {LogNormalMean: time.Second}}}, "by api get_contact_group: set both lognormal"},
	} {
		err := f.f.Validate()
		if err == nil || !strings.Contains(err.Error(), f.want) {
			t.Errorf("%s: Validate = %v, want %q", name, err, f.want)
		}
		if err := h.sim.SetFaults(f.f); err == nil {
			t.Errorf("%s: SetFaults accepted it", name)
		}
	}
}

// TestFaultsByAPIOverAdmin: by_api travels through POST /admin/faults and back, and an unknown
// field inside an entry is refused rather than injecting nothing.
func TestFaultsByAPIOverAdmin(t *testing.T) {
	h := newHarness(t, Config{Admin: AdminConfig{Enabled: true}})
	post := func(body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/admin/faults", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := h.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		_, _ = fmt.Fprint(&b, resp.Header.Get("Content-Type"))
		return resp.StatusCode, b.String()
	}
	if code, _ := post(`{"latency":"1ms","by_api":{"del_contact_group":{"error_rates":{"50004":0.5},"latency":"20ms"}}}`); code != http.StatusOK {
		t.Fatalf("POST: %d", code)
	}
	f := h.sim.Faults()
	d := f.ByAPI[im.APIDelete]
	if f.Latency != time.Millisecond || d.Latency != 20*time.Millisecond || d.ErrorRates[50004] != 0.5 || len(f.ByAPI) != 1 {
		t.Fatalf("faults %+v", f)
	}
	for _, bad := range []string{
		`{"by_api":{"del_contact_group":{"eror_rates":{"50004":1}}}}`,
		`{"by_api":{"del_contact_group":{"hang_rate":1.5}}}`,
		`{"by_api":{"nope":{}}}`,
	} {
		if code, _ := post(bad); code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", bad, code)
		}
	}
	if got := h.sim.Faults().ByAPI[im.APIDelete]; got.ErrorRates[50004] != 0.5 {
		t.Errorf("a refused POST changed the faults: %+v", got)
	}
	b, err := json.Marshal(f)
	if err != nil || !strings.Contains(string(b), `"by_api":{"del_contact_group":{"latency":"20ms","error_rates":{"50004":0.5}}}`) {
		t.Errorf("marshalled %s, %v", b, err)
	}
}

// TestAccountFaultPerAPI: an account fault limited to some APIs answers only those calls of
// that account; its API fault goes before its all-API one, and each is removed on its own.
func TestAccountFaultPerAPI(t *testing.T) {
	h := newHarness(t, Config{})
	h.call(im.PathCreateContactGroup, createReq("a", "g", c2c(1)))
	h.sim.SetAccountFault("a", 50004, time.Hour, im.APIDelete, im.APIUpdate)
	if r := h.call(im.PathDelContactGroup, delReq("a", "g")); r.ErrorCode != 50004 {
		t.Fatalf("delete: %d", r.ErrorCode)
	}
	if r := h.call(im.PathUpdateContactGroup, rename("a", "g", "h")); r.ErrorCode != 50004 {
		t.Fatalf("update: %d", r.ErrorCode)
	}
	if r := h.call(im.PathCreateContactGroup, createReq("a", "g2", c2c(2))); r.ErrorCode != 0 {
		t.Fatalf("create: %d", r.ErrorCode)
	}
	if r := h.call(im.PathDelContactGroup, delReq("b", "x")); r.ErrorCode != im.CodeGroupNotFound {
		t.Fatalf("another account's delete: %d", r.ErrorCode)
	}
	h.sim.SetAccountFault("a", 70001, time.Hour) // every API
	if r := h.call(im.PathDelContactGroup, delReq("a", "g")); r.ErrorCode != 50004 {
		t.Fatalf("delete with both faults: %d, want its own 50004", r.ErrorCode)
	}
	if r := h.call(im.PathGetContactGroup, im.GetRequest{FromAccount: "a"}); r.ErrorCode != 70001 {
		t.Fatalf("get with the all-API fault: %d", r.ErrorCode)
	}
	h.sim.SetAccountFault("a", 0, 0, im.APIDelete)
	if r := h.call(im.PathDelContactGroup, delReq("a", "g")); r.ErrorCode != 70001 {
		t.Fatalf("delete after its own fault went: %d, want the all-API 70001", r.ErrorCode)
	}
	h.sim.SetAccountFault("a", 0, 0)
	if r := h.call(im.PathUpdateContactGroup, rename("a", "g", "h")); r.ErrorCode != 0 {
		t.Fatalf("update after every fault went: %d", r.ErrorCode)
	}
	if got := groupNames(h.sim, "a"); got != "h#1[1:u1] g2#2[1:u2]" {
		t.Fatalf("state %s", got)
	}
	h.sim.SetAccountFault("a", 50004, time.Minute, im.APIDelete)
	h.clock.Advance(time.Minute)
	if r := h.call(im.PathDelContactGroup, delReq("a", "h")); r.ErrorCode != 0 {
		t.Fatalf("delete after the fault expired: %d", r.ErrorCode)
	}
}

// TestAdminAccountFaultAPIs: /admin/account-fault takes "apis" and refuses an unknown one.
func TestAdminAccountFaultAPIs(t *testing.T) {
	h := newHarness(t, Config{Admin: AdminConfig{Enabled: true}})
	post := func(body string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/admin/account-fault", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := h.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := post(`{"account":"a","code":50004,"duration":"1h","apis":["nope"]}`); c != http.StatusBadRequest {
		t.Fatalf("unknown api: %d", c)
	}
	if c := post(`{"account":"a","code":50004,"duration":"1h","apis":["del_contact_group"]}`); c != http.StatusNoContent {
		t.Fatalf("delete-only fault: %d", c)
	}
	h.call(im.PathCreateContactGroup, createReq("a", "g", c2c(1)))
	if r := h.call(im.PathDelContactGroup, delReq("a", "g")); r.ErrorCode != 50004 {
		t.Fatalf("delete: %d", r.ErrorCode)
	}
	if len(h.sim.Groups("a")) != 1 {
		t.Fatal("the unknown-api POST or the create went wrong")
	}
}

// TestCallLogLifecycle: the call log says, per update and delete, what was asked (old and new
// name, update type, each conversation with its operation, the names deleted) and what changed
// (Applied, per-item results and changes, Deleted), also when a fault answered something else
// after applying, and when a call succeeded without changing anything.
func TestCallLogLifecycle(t *testing.T) {
	h := newHarness(t, Config{CallLog: true, DeleteMissingOK: true, MaxContacts: 3})
	h.call(im.PathCreateContactGroup, createReq("a", "g", c2c(1), c2c(2)))
	h.call(im.PathUpdateContactGroup, rename("a", "g", "h"))
	mixed := addDel("a", "h", im.ContactOptAdd, c2c(1), c2c(3), c2c(4))
	mixed.UpdateGroup.ContactUpdateItem = append(mixed.UpdateGroup.ContactUpdateItem, im.ContactUpdateItem{ContactOptType: im.ContactOptDel, ContactItem: c2c(2)})
	h.call(im.PathUpdateContactGroup, mixed) // u1 already in, u3 added, u4 over 3, u2 removed
	h.call(im.PathUpdateContactGroup, rename("a", "h", "h"))
	h.call(im.PathUpdateContactGroup, rename("a", "nope", "x"))
	if err := h.sim.SetFaults(Faults{ByAPI: map[string]Faults{im.APIDelete: {ApplyThenFailRate: 1}}}); err != nil {
		t.Fatal(err)
	}
	h.call(im.PathDelContactGroup, delReq("a", "h", "missing"))
	if err := h.sim.SetFaults(Faults{}); err != nil {
		t.Fatal(err)
	}
	h.call(im.PathDelContactGroup, delReq("a", "h"))
	h.call(im.PathUpdateContactGroup, `{"From_Account":"a","UpdateType":1,"UpdateGroup":{"UpdateGroupType":"one","OldGroupName":"g"}}`)

	calls := h.sim.Calls()
	want := []Call{
		{API: im.APICreate, Account: "a", Group: "g", Contacts: []im.ContactItem{c2c(1), c2c(2)}, Applied: true,
			Results: []int{0, 0}, Changed: []bool{true, true}},
		{API: im.APIUpdate, Account: "a", Group: "g", NewGroup: "h", UpdateType: 1, Applied: true},
		{API: im.APIUpdate, Account: "a", Group: "h", UpdateType: 2, Contacts: []im.ContactItem{c2c(1), c2c(3), c2c(4), c2c(2)},
			Ops: []int{1, 1, 1, 2}, Applied: true, Results: []int{0, 0, im.CodeTooManyContacts, 0}, Changed: []bool{false, true, false, true}},
		{API: im.APIUpdate, Account: "a", Group: "h", NewGroup: "h", UpdateType: 1},
		{API: im.APIUpdate, Account: "a", Group: "nope", NewGroup: "x", UpdateType: 1, Code: im.CodeGroupNotFound},
		{API: im.APIDelete, Account: "a", Group: "h", MoreGroups: []string{"missing"}, Code: im.CodeTimeout, Applied: true, Deleted: []string{"h"}},
		{API: im.APIDelete, Account: "a", Group: "h"},
		{API: im.APIUpdate, Account: "a", Group: "g", Code: im.CodeBadParams},
	}
	if len(calls) != len(want) {
		t.Fatalf("%d calls logged, want %d: %+v", len(calls), len(want), calls)
	}
	for i, w := range want {
		c := calls[i]
		if c.Start.IsZero() || c.End.Before(c.Start) {
			t.Errorf("call %d: start %v end %v", i, c.Start, c.End)
		}
		c.Start, c.End, c.Info = time.Time{}, time.Time{}, ""
		if fmt.Sprintf("%+v", c) != fmt.Sprintf("%+v", w) {
			t.Errorf("call %d:\n got %+v\nwant %+v", i, c, w)
		}
	}
	// The JSON form the chaos checker reads carries the same fields.
	b, err := json.Marshal(calls[2])
	if err != nil {
		t.Fatal(err)
	}
	var back Call
	if err := json.Unmarshal(b, &back); err != nil || fmt.Sprintf("%+v", back) != fmt.Sprintf("%+v", calls[2]) {
		t.Errorf("JSON round trip: %s → %+v (%v)", b, back, err)
	}
}

// TestStateFileLifecycle: the state file carries renames, adds, removes and deletes across a
// restart — names, ids, conversations, the next id (never reused) and the 1000 count.
func TestStateFileLifecycle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	h := newHarness(t, Config{MaxContacts: 4})
	h.call(im.PathCreateContactGroup, createReq("a", "g1", c2c(1), c2c(2)))
	h.call(im.PathCreateContactGroup, createReq("a", "g2", c2c(2)))
	h.call(im.PathCreateContactGroup, createReq("a", "g3", c2c(3)))
	h.call(im.PathCreateContactGroup, createReq("b", "g1", im.ContactItem{Type: 2, ToGroupID: "@TGS#1"}))
	h.call(im.PathUpdateContactGroup, rename("a", "g1", "renamed"))
	h.call(im.PathUpdateContactGroup, addDel("a", "g2", im.ContactOptAdd, c2c(4)))
	h.call(im.PathUpdateContactGroup, addDel("a", "renamed", im.ContactOptDel, c2c(1)))
	h.call(im.PathDelContactGroup, delReq("a", "g3"))
	h.call(im.PathDelContactGroup, delReq("b", "g1"))
	before := map[string]string{"a": groupNames(h.sim, "a"), "b": groupNames(h.sim, "b")}
	if before["a"] != "renamed#1[1:u2] g2#2[1:u2 1:u4]" || before["b"] != "" {
		t.Fatalf("state before the restart: %v", before)
	}
	if err := h.sim.SaveState(path); err != nil {
		t.Fatal(err)
	}

	h2 := newHarness(t, Config{MaxContacts: 4})
	if err := h2.sim.LoadState(path); err != nil {
		t.Fatal(err)
	}
	for _, acct := range []string{"a", "b"} {
		if got := groupNames(h2.sim, acct); got != before[acct] {
			t.Errorf("%s after the restart: %q, want %q", acct, got, before[acct])
		}
	}
	// The old name is gone, the new one addressable; ids go on after the deleted g3 (id 3).
	if r := h2.call(im.PathUpdateContactGroup, rename("a", "g1", "x")); r.ErrorCode != im.CodeGroupNotFound {
		t.Errorf("rename by the old name after the restart: %d", r.ErrorCode)
	}
	r := h2.call(im.PathCreateContactGroup, createReq("a", "g4", c2c(5), c2c(6), c2c(7)))
	if r.ErrorCode != 0 || r.GroupResultItem[0].GroupItem.GroupID != 4 {
		t.Fatalf("create after the restart: %+v", r)
	}
	// u2, u4 counted from the file: u5, u6 fit the 4, u7 does not.
	if got := r.GroupResultItem[0].ResultItem; got[0].ResultCode != 0 || got[1].ResultCode != 0 || got[2].ResultCode != im.CodeTooManyContacts {
		t.Errorf("per-item codes after the restart: %+v", got)
	}
	r = h2.call(im.PathCreateContactGroup, createReq("b", "g1", c2c(1)))
	if r.ErrorCode != 0 || r.GroupResultItem[0].GroupItem.GroupID != 2 {
		t.Errorf("b's next id after its only group was deleted: %+v", r)
	}
}

// TestLoadStateRefusesImpossibleState: a state file the simulator could not have written under
// its Config is refused with each problem named, and the state in memory is left as it was.
func TestLoadStateRefusesImpossibleState(t *testing.T) {
	dir := t.TempDir()
	grp := func(name string, id int, contacts string) string {
		return fmt.Sprintf(`{"GroupName":%q,"GroupId":%d,"Contacts":[%s]}`, name, id, contacts)
	}
	u := func(n int) string { return fmt.Sprintf(`{"Type":1,"To_Account":"u%d"}`, n) }
	acct := func(groups ...string) string { return `{"Groups":[` + strings.Join(groups, ",") + `],"NextID":9}` }
	tests := []struct {
		name, file, want string
	}{
		{"not JSON", `{"a":`, "unexpected end of JSON"},
		{"wrong shape", `{"a":{"Groups":"g"}}`, "cannot unmarshal"},
		{"bad account", `{"":` + acct(grp("g", 1, u(1))) + `}`, `account "": From_Account must be 1-32 bytes`},
		{"empty name", `{"a":` + acct(grp("", 1, u(1))) + `}`, `group "": GroupName must be non-empty`},
		{"long name", `{"a":` + acct(grp(strings.Repeat("n", 33), 1, u(1))) + `}`, "GroupName over 32 bytes"},
		{"duplicate name", `{"a":` + acct(grp("g", 1, u(1)), grp("g", 2, u(2))) + `}`, `group name "g" twice`},
		{"duplicate id", `{"a":` + acct(grp("g", 1, u(1)), grp("h", 1, u(2))) + `}`, `group "h": id 1 is not positive or is used twice`},
		{"zero id", `{"a":` + acct(grp("g", 0, u(1))) + `}`, `group "g": id 0`},
		{"bad contact", `{"a":` + acct(grp("g", 1, `{"Type":3}`)) + `}`, "Type must be 1 (c2c) or 2 (group)"},
		{"contact twice", `{"a":` + acct(grp("g", 1, u(1)+","+u(1))) + `}`, "conversation 1:u1 twice"},
		{"too many groups", `{"a":` + acct(grp("g", 1, u(1)), grp("h", 2, u(1)), grp("i", 3, u(1))) + `}`, "3 groups, over the limit of 2"},
		{"too many conversations", `{"a":` + acct(grp("g", 1, u(1)+","+u(2)), grp("h", 2, u(3)+","+u(4))) + `}`, "4 grouped conversations, over the limit of 3"},
		{"null group", `{"a":{"Groups":[null]}}`, "group 0 is null"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{MaxGroups: 2, MaxContacts: 3})
			h.call(im.PathCreateContactGroup, createReq("keep", "g", c2c(1)))
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".json")
			if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			err := h.sim.LoadState(path)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("LoadState = %v, want an error naming the file and %q", err, tt.want)
			}
			if got := groupNames(h.sim, "keep"); got != "g#1[1:u1]" {
				t.Errorf("a refused file changed the state: %q", got)
			}
		})
	}
	// Duplicate names load when the Config allows them (a rename could have made them).
	h := newHarness(t, Config{RenameDuplicates: DuplicateAllow})
	path := filepath.Join(dir, "dups.json")
	if err := os.WriteFile(path, []byte(`{"a":`+acct(grp("g", 1, u(1)), grp("g", 2, u(2)))+`}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.sim.LoadState(path); err != nil {
		t.Fatalf("duplicates allowed: %v", err)
	}
}
