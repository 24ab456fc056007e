package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"path"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/im"
)

// apiCall is one request the demo's simulator answered, as its front door saw it.
type apiCall struct {
	api     string // create_contact_group, ...
	arrived time.Time
	done    time.Time
	code    int    // the answer's ErrorCode; -502 for an HTTP 502, -1 when unreadable
	account string // create only
	group   string // create only
}

// callLog records every API call the simulator answers: the demo's own account of what reached
// the API, independent of chatgroupd's counters. It wraps the simulator's handler.
type callLog struct {
	next  http.Handler
	mu    sync.Mutex
	calls []apiCall
}

func (l *callLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := apiCall{api: path.Base(r.URL.Path), arrived: time.Now()}
	var body []byte
	if c.api == im.APICreate && r.Body != nil {
		body, _ = io.ReadAll(io.LimitReader(r.Body, 4<<20))
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	rec := &answerRecorder{ResponseWriter: w, status: http.StatusOK}
	l.next.ServeHTTP(rec, r)
	c.done = time.Now()
	// Decoded after the simulator answered, so the log adds no work before the simulator's own
	// rate accounting sees the call.
	var req im.CreateRequest
	if body != nil && json.Unmarshal(body, &req) == nil {
		c.account = req.FromAccount
		if len(req.GroupContactItem) > 0 {
			c.group = req.GroupContactItem[0].GroupName
		}
	}
	c.code = -1
	if rec.status == http.StatusBadGateway {
		c.code = -502
	} else {
		var ans struct {
			ErrorCode *int `json:"ErrorCode"`
		}
		if json.Unmarshal(rec.body.Bytes(), &ans) == nil && ans.ErrorCode != nil {
			c.code = *ans.ErrorCode
		}
	}
	l.mu.Lock()
	l.calls = append(l.calls, c)
	l.mu.Unlock()
}

// snapshot returns a copy of the calls so far.
func (l *callLog) snapshot() []apiCall {
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

// progressSample is chatgroupd's own counters at one moment of the run.
type progressSample struct {
	at       time.Duration // since the demo started
	produced int
	ended    float64
	creates  float64 // create calls chatgroupd made (its api_requests_total)
}

// demoReport is what the summary says about rate and timing, from chatgroupd's counters
// sampled during the run (the call log checks it in tests).
type demoReport struct {
	creates float64
	// startup is the first sample at which chatgroupd had made a create call: group join,
	// assignment and the limiter's first second.
	startup time.Duration
	// backlogged is whether the run had a backlog: more records waiting than one second of the
	// budget, so the limiter, not the producer, set the pace.
	backlogged bool
	// windowStart..windowEnd is the backlogged stretch: from the first create call to the last
	// sample with a backlog. windowCalls were made in it.
	windowStart, windowEnd time.Duration
	windowCalls            float64
	rate                   float64 // windowCalls / window
	// tail is from the backlog's end to the last record ended: retries and the last accounts'
	// serial events, below the budget by nature.
	tail    time.Duration
	drained time.Duration
	// latencies are occurred_at → created at the API, one per group created, sorted.
	latencies []time.Duration
}

// buildReport reads the backlogged window off the samples: a backlog exists while more records
// wait (produced, not ended) than one second of budget would call for.
func buildReport(samples []progressSample, budget float64, drained time.Duration) demoReport {
	r := demoReport{drained: drained}
	if len(samples) == 0 {
		return r
	}
	r.creates = samples[len(samples)-1].creates
	first := -1
	for i, s := range samples {
		if s.creates > 0 {
			first = i
			break
		}
	}
	if first < 0 {
		return r
	}
	r.startup = samples[first].at
	last := -1
	for i := first; i < len(samples); i++ {
		if float64(samples[i].produced)-samples[i].ended > budget {
			last = i
		}
	}
	if last <= first {
		return r
	}
	r.backlogged = true
	r.windowStart, r.windowEnd = samples[first].at, samples[last].at
	r.windowCalls = samples[last].creates - samples[first].creates
	r.rate = r.windowCalls / (r.windowEnd - r.windowStart).Seconds()
	r.tail = max(drained-r.windowEnd, 0)
	return r
}

// eventTimes maps account/group to the occurred_at of the events the demo produced.
type eventTimes struct {
	mu sync.Mutex
	at map[[2]string]time.Time
}

func (e *eventTimes) add(batch []kafka.Message) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.at == nil {
		e.at = map[[2]string]time.Time{}
	}
	for _, m := range batch {
		var v struct {
			From       string    `json:"from_account"`
			Group      string    `json:"group_name"`
			OccurredAt time.Time `json:"occurred_at"`
		}
		if json.Unmarshal(m.Value, &v) != nil || v.OccurredAt.IsZero() {
			continue // an invalid record: never created
		}
		k := [2]string{v.From, v.Group}
		if _, seen := e.at[k]; !seen {
			e.at[k] = v.OccurredAt
		}
	}
}

// latencies returns, per group the API created (answer 0, or applied then 50005), the time from
// its event's occurred_at to the API's answer; sorted.
func (e *eventTimes) latencies(calls []apiCall) []time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	created := map[[2]string]bool{}
	var out []time.Duration
	for _, c := range calls {
		if c.api != im.APICreate || (c.code != 0 && c.code != im.CodeTimeout) {
			continue
		}
		k := [2]string{c.account, c.group}
		occurred, ok := e.at[k]
		if !ok || created[k] {
			continue
		}
		created[k] = true
		out = append(out, c.done.Sub(occurred))
	}
	slices.Sort(out)
	return out
}

// quantile of sorted samples (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
