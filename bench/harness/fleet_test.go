package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
)

// steady returns arrivals at rate/s from start for d.
func steady(start time.Time, rate float64, d time.Duration) []time.Time {
	var out []time.Time
	step := time.Duration(float64(time.Second) / rate)
	for t := time.Duration(0); t < d; t += step {
		out = append(out, start.Add(t))
	}
	return out
}

// without drops the arrivals in [from1, to1), [from2, to2), ...
func without(ts []time.Time, spans ...time.Time) []time.Time {
	var out []time.Time
	for _, t := range ts {
		keep := true
		for i := 0; i+1 < len(spans); i += 2 {
			if !t.Before(spans[i]) && t.Before(spans[i+1]) {
				keep = false
			}
		}
		if keep {
			out = append(out, t)
		}
	}
	return out
}

func TestAnalyseDrain(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	cat := func(parts ...[]time.Time) []time.Time {
		var out []time.Time
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		arrivals  []time.Time
		changes   []change
		util      float64
		gap       []float64 // per change
		belowMin  []float64
		belowMax  []float64
		tolerance float64
	}{
		{
			name:     "no dip",
			arrivals: steady(t0, 200, 20*time.Second),
			changes:  []change{{"c", at(5)}},
			util:     1, gap: []float64{0}, belowMin: []float64{0}, belowMax: []float64{0},
		},
		{
			// Calls stop for 2 s at the change: the trailing second holds 195 again 0.975 s
			// after they resume.
			name:     "pause of 2s",
			arrivals: cat(steady(t0, 200, 10*time.Second), steady(at(12), 200, 10*time.Second)),
			changes:  []change{{"c", at(10)}},
			util:     4000.0 / (200 * 22), gap: []float64{3.0}, belowMin: []float64{2.9}, belowMax: []float64{3.0},
		},
		{
			name:     "never back",
			arrivals: cat(steady(t0, 200, 10*time.Second), steady(at(10), 100, 10*time.Second)),
			changes:  []change{{"c", at(10)}},
			util:     3000.0 / (200 * 20), gap: []float64{-1}, belowMin: []float64{8.9}, belowMax: []float64{9.0},
		},
		{
			// A dip 12 s after the change is not the change's gap, but it is time below.
			name:     "late dip is not blamed",
			arrivals: cat(steady(t0, 200, 14*time.Second), steady(at(16), 200, 10*time.Second)),
			changes:  []change{{"c", at(2)}},
			util:     4800.0 / (200 * 26), gap: []float64{0}, belowMin: []float64{2.9}, belowMax: []float64{3.0},
		},
		{
			// 196/s: the trailing second flickers below 195 at times; no dip.
			name: "flicker is no dip",
			// Two short holes 0.9 s apart: the trailing second holds 194 for under 100 ms.
			arrivals: without(steady(t0, 200, 15*time.Second), at(5), at(5.02), at(5.9), at(5.91)),
			changes:  []change{{"c", at(4)}},
			util:     2994.0 / (200 * 14.995), gap: []float64{0}, belowMin: []float64{0}, belowMax: []float64{0},
		},
		{
			// The same flicker (from 5.9 s, for 120 ms) still open at the next change's
			// signal (5.95 s): past the signal it is back within MinDip, so no dip.
			name:     "flicker open at the next change is no dip",
			arrivals: without(steady(t0, 200, 15*time.Second), at(5), at(5.02), at(5.9), at(5.91)),
			changes:  []change{{"c", at(4)}, {"d", at(5.95)}},
			util:     2994.0 / (200 * 14.995), gap: []float64{0, 0}, belowMin: []float64{0, 0}, belowMax: []float64{0, 0},
		},
		{
			// Calls stop 50 ms before the next change's signal: a dip open at it is not back.
			name:     "dip open at the next change",
			arrivals: cat(steady(t0, 200, 9950*time.Millisecond), steady(at(12), 200, 8*time.Second)),
			changes:  []change{{"c", at(5)}, {"d", at(10)}},
			util:     3590.0 / (200 * 19.995), gap: []float64{-1, 3.0}, belowMin: []float64{0, 2.9}, belowMax: []float64{0.05, 3.0},
		},
		{
			// Two changes: each is measured up to the next one.
			name: "two changes",
			arrivals: cat(steady(t0, 200, 5*time.Second), steady(at(5.5), 200, 5*time.Second),
				steady(at(11), 200, 10*time.Second)),
			changes: []change{{"a", at(5)}, {"b", at(10.5)}},
			util:    4000.0 / (200 * 21), gap: []float64{1.5, 1.5}, belowMin: []float64{1.4, 1.4}, belowMax: []float64{1.5, 1.5},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := analyseDrain(tc.arrivals, 200, tc.changes)
			if math.Abs(a.Utilisation-tc.util) > 0.005 {
				t.Errorf("utilisation %.4f, want %.4f", a.Utilisation, tc.util)
			}
			if len(a.Changes) != len(tc.changes) {
				t.Fatalf("%d change results, want %d", len(a.Changes), len(tc.changes))
			}
			for i, c := range a.Changes {
				if math.Abs(c.Gap-tc.gap[i]) > 0.11 {
					t.Errorf("change %d: gap %.2f, want %.2f", i, c.Gap, tc.gap[i])
				}
				if c.Below < tc.belowMin[i] || c.Below > tc.belowMax[i]+0.05 {
					t.Errorf("change %d: below %.2f, want %.1f-%.1f", i, c.Below, tc.belowMin[i], tc.belowMax[i])
				}
			}
		})
	}
	if a := analyseDrain(nil, 200, []change{{"c", t0}}); a.Calls != 0 || a.Utilisation != 0 {
		t.Fatalf("no calls: %+v", a)
	}
}

func TestAdmittedArrivalsSkipsOverLimitAndOtherAPIs(t *testing.T) {
	t0 := time.Unix(1000, 0)
	got := admittedArrivals([]imsim.Call{
		{API: im.APICreate, Start: t0, Code: 0},
		{API: im.APICreate, Start: t0.Add(time.Millisecond), Code: im.CodeFrequency},
		{API: im.APIGet, Start: t0.Add(2 * time.Millisecond)},
		{API: im.APICreate, Start: t0.Add(3 * time.Millisecond), Code: 50002},
	})
	if len(got) != 2 || !got[0].Equal(t0) || !got[1].Equal(t0.Add(3*time.Millisecond)) {
		t.Fatalf("arrivals %v", got)
	}
	// A kernel stamp is the arrival; the handler's start only stands in for a missing one.
	got = admittedArrivals([]imsim.Call{{API: im.APICreate, Start: t0.Add(50 * time.Millisecond), Arrived: t0}})
	if len(got) != 1 || !got[0].Equal(t0) {
		t.Fatalf("stamped arrival %v, want %v", got, t0)
	}
}

// Calls whose handlers a starved simulator started together count in one window there, however
// far apart they arrived; rejected calls count too.
func TestMaxWindowAtHandler(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var calls []imsim.Call
	for i := range 5 {
		calls = append(calls, imsim.Call{API: im.APICreate, Arrived: t0.Add(time.Duration(i) * 400 * time.Millisecond),
			Start: t0.Add(2*time.Second + time.Duration(i)*time.Millisecond), Code: []int{0, im.CodeFrequency}[i%2]})
	}
	calls = append(calls, imsim.Call{API: im.APIGet, Start: t0.Add(2 * time.Second)})
	if got := maxWindowAtHandler(calls); got != 5 {
		t.Fatalf("max window at the handlers %d, want 5 (creates only, rejected included)", got)
	}
	if got := maxWindowAtHandler(nil); got != 0 {
		t.Fatalf("no calls: %d", got)
	}
}

func TestAccountFaultAnswersOnlyThatAccountsCreates(t *testing.T) {
	reached := 0
	f := &accountFault{prefix: stuckPrefix, code: im.CodeInternal}
	h := f.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached++
		json.NewEncoder(w).Encode(im.BaseResponse{ActionStatus: "OK"})
	}))
	call := func(path, acct string) im.BaseResponse {
		body, _ := json.Marshal(im.CreateRequest{FromAccount: acct})
		rw := httptest.NewRecorder()
		h.ServeHTTP(rw, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
		var resp im.BaseResponse
		json.Unmarshal(rw.Body.Bytes(), &resp)
		return resp
	}
	if r := call(im.PathCreateContactGroup, "stuck-0"); r.ErrorCode != im.CodeInternal {
		t.Fatalf("stuck account's create answered %+v, want 50004", r)
	}
	if reached != 0 {
		t.Fatal("the faulted create reached the simulator")
	}
	if r := call(im.PathCreateContactGroup, "stuckish-0"); r.ErrorCode != 0 || reached != 1 {
		t.Fatalf("another account's create: %+v, reached %d", r, reached)
	}
	if r := call(im.PathGetContactGroup, "stuck-0"); r.ErrorCode != 0 || reached != 2 {
		t.Fatalf("the stuck account's get: %+v, reached %d; only creates are faulted", r, reached)
	}
	if f.calls.Load() != 1 {
		t.Fatalf("counted %d faulted calls, want 1", f.calls.Load())
	}
}

func TestFleetAndStuckScenariosValidate(t *testing.T) {
	ok := Scenario{Name: "f", Kind: KindFleet, Partitions: 6, Accounts: 10, RateLimit: 200, Backlog: 10, Timeout: time.Minute,
		Replicas: 3, Change: ChangeKill, ChangeAt: time.Second}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Scenario){
		"no replicas":        func(s *Scenario) { s.Replicas = 0 },
		"change of one":      func(s *Scenario) { s.Replicas = 1 },
		"change without at":  func(s *Scenario) { s.ChangeAt = 0 },
		"unknown change":     func(s *Scenario) { s.Change = "explode" },
		"hot share of 1":     func(s *Scenario) { s.HotShare = 1 },
		"stuck without rate": func(s *Scenario) { s.Kind = KindStuck; s.StuckEvery = 10 },
		"stuck every 1":      func(s *Scenario) { s.Kind = KindStuck; s.LiveRate = 1; s.Window = time.Second; s.StuckEvery = 1 },
	} {
		s := ok
		mut(&s)
		if err := s.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for _, s := range Scenarios(Quick) {
		if s.Kind == KindFleet && s.Change != ChangeNone {
			// The change must come well before the backlog runs out at the full rate.
			if float64(s.Backlog)/s.RateLimit < (s.ChangeAt+time.Duration(s.Replicas)*(s.StepPause+5*time.Second)).Seconds() &&
				s.Change == ChangeRolling {
				t.Errorf("%s: backlog too small for the rolling restart", s.Name)
			}
		}
	}
}

func TestProduceSkewedPutsTheHotShareInPartitionZero(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Kafka")
	}
	b, err := StartBroker(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r, err := NewRunner(Config{Broker: b, OutDir: t.TempDir(), Subjects: []Subject{{Name: "x", Command: []string{"true"}}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topic := kafkatest.UniqueName("skew")
	if err := b.CreateTopic(ctx, topic, 6); err != nil {
		t.Fatal(err)
	}
	gen, err := r.generator(Scenario{Accounts: 200})
	if err != nil {
		t.Fatal(err)
	}
	valid, err := r.produceSkewed(ctx, topic, gen, 1200, 6, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := kafkatest.ReadAll(ctx, b.Addrs, topic)
	if err != nil {
		t.Fatal(err)
	}
	if valid != 1200 || len(msgs) != 1200 {
		t.Fatalf("valid %d, records %d; want 1200", valid, len(msgs))
	}
	perPart := map[int]int{}
	seqs := map[string][]int64{}
	for _, m := range msgs {
		perPart[m.Partition]++
		if want := (&kafka.Murmur2Balancer{}).Balance(m, 0, 1, 2, 3, 4, 5); want != m.Partition {
			t.Fatalf("record keyed %s in partition %d, murmur2 says %d", m.Key, m.Partition, want)
		}
		var ev struct {
			Seq int64 `json:"seq"`
		}
		json.Unmarshal(m.Value, &ev)
		seqs[string(m.Key)] = append(seqs[string(m.Key)], ev.Seq)
	}
	if perPart[0] != 600 {
		t.Fatalf("partition 0 holds %d of 1200, want 600 (%v)", perPart[0], perPart)
	}
	for k, s := range seqs {
		for i, v := range s {
			if v != int64(i+1) {
				t.Fatalf("account %s has seqs %v: a gap", k, s)
			}
		}
	}
}

// TestFleetRunChangesMembership runs the naive peer (which can share a group) as a two-replica
// fleet, kills one replica and restarts it, and checks that the run records the change and
// analyses the drain from the call log.
func TestFleetRunChangesMembership(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Kafka, a simulator and child processes")
	}
	t.Setenv(helperEnv, "naive")
	b, err := StartBroker(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r, err := NewRunner(Config{Broker: b, OutDir: t.TempDir(), StopGrace: 10 * time.Second,
		Subjects: []Subject{{Name: "naive", Command: []string{os.Args[0], "-test.run=^$"}, Fleet: true}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
	defer cancel()
	// 50 calls/s: each replica's own limiter allows all of them, so two stay within 100.
	res, err := r.Run(ctx, Scenario{Name: "tiny-fleet", Kind: KindFleet, Partitions: 2, Accounts: 20, RateLimit: 100,
		Backlog: 300, Replicas: 2, HotShare: 0.5, Change: ChangeKill, ChangeAt: 500 * time.Millisecond, Timeout: 80 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	got := res[0]
	if got.Err != "" || !got.Complete || got.Replicas != 2 || got.Starts != 3 || got.Expected != 300 {
		logs, _ := os.ReadFile(strings.TrimSuffix(got.Log, ".log") + "-r0.log")
		t.Fatalf("result %+v\nreplica 0 log:\n%s", got, logs)
	}
	if got.InstanceIDs {
		t.Error("the naive peer was given --instance-id, which it does not list")
	}
	if len(got.Changes) != 1 || !strings.Contains(got.Changes[0].Label, "SIGKILL") {
		t.Fatalf("changes %+v, want the one kill", got.Changes)
	}
	if got.Drain <= 0 || got.Utilisation <= 0 || got.Utilisation > 1.01 {
		t.Fatalf("drain %v, utilisation %v: want both measured", got.Drain, got.Utilisation)
	}
}

func TestSupportsFlagReadsHelp(t *testing.T) {
	with := Subject{Command: []string{"sh", "-c", `echo "  --instance-id string"; exit 2`}}
	without := Subject{Command: []string{"sh", "-c", `echo "  --instance-ids-file string"`}}
	if !supportsFlag(with, "--instance-id") {
		t.Error("a help text listing --instance-id was not recognised")
	}
	if supportsFlag(without, "--instance-id") {
		t.Error("--instance-ids-file taken for --instance-id")
	}
	boolean := Subject{Command: []string{"sh", "-c", `printf '  --leave-on-shutdown\n    \ta graceful stop\n'`}}
	if !supportsFlag(boolean, "--leave-on-shutdown") {
		t.Error("a boolean flag (alone on its line) was not recognised")
	}
	if supportsFlag(Subject{}, "--instance-id") {
		t.Error("a subject without a command supports a flag")
	}
}

// TestIdentityFlags: a replica with an instance id gets the flags that bring it back as itself,
// each only when the binary lists it; the lock directory is the run's, the same at every start.
func TestIdentityFlags(t *testing.T) {
	const lockDir = "/out/locks/fleet-kill-k"
	for _, tc := range []struct {
		name      string
		change    Change
		supported []string
		want      []string
	}{
		{"old binary", ChangeKill, nil, []string{"-x", "--instance-id", "r0"}},
		{"kill", ChangeKill, []string{"--leave-on-shutdown", "--instance-lock-dir"},
			[]string{"-x", "--instance-id", "r0", "--instance-lock-dir", lockDir}},
		{"rolling", ChangeRolling, []string{"--leave-on-shutdown", "--instance-lock-dir"},
			[]string{"-x", "--instance-id", "r0", "--leave-on-shutdown=false", "--instance-lock-dir", lockDir}},
		{"rolling without the lock flag", ChangeRolling, []string{"--leave-on-shutdown"},
			[]string{"-x", "--instance-id", "r0", "--leave-on-shutdown=false"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			subj := Subject{Name: "k", Extra: []string{"-x"}}
			r := &Runner{flagCache: map[string]bool{}}
			for _, f := range []string{"--leave-on-shutdown", "--instance-lock-dir"} {
				r.flagCache[subj.Name+" "+f] = slices.Contains(tc.supported, f)
			}
			rn := &run{r: r, subj: subj, sc: Scenario{Change: tc.change}, logPath: "/out/fleet-kill-k.log"}
			for range 2 { // a restart gets the same flags
				if got := rn.identityFlags("r0"); !slices.Equal(got, tc.want) {
					t.Fatalf("identityFlags = %q, want %q", got, tc.want)
				}
			}
			if !slices.Equal(subj.Extra, []string{"-x"}) {
				t.Errorf("the subject's Extra changed: %q", subj.Extra)
			}
		})
	}
}
