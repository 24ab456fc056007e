package dispatcher

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/internal/fakeclock"
	"github.com/chatgroupd/chatgroupd/metrics"
	"github.com/chatgroupd/chatgroupd/ratelimit"
)

// step is one scripted answer: err is returned; with apply the call is carried out first (the
// "applied, then timed out" case).
type step struct {
	err   error
	apply bool
}

// fakeAPI is an in-memory conversation-group store that mimics *im.Client's return values, with
// scripted failures per API.
type fakeAPI struct {
	mu        sync.Mutex
	groups    map[string][]*fakeGroup // account → groups
	nextID    int64
	script    map[string][]step // api → the next answers; success once empty
	always    map[string]error  // api → answered to every call while set (probes included)
	itemCodes map[string]int    // contact key → per-item code (partial results)
	calls     map[string]int
	refreshes int
	gate      chan struct{}       // when set, creates wait for it to close
	entered   int                 // creates that reached the fake, gated or not
	pageSize  int                 // conversations per get page; 0: everything in one page
	updates   []*im.UpdateRequest // every update_contact_group request received
	// removeMissing is the per-item code of removing a conversation not in the group (0: success).
	removeMissing int
}

type fakeGroup struct {
	name     string
	id       int64
	contacts []im.ContactItem
}

func newFakeAPI() *fakeAPI {
	return &fakeAPI{groups: map[string][]*fakeGroup{}, script: map[string][]step{}, always: map[string]error{},
		itemCodes: map[string]int{}, calls: map[string]int{}}
}

func imErr(api string, code int) *im.Error {
	return &im.Error{API: api, Class: im.Classify(code), Code: code, Info: "fake " + api, HTTPStatus: 200}
}

// fail scripts answers for api's next calls.
func (f *fakeAPI) fail(api string, steps ...step) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script[api] = append(f.script[api], steps...)
}

// failCodes scripts n answers with IM code for api.
func (f *fakeAPI) failCodes(api string, code, n int) {
	for range n {
		f.fail(api, step{err: imErr(api, code)})
	}
}

func (f *fakeAPI) setAlways(api string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.always, api)
	} else {
		f.always[api] = err
	}
}

func (f *fakeAPI) count(api string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[api]
}

func (f *fakeAPI) refreshCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refreshes
}

// group returns account's group name (nil when absent).
func (f *fakeAPI) group(account, name string) *fakeGroup {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, g := range f.groups[account] {
		if g.name == name {
			return g
		}
	}
	return nil
}

func (f *fakeAPI) groupCount(account string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.groups[account])
}

// lastUpdate is the last update_contact_group request received (nil: none).
func (f *fakeAPI) lastUpdate() *im.UpdateRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.updates) == 0 {
		return nil
	}
	return f.updates[len(f.updates)-1]
}

// seed creates a group directly, as if an earlier attempt had applied it.
func (f *fakeAPI) seed(account, name string, contacts ...im.ContactItem) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	f.groups[account] = append(f.groups[account], &fakeGroup{name: name, id: f.nextID, contacts: contacts})
}

// next consumes one scripted step for api. Callers hold mu.
func (f *fakeAPI) next(api string) (step, bool) {
	f.calls[api]++
	if err := f.always[api]; err != nil {
		return step{err: err}, true
	}
	s := f.script[api]
	if len(s) == 0 {
		return step{}, false
	}
	f.script[api] = s[1:]
	return s[0], true
}

func (f *fakeAPI) addLocked(g *fakeGroup, c im.ContactItem) im.ContactResult {
	if code := f.itemCodes[c.Key()]; code != 0 {
		return im.ContactResult{ContactItem: c, ResultCode: code, ResultInfo: "fake item failure"}
	}
	for _, have := range g.contacts {
		if have == c {
			return im.ContactResult{ContactItem: c}
		}
	}
	g.contacts = append(g.contacts, c)
	return im.ContactResult{ContactItem: c}
}

func (f *fakeAPI) CreateContactGroup(ctx context.Context, req *im.CreateRequest) (*im.CreateResponse, error) {
	f.mu.Lock()
	gate := f.gate
	f.entered++
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, &im.Error{API: im.APICreate, Class: im.ClassTransient, Network: true, Err: ctx.Err()}
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, scripted := f.next(im.APICreate)
	if scripted && !s.apply {
		return nil, s.err
	}
	item := req.GroupContactItem[0]
	for _, g := range f.groups[req.FromAccount] {
		if g.name == item.GroupName {
			return nil, imErr(im.APICreate, im.CodeBadParams) // duplicate names are rejected
		}
	}
	f.nextID++
	g := &fakeGroup{name: item.GroupName, id: f.nextID}
	var res []im.ContactResult
	failed := false
	for _, c := range item.ContactItem {
		r := f.addLocked(g, c)
		failed = failed || r.ResultCode != 0
		res = append(res, r)
	}
	f.groups[req.FromAccount] = append(f.groups[req.FromAccount], g)
	if scripted {
		return nil, s.err
	}
	gi := im.GroupItem{GroupName: g.name, GroupID: g.id}
	resp := &im.CreateResponse{BaseResponse: im.BaseResponse{ActionStatus: "OK"},
		GroupResultItem: []im.GroupResultItem{{GroupItem: gi, ResultItem: res}}}
	if failed {
		return resp, im.PartialResult(im.APICreate, res, &gi)
	}
	return resp, nil
}

func (f *fakeAPI) GetContactGroup(ctx context.Context, req *im.GetRequest) (*im.GetResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, scripted := f.next(im.APIGet); scripted {
		return nil, s.err
	}
	resp := &im.GetResponse{BaseResponse: im.BaseResponse{ActionStatus: "OK"}, CompleteFlag: 1}
	byKey := map[string]*im.ContactInfo{}
	for _, g := range f.groups[req.FromAccount] {
		resp.GroupItem = append(resp.GroupItem, im.GroupItem{GroupName: g.name, GroupID: g.id})
		for _, c := range g.contacts {
			ci := byKey[c.Key()]
			if ci == nil {
				ci = &im.ContactInfo{Type: c.Type, ToAccount: c.ToAccount, ToGroupID: c.ToGroupID}
				byKey[c.Key()] = ci
			}
			ci.ContactGroupID = append(ci.ContactGroupID, g.id)
		}
	}
	for _, ci := range byKey {
		resp.ContactItem = append(resp.ContactItem, *ci)
	}
	slices.SortFunc(resp.ContactItem, func(a, b im.ContactInfo) int { return strings.Compare(a.Item().Key(), b.Item().Key()) })
	if f.pageSize > 0 {
		all := resp.ContactItem
		start := min(req.StartIndex, len(all))
		end := min(start+f.pageSize, len(all))
		resp.ContactItem, resp.NextStartIndex = all[start:end], end
		if end < len(all) {
			resp.CompleteFlag = 0
		}
	}
	return resp, nil
}

func (f *fakeAPI) UpdateContactGroup(ctx context.Context, req *im.UpdateRequest) (*im.UpdateResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, scripted := f.next(im.APIUpdate)
	f.updates = append(f.updates, req)
	if scripted && !s.apply {
		return nil, s.err
	}
	var g *fakeGroup
	for _, x := range f.groups[req.FromAccount] {
		if x.name == req.UpdateGroup.OldGroupName {
			g = x
		}
	}
	if g == nil {
		return nil, imErr(im.APIUpdate, im.CodeGroupNotFound)
	}
	if req.UpdateGroup.UpdateGroupType == im.UpdateGroupTypeRename {
		for _, x := range f.groups[req.FromAccount] {
			if x != g && x.name == req.UpdateGroup.NewGroupName {
				return nil, imErr(im.APIUpdate, im.CodeBadParams) // a rename onto an existing name
			}
		}
		g.name = req.UpdateGroup.NewGroupName
	}
	var res []im.ContactResult
	failed := false
	resp := &im.UpdateResponse{BaseResponse: im.BaseResponse{ActionStatus: "OK"},
		UpdateGroupResult: im.UpdateGroupResult{GroupName: g.name, GroupID: g.id}}
	for _, it := range req.UpdateGroup.ContactUpdateItem {
		var r im.ContactResult
		if it.ContactOptType == im.ContactOptDel {
			r = f.removeLocked(g, it.ContactItem)
		} else {
			r = f.addLocked(g, it.ContactItem)
		}
		failed = failed || r.ResultCode != 0
		res = append(res, r)
		resp.UpdateGroupResult.ContactResultItem = append(resp.UpdateGroupResult.ContactResultItem, im.ContactUpdateResult{
			ContactOptType: it.ContactOptType, ContactItem: it.ContactItem, ResultCode: r.ResultCode, ResultInfo: r.ResultInfo})
	}
	if scripted {
		return nil, s.err
	}
	if failed {
		return resp, im.PartialResult(im.APIUpdate, res, &im.GroupItem{GroupName: g.name, GroupID: g.id})
	}
	return resp, nil
}

// removeLocked takes c out of g; removing what is not there succeeds, unless removeMissing
// sets a code for it. Callers hold mu.
func (f *fakeAPI) removeLocked(g *fakeGroup, c im.ContactItem) im.ContactResult {
	i := slices.Index(g.contacts, c)
	if i < 0 && f.removeMissing != 0 {
		return im.ContactResult{ContactItem: c, ResultCode: f.removeMissing, ResultInfo: "fake: not in the group"}
	}
	if i >= 0 {
		g.contacts = slices.Delete(g.contacts, i, i+1)
	}
	return im.ContactResult{ContactItem: c}
}

func (f *fakeAPI) DelContactGroup(ctx context.Context, req *im.DeleteRequest) (*im.DeleteResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, scripted := f.next(im.APIDelete)
	if scripted && !s.apply {
		return nil, s.err
	}
	for _, name := range req.GroupName {
		i := slices.IndexFunc(f.groups[req.FromAccount], func(g *fakeGroup) bool { return g.name == name })
		if i < 0 {
			return nil, imErr(im.APIDelete, im.CodeGroupNotFound)
		}
		f.groups[req.FromAccount] = slices.Delete(f.groups[req.FromAccount], i, i+1)
	}
	if scripted {
		return nil, s.err
	}
	return &im.DeleteResponse{BaseResponse: im.BaseResponse{ActionStatus: "OK"}}, nil
}

func (f *fakeAPI) RefreshSig() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refreshes++
}

// newFakeClock returns a clock that advances only when something sleeps, so retry budgets of
// an hour pass in milliseconds.
func newFakeClock() *fakeclock.Clock { return fakeclock.New(time.Unix(1800000000, 0)) }

// harness is a Dispatcher on a fake API and clock, with its own metrics registry.
type harness struct {
	t     *testing.T
	api   *fakeAPI
	clock *fakeclock.Clock
	reg   *prometheus.Registry
	m     *metrics.Metrics
	d     *Dispatcher
}

func newHarness(t *testing.T, tweak func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t, api: newFakeAPI(), clock: newFakeClock(), reg: prometheus.NewRegistry()}
	h.m = metrics.New(h.reg, "test", false)
	cfg := Config{API: h.api, Limiter: ratelimit.Config{Standalone: true}, Metrics: h.m, Now: h.clock.Now, Sleep: h.clock.Sleep,
		RateLimit: 1000, GetRateLimit: 1000, UpdateRateLimit: 1000, DeleteRateLimit: 1000, RetryBudget: time.Minute}
	if tweak != nil {
		tweak(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.d = d
	return h
}

// run starts d.Run until the test ends.
func (h *harness) run() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.d.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				h.t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			h.t.Error("Run did not return after cancel")
		}
	})
}

// dispatch runs Dispatch with a test timeout.
func (h *harness) dispatch(task Task) Outcome {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o, err := h.d.Dispatch(ctx, task)
	if err != nil {
		h.t.Fatalf("Dispatch: %v", err)
	}
	return o
}

// async runs Dispatch in the background.
func (h *harness) async(ctx context.Context, task Task) <-chan result {
	ch := make(chan result, 1)
	go func() {
		o, err := h.d.Dispatch(ctx, task)
		ch <- result{o, err}
	}()
	return ch
}

type result struct {
	o   Outcome
	err error
}

// wantApplied waits up to within for the Dispatch behind ch (from async) to end, and fails the
// test unless it ended applied. what names it in the failure.
func wantApplied(t *testing.T, what string, ch <-chan result, within time.Duration) {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil || r.o.Result != Applied {
			t.Fatalf("%s = %+v, %v; want applied", what, r.o, r.err)
		}
	case <-time.After(within):
		t.Fatalf("%s did not resume within %v", what, within)
	}
}

func c2c(acct string) event.Contact { return event.Contact{Type: event.ContactC2C, ToAccount: acct} }

func item(acct string) im.ContactItem { return im.ContactItem{Type: im.ContactC2C, ToAccount: acct} }

func newEvent(account, group string, contacts ...event.Contact) *event.Event {
	if len(contacts) == 0 {
		contacts = []event.Contact{c2c("bob"), {Type: event.ContactGroup, ToGroupID: "@TGS#1"}}
	}
	return &event.Event{EventID: "e-" + account + "-" + group, EventType: event.TypeContactGroupCreated,
		FromAccount: account, GroupName: group, Contacts: contacts}
}

var errNetwork = errors.New("connection reset by peer")
