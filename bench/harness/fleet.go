package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/loadgen"
)

// ChangeResult is what one membership change of a fleet run cost.
type ChangeResult struct {
	Label string
	At    float64 // seconds after the first call
	// Gap is the seconds from the change until the group's calls were back at the threshold
	// (BackThreshold of the budget in the trailing second) after the last dip that began within
	// DipAttribution of the change; 0 when the rate never dipped; -1 when it was not back before
	// the next change or the end of the drain.
	Gap float64
	// Below is the seconds between the change and the next one (or the drain's last second) in
	// which the trailing second held fewer calls than the threshold.
	Below float64
}

// BackThreshold is the fraction of the budget the group's calls must be back at after a change:
// 195 of 200 calls/s.
const BackThreshold = 0.975

// DipAttribution bounds how long after a change a dip is still blamed on it.
const DipAttribution = 10 * time.Second

// MinDip is the shortest stretch below the threshold that counts as a dip. At the full rate the
// trailing second holds 196-200 calls and flickers below 195 for a few grid steps now and then;
// a real stall keeps it below for at least the second the window needs to refill.
const MinDip = 250 * time.Millisecond

// drainGrid is the resolution at which the trailing one-second rate is evaluated.
const drainGrid = 10 * time.Millisecond

// drainAnalysis is what the simulator's call log says about a fleet run.
type drainAnalysis struct {
	First, Last time.Time
	Calls       int     // admitted create calls (not answered 60007)
	Utilisation float64 // Calls ÷ (limit × (Last − First))
	Changes     []ChangeResult
	PerSecond   []int // admitted calls in each second after First
	Arrivals    []int // every admitted call, milliseconds after First (to analyse again)
}

// change is a membership change the harness made, and when.
type change struct {
	label string
	at    time.Time
}

// analyseDrain computes utilisation and the gap after each change from the arrival times of
// the admitted create calls (in any order).
func analyseDrain(arrivals []time.Time, limit float64, changes []change) drainAnalysis {
	var a drainAnalysis
	if len(arrivals) == 0 {
		return a
	}
	ts := slices.Clone(arrivals)
	slices.SortFunc(ts, func(x, y time.Time) int { return x.Compare(y) })
	a.First, a.Last, a.Calls = ts[0], ts[len(ts)-1], len(ts)
	if d := a.Last.Sub(a.First).Seconds(); d > 0 {
		a.Utilisation = float64(len(ts)) / (limit * d)
	}
	a.PerSecond = make([]int, int(a.Last.Sub(a.First)/time.Second)+1)
	for _, t := range ts {
		a.PerSecond[int(t.Sub(a.First)/time.Second)]++
		a.Arrivals = append(a.Arrivals, int(t.Sub(a.First)/time.Millisecond))
	}
	thr := BackThreshold * limit
	// rate(t) = calls in (t-1s, t], for t on the grid.
	type point struct {
		t    time.Time
		rate int
	}
	var grid []point
	lo, hi := 0, 0
	for t := a.First; !t.After(a.Last); t = t.Add(drainGrid) {
		for hi < len(ts) && !ts[hi].After(t) {
			hi++
		}
		for lo < hi && !ts[lo].After(t.Add(-time.Second)) {
			lo++
		}
		grid = append(grid, point{t, hi - lo})
	}
	// The drain's last second is its tail: the backlog running out, not a change.
	end := a.Last.Add(-time.Second)
	for i, c := range changes {
		horizon := end
		if i+1 < len(changes) && changes[i+1].at.Before(horizon) {
			horizon = changes[i+1].at
		}
		cr := ChangeResult{Label: c.label, At: round1(c.at.Sub(a.First).Seconds())}
		// Stretches below the threshold between the change and the horizon, at least MinDip
		// long. One still open at the horizon is told from a flicker by the grid past it: it
		// is a dip (open: not back) if it lasts MinDip from its start, however it goes on. A
		// flicker that began just before the next signal used to read "not back" whatever
		// its length.
		type dip struct {
			from, to time.Time
			open     bool
		}
		var dips []dip
		var cur *dip
		for _, p := range grid {
			if p.t.Before(c.at) {
				continue
			}
			if p.t.After(horizon) {
				if cur == nil || p.t.Sub(cur.from) >= MinDip {
					break
				}
				if float64(p.rate) >= thr {
					cur = nil // back within MinDip of its start: a flicker
				}
				continue
			}
			low := float64(p.rate) < thr
			switch {
			case low && cur == nil:
				cur = &dip{from: p.t, open: true}
			case !low && cur != nil:
				cur.to, cur.open = p.t, false
				if cur.to.Sub(cur.from) >= MinDip {
					dips = append(dips, *cur)
				}
				cur = nil
			}
		}
		if cur != nil {
			dips = append(dips, *cur)
		}
		var below time.Duration
		cr.Gap = 0
		for _, d := range dips {
			if d.open {
				below += horizon.Sub(d.from)
			} else {
				below += d.to.Sub(d.from)
			}
			if d.from.Sub(c.at) > DipAttribution {
				continue
			}
			if d.open {
				cr.Gap = -1
			} else {
				cr.Gap = round1(d.to.Sub(c.at).Seconds())
			}
		}
		cr.Below = round1(below.Seconds())
		a.Changes = append(a.Changes, cr)
	}
	return a
}

func round1(x float64) float64 { return float64(int64(x*10+0.5*sign(x))) / 10 }

func sign(x float64) float64 {
	if x < 0 {
		return -1
	}
	return 1
}

// admittedArrivals are the arrival times of the create calls the simulator admitted (every
// answer but 60007 and a call the client gave up on before the limiter saw it).
func admittedArrivals(calls []imsim.Call) []time.Time {
	var out []time.Time
	for _, c := range calls {
		if c.API == im.APICreate && c.Code != im.CodeFrequency {
			out = append(out, arrivalOf(c))
		}
	}
	return out
}

// arrivalOf is when c reached the simulator: the kernel's stamp when it has one, else the
// start of its handler, which a starved simulator may reach tens of milliseconds later.
func arrivalOf(c imsim.Call) time.Time {
	if !c.Arrived.IsZero() {
		return c.Arrived
	}
	return c.Start
}

// maxWindowAtHandler is the most create calls, admitted or not, whose handlers started within
// one second (t-1s, t].
func maxWindowAtHandler(calls []imsim.Call) int {
	var ts []time.Time
	for _, c := range calls {
		if c.API == im.APICreate {
			ts = append(ts, c.Start)
		}
	}
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

// produceSkewed writes n events of gen to topic, keyed as the producers key them (murmur2),
// with hot of them in partition 0 and the rest in the other partitions. An account's events
// are kept or dropped from some point on, never in the middle, so no account has a gap in its
// seqs. It returns how many events must be applied.
func (r *Runner) produceSkewed(ctx context.Context, topic string, gen *loadgen.Generator, n, partitions int, hot float64) (int, error) {
	wantHot := int(float64(n) * hot)
	wantCold := n - wantHot
	parts := make([]int, partitions)
	for i := range parts {
		parts[i] = i
	}
	bal := &kafka.Murmur2Balancer{}
	p := r.cfg.Broker.newProducer(topic, gen)
	defer p.Close()
	p.w.Balancer = kafka.BalancerFunc(func(m kafka.Message, ps ...int) int { return bal.Balance(m, ps...) })
	dropped := map[string]bool{} // accounts whose later events are all dropped
	var msgs []kafka.Message
	valid, gotHot, gotCold := 0, 0, 0
	for gotHot < wantHot || gotCold < wantCold {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		rec := gen.Next()
		m := kafkaMessage(rec)
		key := string(rec.Key)
		hotRec := bal.Balance(m, parts...) == 0
		switch {
		case dropped[key]:
			continue
		case hotRec && gotHot >= wantHot, !hotRec && gotCold >= wantCold:
			dropped[key] = true
			continue
		case hotRec:
			gotHot++
		default:
			gotCold++
		}
		if rec.Kind == loadgen.Valid {
			valid++
		}
		msgs = append(msgs, m)
		if len(msgs) == 5000 {
			if err := p.w.WriteMessages(ctx, msgs...); err != nil {
				return 0, fmt.Errorf("produce: %w", err)
			}
			msgs = msgs[:0]
		}
	}
	if len(msgs) > 0 {
		if err := p.w.WriteMessages(ctx, msgs...); err != nil {
			return 0, fmt.Errorf("produce: %w", err)
		}
	}
	return valid, nil
}

// supportsFlag reports whether the subject's command lists flag in its --help output (used for
// flags that newer builds have, such as --instance-id).
func supportsFlag(s Subject, flag string) bool {
	if len(s.Command) == 0 {
		return false
	}
	out, _ := exec.Command(s.Command[0], append(slices.Clone(s.Command[1:]), "--help")...).CombinedOutput()
	// A flag with a value is listed as "--name type", a boolean one alone on its line.
	return strings.Contains(string(out), flag+" ") || strings.Contains(string(out), flag+"\n")
}

// replica is one process of a fleet run.
type replica struct {
	p          *proc
	instanceID string
	stopping   bool // the harness sent it SIGTERM or SIGKILL
}

// fleet runs the subject's replicas over the backlog, makes the scenario's membership change,
// and waits until every event ended.
func (rn *run) fleet(ctx context.Context) error {
	n := 1
	if rn.subj.Fleet {
		n = rn.sc.Replicas
	}
	rn.res.Replicas = n
	withIDs := rn.subj.Fleet && rn.r.instanceIDs(rn.subj)
	rn.res.InstanceIDs = withIDs
	reps := make([]*replica, n)
	start := func(i int) error {
		subj := rn.subj
		if withIDs {
			subj.Extra = rn.identityFlags(reps[i].instanceID)
		}
		p, err := startProc(subj, rn.flags, rn.r.secret, strings.TrimSuffix(rn.logPath, ".log")+fmt.Sprintf("-r%d.log", i))
		if err != nil {
			return err
		}
		reps[i].p, reps[i].stopping = p, false
		rn.res.Starts++
		return nil
	}
	for i := range reps {
		reps[i] = &replica{instanceID: fmt.Sprintf("bench-r%d", i)}
		if err := start(i); err != nil {
			return err
		}
	}
	defer func() {
		for _, r := range reps {
			if r.p != nil {
				rn.finish(r.p)
			}
		}
	}()
	// The backlog arrives once the fleet is up: a join at start-up is not part of the drain.
	if err := rn.waitStable(ctx, n, reps); err != nil {
		return err
	}
	gen, err := rn.r.generator(rn.sc)
	if err != nil {
		return err
	}
	if rn.sc.HotShare > 0 {
		if rn.res.Expected, err = rn.r.produceSkewed(ctx, rn.flags.Topic, gen, rn.sc.Backlog, rn.sc.Partitions, rn.sc.HotShare); err != nil {
			return err
		}
	} else {
		p := rn.r.cfg.Broker.newProducer(rn.flags.Topic, gen)
		_, err = p.produce(ctx, rn.sc.Backlog, false)
		p.Close()
		if err != nil {
			return err
		}
		rn.res.Expected = gen.Expect().Valid
	}
	var changes []change
	// steps run in order, one per sample until it reports done.
	var steps []func(now time.Time) (bool, error)
	var first time.Time
	after := func(d time.Duration, from *time.Time) func(time.Time) (bool, error) {
		return func(now time.Time) (bool, error) { return !from.IsZero() && now.Sub(*from) >= d, nil }
	}
	last := len(reps) - 1
	if n > 1 {
		switch rn.sc.Change {
		case ChangeLeave:
			steps = append(steps, after(rn.sc.ChangeAt, &first), func(now time.Time) (bool, error) {
				reps[last].stopping = true
				reps[last].p.term()
				changes = append(changes, change{fmt.Sprintf("r%d SIGTERM (leaves)", last), time.Now()})
				return true, nil
			})
		case ChangeKill:
			steps = append(steps, after(rn.sc.ChangeAt, &first), func(now time.Time) (bool, error) {
				reps[last].stopping = true
				at := time.Now()
				reps[last].p.kill()
				rn.res.CPU += reps[last].p.cpu()
				changes = append(changes, change{fmt.Sprintf("r%d SIGKILL, restarted at once", last), at})
				return true, start(last)
			})
		case ChangeRolling:
			var restarted time.Time
			for i := range reps {
				from := &first
				if i > 0 {
					from = &restarted
				}
				wait := rn.sc.ChangeAt
				if i > 0 {
					wait = rn.sc.StepPause
				}
				var termAt time.Time
				steps = append(steps, after(wait, from), func(now time.Time) (bool, error) {
					reps[i].stopping = true
					termAt = time.Now()
					reps[i].p.term()
					return true, nil
				}, func(now time.Time) (bool, error) {
					if reps[i].p.alive() {
						return false, nil
					}
					rn.res.CPU += reps[i].p.cpu()
					restarted = time.Now()
					changes = append(changes, change{fmt.Sprintf("r%d SIGTERM, exited after %.1fs, restarted", i,
						restarted.Sub(termAt).Seconds()), termAt})
					return true, start(i)
				})
			}
		}
	}
	tick := time.NewTicker(rn.r.cfg.SampleEvery)
	defer tick.Stop()
	for {
		s := rn.snap(ctx, nil, true)
		if first.IsZero() && s.accepted > 0 {
			first = s.t
			rn.res.FirstCall = s.t.Sub(reps[0].p.started)
		}
		if ended(s) >= rn.res.Expected {
			rn.res.Ended, rn.res.Complete = ended(s), true
			break
		}
		for len(steps) > 0 {
			done, err := steps[0](s.t)
			if err != nil {
				return err
			}
			if !done {
				break
			}
			steps = steps[1:]
		}
		for i, r := range reps {
			if !r.stopping && !r.p.alive() {
				return fmt.Errorf("replica %d exited early (see its log)", i)
			}
		}
		select {
		case <-ctx.Done():
			rn.res.Ended = ended(s)
			return fmt.Errorf("time limit with %d of %d events ended: %w", ended(s), rn.res.Expected, ctx.Err())
		case <-tick.C:
		}
	}
	if len(steps) > 0 {
		return fmt.Errorf("the backlog ended before the membership change was complete: raise Backlog")
	}
	calls, err := rn.sim.calls(ctx)
	if err != nil {
		return err
	}
	// Every call, rejected ones included, beside the subject's logs: a window over the budget
	// is joined with the replicas' debug logs from here.
	if b, err := json.Marshal(calls); err == nil {
		if err := os.WriteFile(strings.TrimSuffix(rn.logPath, ".log")+"-calls.json", b, 0o644); err != nil {
			return fmt.Errorf("call log: %w", err)
		}
	}
	a := analyseDrain(admittedArrivals(calls), rn.sc.RateLimit, changes)
	rn.res.MaxWindowAtHandler = maxWindowAtHandler(calls)
	rn.res.Drain = a.Last.Sub(a.First)
	rn.res.Utilisation = a.Utilisation
	rn.res.CallsPerSec = a.Utilisation * rn.sc.RateLimit
	rn.res.Changes = a.Changes
	rn.res.PerSecond = a.PerSecond
	rn.res.Arrivals = a.Arrivals
	rn.res.ChangeTimes = make([]float64, len(changes))
	for i, c := range changes {
		rn.res.ChangeTimes[i] = c.at.Sub(a.First).Seconds()
	}
	return nil
}

// waitStable waits until the subject's consumer group is Stable with (for a fleet subject) a
// member per replica, then a moment more for the members to start fetching; it records how
// long that took from the start.
func (rn *run) waitStable(ctx context.Context, n int, reps []*replica) error {
	c := &kafka.Client{Addr: kafka.TCP(rn.r.cfg.Broker.Addrs...), Timeout: 5 * time.Second}
	want := 1
	if rn.subj.Fleet {
		want = n
	}
	tick := time.NewTicker(rn.r.cfg.SampleEvery)
	defer tick.Stop()
	for {
		resp, err := c.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{rn.flags.Group}})
		if err == nil && len(resp.Groups) == 1 && resp.Groups[0].Error == nil &&
			resp.Groups[0].GroupState == "Stable" && len(resp.Groups[0].Members) >= want {
			break
		}
		for i, r := range reps {
			if !r.p.alive() {
				return fmt.Errorf("replica %d exited before the group was stable (see its log)", i)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for a stable group of %d: %w", want, ctx.Err())
		case <-tick.C:
		}
	}
	rn.res.Stable = time.Since(reps[0].p.started)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Second):
	}
	return nil
}

// identityFlags is the subject's Extra plus what a replica with this instance id takes to come
// back as itself, as far as the binary supports it.
func (rn *run) identityFlags(instanceID string) []string {
	extra := append(slices.Clone(rn.subj.Extra), "--instance-id", instanceID)
	if rn.sc.Change == ChangeRolling && rn.r.supports(rn.subj, "--leave-on-shutdown") {
		// Every replica comes back with its id: a deployment that restarts so (a
		// StatefulSet, fixed hosts) keeps its members in the group across the restart.
		extra = append(extra, "--leave-on-shutdown=false")
	}
	if rn.r.supports(rn.subj, "--instance-lock-dir") {
		// One directory per run, the same across a replica's restarts (as an emptyDir is across
		// a pod's container restarts): a replica restarted after SIGKILL finds its
		// predecessor's lock released and takes over its budget share. Not shared between
		// runs, whose replicas reuse the ids but not the budget topic.
		extra = append(extra, "--instance-lock-dir", rn.lockDir())
	}
	return extra
}

// lockDir is the run's --instance-lock-dir: <OutDir>/locks/<scenario>-<subject>.
func (rn *run) lockDir() string {
	return filepath.Join(filepath.Dir(rn.logPath), "locks", strings.TrimSuffix(filepath.Base(rn.logPath), ".log"))
}

// instanceIDs reports (once per subject) whether the subject's binary takes --instance-id.
func (r *Runner) instanceIDs(s Subject) bool { return r.supports(s, "--instance-id") }

// supports reports whether the subject's command takes flag (supportsFlag, asked once per
// subject and flag).
func (r *Runner) supports(s Subject, flag string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := s.Name + " " + flag
	if v, ok := r.flagCache[key]; ok {
		return v
	}
	v := supportsFlag(s, flag)
	if r.flagCache == nil {
		r.flagCache = map[string]bool{}
	}
	r.flagCache[key] = v
	return v
}
