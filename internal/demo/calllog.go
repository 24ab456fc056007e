package demo

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"path"
	"slices"
	"sync"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
)

// Call is one request the demo's simulator answered, as its front door saw it.
type Call struct {
	API     string // create_contact_group, ...
	Arrived time.Time
	Done    time.Time
	Code    int    // the answer's ErrorCode; -502 for an HTTP 502, -1 when unreadable
	Account string // create only
	Group   string // create only
}

// callLog records every API call the simulator answers: the demo's own account of what reached
// the API, independent of chatgroupd's counters. It wraps the simulator's handler.
type callLog struct {
	next  http.Handler
	mu    sync.Mutex
	calls []Call
}

func (l *callLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := Call{API: path.Base(r.URL.Path), Arrived: time.Now()}
	var body []byte
	if c.API == im.APICreate && r.Body != nil {
		body, _ = io.ReadAll(io.LimitReader(r.Body, 4<<20))
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	rec := &answerRecorder{ResponseWriter: w, status: http.StatusOK}
	l.next.ServeHTTP(rec, r)
	c.Done = time.Now()
	// Decoded after the simulator answered, so the log adds no work before the simulator's own
	// rate accounting sees the call.
	var req im.CreateRequest
	if body != nil && json.Unmarshal(body, &req) == nil {
		c.Account = req.FromAccount
		if len(req.GroupContactItem) > 0 {
			c.Group = req.GroupContactItem[0].GroupName
		}
	}
	c.Code = -1
	if rec.status == http.StatusBadGateway {
		c.Code = -502
	} else {
		var ans struct {
			ErrorCode *int `json:"ErrorCode"`
		}
		if json.Unmarshal(rec.body.Bytes(), &ans) == nil && ans.ErrorCode != nil {
			c.Code = *ans.ErrorCode
		}
	}
	l.mu.Lock()
	l.calls = append(l.calls, c)
	l.mu.Unlock()
}

// snapshot returns a copy of the calls so far.
func (l *callLog) snapshot() []Call {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls)
}

// answerRecorder keeps a copy of the status and body the simulator wrote.
type answerRecorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (a *answerRecorder) WriteHeader(code int) {
	a.status = code
	a.ResponseWriter.WriteHeader(code)
}

func (a *answerRecorder) Write(b []byte) (int, error) {
	if a.body.Len() < 64<<10 {
		a.body.Write(b)
	}
	return a.ResponseWriter.Write(b)
}

// Flush passes through, for handlers that stream.
func (a *answerRecorder) Flush() {
	if f, ok := a.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
