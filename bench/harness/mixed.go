package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/loadgen"
)

// MixedAPIs are the APIs a mixed scenario reports, each with a budget of its own: create for
// created events, update for renamed/contacts_added/contacts_removed, delete for deleted, and
// get, which the dispatcher calls only to look a group up after an ambiguous failure (none in a
// fault-free run, so its row shows an idle budget rather than a backlogged one).
var MixedAPIs = []string{im.APICreate, im.APIUpdate, im.APIDelete, im.APIGet}

// APIResult is one API's share of a mixed run, from the simulator's call log.
type APIResult struct {
	API      string
	Expected int // events of this API's types in the measured backlog
	Calls    int // calls that reached the simulator (60007 answers included)
	Admitted int // calls not answered 60007
	// Span is the API's first admitted call → its last: the time it had work. CallsPerSec is
	// Admitted ÷ Span and Utilisation that ÷ the API's budget.
	Span        time.Duration
	CallsPerSec float64
	Utilisation float64
	// MaxWindow is the most calls (admitted or not) that arrived within one sliding second,
	// counted at arrival (the kernel's stamp when there is one), as the simulator's gate counts.
	MaxWindow   int
	RateLimited int   // answered 60007
	PerSecond   []int // admitted calls in each second after the drain's first call
	// FullSeconds is how many whole seconds of the API's span held at least BackThreshold of
	// its budget (its last, partial second excluded).
	FullSeconds, Seconds int
}

// apiOfType is the API that applies an event of type t.
func apiOfType(t event.Type) string {
	switch t {
	case event.TypeContactGroupCreated:
		return im.APICreate
	case event.TypeContactGroupDeleted:
		return im.APIDelete
	}
	return im.APIUpdate
}

// mixedBacklog is what a mixed scenario starts from: the groups that exist at the simulator
// before the first produced event, and what the produced events must do.
type mixedBacklog struct {
	state  []byte             // imsim state file (LoadState's format)
	byAPI  map[string]int     // produced valid events per API
	expect loadgen.Expect     // of the produced events only
	prefix loadgen.TypeCounts // events folded into state, by type
	recs   []loadgen.Record   // the produced backlog
}

// buildMixedBacklog generates the scenario's stream. Its first Prefill events are not produced:
// their net effect (the groups each account then has) is written as the simulator's starting
// state, so that when the subject starts every active account already has groups to rename,
// add to, remove from and delete, and each API has a backlog from the first second instead of
// waiting behind the creates. The next Backlog events are produced.
func buildMixedBacklog(sc Scenario, seed uint64) (*mixedBacklog, error) {
	mix, err := loadgen.ParseMix(sc.Mix)
	if err != nil {
		return nil, fmt.Errorf("harness: scenario %s: %w", sc.Name, err)
	}
	g, err := loadgen.New(loadgen.Config{Accounts: sc.Accounts, Seed: seed, Prefix: "u", Mix: mix})
	if err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	// Each account's seq at the end of the prefix: the produced events are renumbered to start
	// at 1, since a subject that waits for missing seqs (chatgroupd's reorder window) would
	// otherwise hold each account's first produced event for the seqs folded into the state.
	offset := map[string]int64{}
	note := func(r loadgen.Record) error {
		ev, err := event.Parse(r.Value)
		if err != nil {
			return fmt.Errorf("harness: generated event: %w", err)
		}
		offset[ev.FromAccount] = max(offset[ev.FromAccount], ev.Seq)
		return nil
	}
	for range sc.Prefill {
		if err := note(g.Next()); err != nil {
			return nil, err
		}
	}
	for _, r := range g.Flush() {
		if err := note(r); err != nil {
			return nil, err
		}
	}
	before := g.Expect()
	st, err := imsimState(g.State())
	if err != nil {
		return nil, err
	}
	b := &mixedBacklog{state: st, byAPI: map[string]int{}, prefix: before.ByType}
	for len(b.recs) < sc.Backlog {
		b.recs = append(b.recs, g.Next())
	}
	b.recs = append(b.recs, g.Flush()...)
	for i, r := range b.recs {
		if b.recs[i], err = renumber(r, offset); err != nil {
			return nil, err
		}
	}
	after := g.Expect()
	b.expect = loadgen.Expect{Valid: after.Valid - before.Valid, Duplicates: after.Duplicates - before.Duplicates,
		Invalid: after.Invalid - before.Invalid, OverQuota: after.OverQuota - before.OverQuota}
	for _, r := range b.recs {
		if r.Kind == loadgen.Valid {
			b.byAPI[apiOfType(r.Type)]++
		}
	}
	return b, nil
}

// renumber lowers r's seq by its account's offset (an invalid record is left as it is).
func renumber(r loadgen.Record, offset map[string]int64) (loadgen.Record, error) {
	ev, err := event.Parse(r.Value)
	if err != nil || offset[ev.FromAccount] == 0 {
		return r, nil //nolint:nilerr // invalid records are produced as generated
	}
	ev.Seq -= offset[ev.FromAccount]
	if r.Value, err = ev.Marshal(); err != nil {
		return r, fmt.Errorf("harness: renumber %s: %w", ev.EventID, err)
	}
	return r, nil
}

// imsimState writes a generator's State in the simulator's state-file format (LoadState), with
// group ids 1, 2, ... per account.
func imsimState(s loadgen.State) ([]byte, error) {
	type group struct {
		Name     string           `json:"GroupName"`
		ID       int64            `json:"GroupId"`
		Contacts []im.ContactItem `json:"Contacts"`
	}
	type account struct {
		Groups []group `json:"Groups"`
		NextID int64   `json:"NextID"`
	}
	out := map[string]account{}
	for _, acct := range slices.Sorted(maps.Keys(s)) {
		a := account{NextID: 1}
		for _, name := range slices.Sorted(maps.Keys(s[acct])) {
			gr := group{Name: name, ID: a.NextID, Contacts: []im.ContactItem{}}
			for _, c := range s[acct][name] {
				gr.Contacts = append(gr.Contacts, im.ContactItem{Type: c.Type, ToAccount: c.ToAccount, ToGroupID: c.ToGroupID})
			}
			a.Groups = append(a.Groups, gr)
			a.NextID++
		}
		out[acct] = a
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("harness: simulator state: %w", err)
	}
	return b, nil
}

// mixedEnded is how many events have ended: successful create, update and delete calls (in a
// fault-free run each valid event ends with exactly one) plus records dead-lettered.
func mixedEnded(st imsim.Stats, dlq int64) int {
	n := int(dlq)
	for _, api := range []string{im.APICreate, im.APIUpdate, im.APIDelete} {
		n += st.APIs[api].Codes[0]
	}
	return n
}

// mixed runs one subject over the produced lifecycle backlog until every event ended, then
// reads each API's calls from the simulator's call log.
func (rn *run) mixed(ctx context.Context, byAPI map[string]int) error {
	p, err := rn.start()
	if err != nil {
		return err
	}
	defer rn.finish(p)
	tick := time.NewTicker(rn.r.cfg.SampleEvery)
	defer tick.Stop()
	for {
		s := rn.snap(ctx, p, true)
		st, err := rn.sim.stats(ctx)
		if err == nil {
			rn.res.Ended = mixedEnded(st, s.dlq)
			if rn.res.Ended >= rn.res.Expected {
				rn.res.Complete = true
				break
			}
		}
		if !s.subjectAlive {
			return errExited
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("time limit with %d of %d events ended: %w", rn.res.Ended, rn.res.Expected, ctx.Err())
		case <-tick.C:
		}
	}
	calls, err := rn.sim.calls(ctx)
	if err != nil {
		return err
	}
	if b, err := json.Marshal(calls); err == nil {
		if err := os.WriteFile(strings.TrimSuffix(rn.logPath, ".log")+"-calls.json", b, 0o644); err != nil {
			return fmt.Errorf("call log: %w", err)
		}
	}
	rn.res.APIs = analyseMixed(calls, rn.sc.RateLimit, byAPI)
	return nil
}

// analyseMixed computes each API's row from the call log. The budget is limit for each API
// (chatgroupd sizes all four from --rate-limit; the simulator keeps one window per API).
func analyseMixed(calls []imsim.Call, limit float64, expected map[string]int) []APIResult {
	var first time.Time
	for _, c := range calls {
		if t := arrivalOf(c); c.Code != im.CodeFrequency && (first.IsZero() || t.Before(first)) {
			first = t
		}
	}
	out := make([]APIResult, 0, len(MixedAPIs))
	for _, api := range MixedAPIs {
		r := APIResult{API: api, Expected: expected[api]}
		var all, admitted []time.Time
		for _, c := range calls {
			if c.API != api {
				continue
			}
			all = append(all, arrivalOf(c))
			if c.Code == im.CodeFrequency {
				r.RateLimited++
			} else {
				admitted = append(admitted, arrivalOf(c))
			}
		}
		r.Calls, r.Admitted = len(all), len(admitted)
		r.MaxWindow = maxWindow(all)
		if len(admitted) > 0 {
			slices.SortFunc(admitted, func(x, y time.Time) int { return x.Compare(y) })
			lo, hi := admitted[0], admitted[len(admitted)-1]
			r.Span = hi.Sub(lo)
			if s := r.Span.Seconds(); s > 0 {
				r.CallsPerSec = float64(len(admitted)) / s
				r.Utilisation = r.CallsPerSec / limit
			}
			r.PerSecond = make([]int, int(hi.Sub(first)/time.Second)+1)
			own := make([]int, int(r.Span/time.Second)+1)
			for _, t := range admitted {
				r.PerSecond[int(t.Sub(first)/time.Second)]++
				own[int(t.Sub(lo)/time.Second)]++
			}
			// Whole seconds from the API's own first call; its last, partial second is the
			// backlog running out.
			for _, n := range own[:len(own)-1] {
				r.Seconds++
				if float64(n) >= BackThreshold*limit {
					r.FullSeconds++
				}
			}
		}
		out = append(out, r)
	}
	return out
}

// maxWindow is the most of ts (in any order) within one sliding second (t-1s, t].
func maxWindow(ts []time.Time) int {
	ts = slices.Clone(ts)
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	best, lo := 0, 0
	for hi, t := range ts {
		for !ts[lo].After(t.Add(-time.Second)) {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}
