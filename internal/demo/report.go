package demo

import (
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/im"
)

// progressSample is chatgroupd's own counters at one moment of the run.
type progressSample struct {
	at       time.Duration // since the demo started
	produced int
	ended    float64
	creates  float64 // create calls chatgroupd made (its api_requests_total)
}

// Report is what the summary says about rate and timing, from chatgroupd's counters sampled
// during the run (Result.Calls checks it in tests). Durations count from Result.Start.
type Report struct {
	// Creates is the create calls chatgroupd made (its api_requests_total).
	Creates float64
	// Startup is the first sample at which chatgroupd had made a create call: group join,
	// assignment and the limiter's first second.
	Startup time.Duration
	// Backlogged is whether the run had a backlog: more records waiting than one second of the
	// budget, so the limiter, not the producer, set the pace.
	Backlogged bool
	// WindowStart..WindowEnd is the backlogged stretch: from the first create call to the last
	// sample with a backlog. WindowCalls were made in it.
	WindowStart, WindowEnd time.Duration
	WindowCalls            float64
	Rate                   float64 // WindowCalls / window
	// Tail is from the backlog's end to the last record ended: retries and the last accounts'
	// serial events, below the budget by nature.
	Tail time.Duration
	// Drained is from the start to the last record ended (or the run's end).
	Drained time.Duration
	// Latencies are occurred_at → created at the API, one per group created, sorted.
	Latencies []time.Duration
}

// buildReport reads the backlogged window off the samples: a backlog exists while more records
// wait (produced, not ended) than one second of budget would call for.
func buildReport(samples []progressSample, budget float64, drained time.Duration) Report {
	r := Report{Drained: drained}
	if len(samples) == 0 {
		return r
	}
	r.Creates = samples[len(samples)-1].creates
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
	r.Startup = samples[first].at
	last := -1
	for i := first; i < len(samples); i++ {
		if float64(samples[i].produced)-samples[i].ended > budget {
			last = i
		}
	}
	if last <= first {
		return r
	}
	r.Backlogged = true
	r.WindowStart, r.WindowEnd = samples[first].at, samples[last].at
	r.WindowCalls = samples[last].creates - samples[first].creates
	r.Rate = r.WindowCalls / (r.WindowEnd - r.WindowStart).Seconds()
	r.Tail = max(drained-r.WindowEnd, 0)
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
func (e *eventTimes) latencies(calls []Call) []time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	created := map[[2]string]bool{}
	var out []time.Duration
	for _, c := range calls {
		if c.API != im.APICreate || (c.Code != 0 && c.Code != im.CodeTimeout) {
			continue
		}
		k := [2]string{c.Account, c.Group}
		occurred, ok := e.at[k]
		if !ok || created[k] {
			continue
		}
		created[k] = true
		out = append(out, c.Done.Sub(occurred))
	}
	slices.Sort(out)
	return out
}

// Quantile is the q quantile of the latencies (nearest rank; 0 when there are none).
func (r Report) Quantile(q float64) time.Duration {
	return quantile(r.Latencies, q)
}

// quantile of sorted samples (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
