package imsim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
)

// Call is one API call as the call log holds it (Config.CallLog): who called what, when the
// handler started and when its answer was decided, and what became of it. End is taken before
// the answer is written, so a client that sends its next call only after reading the answer can
// never appear to overlap with itself.
type Call struct {
	API     string `json:"api"`
	Account string `json:"account"`
	// Group is the group the call names: a create's GroupName, an update's OldGroupName, a
	// delete's first GroupName; empty for get.
	Group string `json:"group,omitempty"`
	// NewGroup is a rename's NewGroupName (update, UpdateType 1).
	NewGroup string `json:"new_group,omitempty"`
	// UpdateType is an update's UpdateGroupType: 1 rename, 2 add/remove conversations.
	UpdateType int `json:"update_type,omitempty"`
	// MoreGroups are a delete's GroupName entries after the first (the API takes a list; the
	// event contract sends one).
	MoreGroups []string `json:"more_groups,omitempty"`
	// Contacts are a create's conversations, or an add/remove's (update, UpdateType 2), whose
	// Ops holds the ContactOptType of each (1 add, 2 remove).
	Contacts []im.ContactItem `json:"contacts,omitempty"`
	Ops      []int            `json:"ops,omitempty"`
	Start    time.Time        `json:"start"`
	// Arrived is when the request's bytes reached the server's socket (the kernel's receive
	// time; Linux, Serve only), zero when unknown. Start can be much later on a starved machine.
	Arrived time.Time `json:"arrived,omitzero"`
	End     time.Time `json:"end"`
	// Code is the IM code answered (0 success), -502 for an HTTP 502, -1 when the client went
	// away before an answer.
	Code int    `json:"code"`
	Info string `json:"info,omitempty"`
	// Applied is set when a create, update or delete changed state, whatever was answered (an
	// apply-then-fail call is applied and answers 50005). A call that succeeded without changing
	// anything is not: an add of a conversation already in the group, a rename onto the group's
	// own name, a delete of only missing groups with Config.DeleteMissingOK.
	Applied bool `json:"applied,omitempty"`
	// Results and Changed hold, per entry of Contacts, the ResultCode the state change produced
	// and whether that conversation was added to (or removed from) the group; set for creates and
	// add/removes that reached the state, even when a fault then answered something else.
	Results []int  `json:"results,omitempty"`
	Changed []bool `json:"changed,omitempty"`
	// Deleted are the groups a delete removed.
	Deleted []string `json:"deleted,omitempty"`
}

// callState is the call log and the per-account latencies. It has its own lock so logging never
// contends with the rate windows.
type callState struct {
	mu      sync.Mutex
	calls   []Call
	latency map[string]time.Duration
}

type callKey struct{}

// serveLogged serves one API call, adding the account's latency and logging the call when the
// log is on.
func (s *Server) serveLogged(w http.ResponseWriter, r *http.Request, api string) {
	s.cs.mu.Lock()
	active := s.cfg.CallLog || len(s.cs.latency) > 0
	s.cs.mu.Unlock()
	if !active || r.Method != http.MethodPost {
		s.serveAPI(w, r, api)
		return
	}
	c := &Call{API: api, Start: s.cfg.Now()}
	if ac, ok := r.Context().Value(connKey{}).(*arrivalConn); ok {
		// The last segment the server read before this handler began: the request's, since a
		// client sends its next request on a connection only after this one's answer.
		c.Arrived = ac.arrived()
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	if err != nil {
		c.End, c.Code = s.cfg.Now(), -1
		s.logCall(c)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	describeCall(c, body)
	s.cs.mu.Lock()
	d := s.cs.latency[c.Account]
	s.cs.mu.Unlock()
	if d > 0 && !s.sleep(r.Context(), d) {
		c.End, c.Code = s.cfg.Now(), -1
		s.logCall(c)
		return
	}
	cw := &callWriter{ResponseWriter: w, s: s, c: c}
	s.serveAPI(cw, r.WithContext(context.WithValue(r.Context(), callKey{}, c)), api)
	switch {
	case c.End.IsZero():
		c.End, c.Code = s.cfg.Now(), -1
	case cw.status == http.StatusBadGateway:
		c.Code = -502
	case cw.status == http.StatusOK:
		var resp im.BaseResponse
		if json.Unmarshal(cw.body.Bytes(), &resp) == nil {
			c.Code, c.Info = resp.ErrorCode, resp.ErrorInfo
		}
	}
	s.logCall(c)
}

// describeCall fills c's account and request fields from body. A body that does not decode
// (bad JSON, a field of the wrong type) leaves what did decode: the simulator answers it 50002,
// and the log still says whose it was when it can.
func describeCall(c *Call, body []byte) {
	switch c.API {
	case im.APICreate:
		var req im.CreateRequest
		_ = json.Unmarshal(body, &req) // best effort, see above
		c.Account = req.FromAccount
		if len(req.GroupContactItem) > 0 {
			c.Group, c.Contacts = req.GroupContactItem[0].GroupName, req.GroupContactItem[0].ContactItem
		}
	case im.APIUpdate:
		var req im.UpdateRequest
		_ = json.Unmarshal(body, &req)
		u := req.UpdateGroup
		c.Account, c.Group, c.NewGroup, c.UpdateType = req.FromAccount, u.OldGroupName, u.NewGroupName, u.UpdateGroupType
		for _, it := range u.ContactUpdateItem {
			c.Contacts = append(c.Contacts, it.ContactItem)
			c.Ops = append(c.Ops, it.ContactOptType)
		}
	case im.APIDelete:
		var req im.DeleteRequest
		_ = json.Unmarshal(body, &req)
		c.Account = req.FromAccount
		if len(req.GroupName) > 0 {
			c.Group, c.MoreGroups = req.GroupName[0], req.GroupName[1:]
		}
	default:
		var req im.GetRequest
		_ = json.Unmarshal(body, &req)
		c.Account = req.FromAccount
	}
	if len(c.MoreGroups) == 0 {
		c.MoreGroups = nil
	}
}

// markApplied records on the call being served what its request changed.
func markApplied(ctx context.Context, resp *response) {
	c, ok := ctx.Value(callKey{}).(*Call)
	if !ok {
		return
	}
	e := resp.effect
	c.Applied, c.Results, c.Changed, c.Deleted = e.applied, e.results, e.changed, e.deleted
}

func (s *Server) logCall(c *Call) {
	if !s.cfg.CallLog {
		return
	}
	s.cs.mu.Lock()
	s.cs.calls = append(s.cs.calls, *c)
	s.cs.mu.Unlock()
}

// callWriter notes when the answer is decided (its first header write) and keeps the start of
// the body to read the IM code from.
type callWriter struct {
	http.ResponseWriter
	s      *Server
	c      *Call
	status int
	body   bytes.Buffer
}

func (w *callWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
		w.c.End = w.s.cfg.Now()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *callWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if room := 64<<10 - w.body.Len(); room > 0 {
		w.body.Write(b[:min(len(b), room)])
	}
	return w.ResponseWriter.Write(b)
}

// Calls returns a copy of the call log in the order calls ended (empty unless Config.CallLog).
func (s *Server) Calls() []Call {
	s.cs.mu.Lock()
	defer s.cs.mu.Unlock()
	out := make([]Call, len(s.cs.calls))
	copy(out, s.cs.calls)
	return out
}

// SetAccountLatency makes every call from account wait d before it reaches the API (rate
// limit, faults, state), as for a user whose calls are slow; 0 removes it.
func (s *Server) SetAccountLatency(account string, d time.Duration) {
	s.cs.mu.Lock()
	defer s.cs.mu.Unlock()
	if d <= 0 {
		delete(s.cs.latency, account)
		return
	}
	s.cs.latency[account] = d
}

// AccountLatency is the /admin/account-latency body.
type AccountLatency struct {
	Account string `json:"account"`
	// Latency is a Go duration ("5s"); empty or "0s" removes the account's latency.
	Latency string `json:"latency"`
}

func (s *Server) serveAccountLatency(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var al AccountLatency
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err == nil {
		err = decodeStrict(body, &al)
	}
	var d time.Duration
	if err == nil && al.Latency != "" {
		d, err = time.ParseDuration(al.Latency)
	}
	switch {
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	case al.Account == "" || d < 0:
		http.Error(w, "imsim: account is required and latency must not be negative", http.StatusBadRequest)
		return
	case d > MaxLatency:
		http.Error(w, fmt.Sprintf("imsim: latency over %v", MaxLatency), http.StatusBadRequest)
		return
	}
	s.SetAccountLatency(al.Account, d)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) serveCalls(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	if !s.cfg.CallLog {
		http.Error(w, "imsim: call log is off (start with --call-log)", http.StatusNotFound)
		return
	}
	writeJSON(w, http.StatusOK, s.Calls())
}
