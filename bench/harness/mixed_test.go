package harness

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/loadgen"
)

func TestMixedScenarioValidatesAndIsSelected(t *testing.T) {
	ok := Scenario{Name: "m", Kind: KindMixed, Partitions: 6, Accounts: 10, RateLimit: 200, Backlog: 10,
		Timeout: time.Minute, Mix: MixedWeights, Prefill: 20}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		mut  func(*Scenario)
		want string
	}{
		"no mix":          {func(s *Scenario) { s.Mix = "" }, "mix"},
		"bad mix":         {func(s *Scenario) { s.Mix = "created=1,exploded=2" }, "exploded"},
		"creates only":    {func(s *Scenario) { s.Mix = "v1" }, "creates only"},
		"negative weight": {func(s *Scenario) { s.Mix = "created=1,deleted=-1" }, "deleted"},
		"prefill below 0": {func(s *Scenario) { s.Prefill = -1 }, "prefill"},
		"no limit":        {func(s *Scenario) { s.RateLimit = Unlimited }, "rate limit"},
		"no backlog":      {func(s *Scenario) { s.Backlog = 0 }, "backlog"},
	} {
		s := ok
		tc.mut(&s)
		err := s.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one naming %q", name, err, tc.want)
		}
	}
	chatgroupd, peer := Subject{Name: "chatgroupd", Command: []string{"x"}, Fleet: true}, Subject{Name: "naive", Command: []string{"y"}}
	if !ok.runsWith(chatgroupd) || ok.runsWith(peer) {
		t.Error("a mixed scenario must run chatgroupd and skip the creates-only peers")
	}
	if util := (Scenario{Kind: KindUtil}); !util.runsWith(peer) {
		t.Error("other scenarios run every subject")
	}
	for _, scale := range []Scale{Quick, Full} {
		got, err := Select(Scenarios(scale), "mixed-util")
		if err != nil || len(got) != 1 || got[0].Kind != KindMixed {
			t.Fatalf("scale %d: Select(mixed-util) = %v, %v", scale, got, err)
		}
		if err := got[0].Validate(); err != nil {
			t.Fatal(err)
		}
	}
}

// applyModel applies events in order to the groups of a simulator state file and returns what
// could not be applied: a lifecycle event naming a missing group, a create or rename onto an
// existing name, or an account seq that does not go 1, 2, 3, ...
func applyModel(t *testing.T, state []byte, recs []loadgen.Record) []string {
	t.Helper()
	var st map[string]struct {
		Groups []struct {
			Name string `json:"GroupName"`
		} `json:"Groups"`
	}
	if err := json.Unmarshal(state, &st); err != nil {
		t.Fatal(err)
	}
	groups := map[string]map[string]bool{}
	for acct, a := range st {
		groups[acct] = map[string]bool{}
		for _, g := range a.Groups {
			groups[acct][g.Name] = true
		}
	}
	seq := map[string]int64{}
	var bad []string
	for _, r := range recs {
		ev, err := event.Parse(r.Value)
		if err != nil {
			t.Fatalf("produced record: %v", err)
		}
		if ev.Seq != seq[ev.FromAccount]+1 {
			bad = append(bad, fmt.Sprintf("%s: seq %d after %d", ev.EventID, ev.Seq, seq[ev.FromAccount]))
		}
		seq[ev.FromAccount] = ev.Seq
		g := groups[ev.FromAccount]
		if g == nil {
			g = map[string]bool{}
			groups[ev.FromAccount] = g
		}
		switch ev.EventType {
		case event.TypeContactGroupCreated:
			if g[ev.GroupName] {
				bad = append(bad, ev.EventID+": create of an existing group")
			}
			g[ev.GroupName] = true
		case event.TypeContactGroupRenamed:
			if !g[ev.GroupName] || g[ev.NewGroupName] {
				bad = append(bad, ev.EventID+": rename of a missing group or onto an existing name")
			}
			delete(g, ev.GroupName)
			g[ev.NewGroupName] = true
		case event.TypeContactGroupDeleted:
			if !g[ev.GroupName] {
				bad = append(bad, ev.EventID+": delete of a missing group")
			}
			delete(g, ev.GroupName)
		default:
			if !g[ev.GroupName] {
				bad = append(bad, ev.EventID+": "+string(ev.EventType)+" of a missing group")
			}
		}
	}
	return bad
}

// The produced backlog applies cleanly on top of the simulator's starting state: every group a
// lifecycle event names exists by then, and each account's seqs start at 1 without gaps. Each
// API has a backlog of the same order, and the state is one the simulator accepts.
func TestMixedBacklogIsConsistentWithTheStartingState(t *testing.T) {
	sc := Scenario{Name: "m", Kind: KindMixed, Accounts: 200, Mix: MixedWeights, Prefill: 1000, Backlog: 1500}
	b, err := buildMixedBacklog(sc, 7)
	if err != nil {
		t.Fatal(err)
	}
	if bad := applyModel(t, b.state, b.recs); len(bad) > 0 {
		t.Fatalf("%d events do not apply, first: %v", len(bad), bad[:min(5, len(bad))])
	}
	// The check can fail: without the prefix's groups the lifecycle events name missing groups
	// (and the seqs, renumbered for that state, still start at 1).
	empty, err := imsimState(nil)
	if err != nil {
		t.Fatal(err)
	}
	if bad := applyModel(t, empty, b.recs); len(bad) == 0 {
		t.Fatal("the backlog applied without the prefix's groups: the check does not look")
	}
	if prefixTotal := b.prefix.Total(); prefixTotal != sc.Prefill {
		t.Errorf("prefix holds %d events, want %d", prefixTotal, sc.Prefill)
	}
	sum := 0
	for _, api := range []string{im.APICreate, im.APIUpdate, im.APIDelete} {
		n := b.byAPI[api]
		sum += n
		if n < len(b.recs)/5 {
			t.Errorf("%s: %d of %d events: not a backlog of its own", api, n, len(b.recs))
		}
	}
	if sum != b.expect.Valid || sum != len(b.recs) {
		t.Errorf("per-API events %d, expected valid %d, records %d", sum, b.expect.Valid, len(b.recs))
	}
	path := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(path, b.state, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := startSim(imsim.Config{SDKAppID: 1400000000, SecretKey: "k", RateLimit: 200}, nil, nil, path)
	if err != nil {
		t.Fatalf("simulator refused the state: %v", err)
	}
	s.close()
}

func TestMixedBacklogAndSimulatorStateErrors(t *testing.T) {
	if _, err := buildMixedBacklog(Scenario{Name: "m", Accounts: 10, Mix: "created=x", Backlog: 5}, 1); err == nil ||
		!strings.Contains(err.Error(), "scenario m") {
		t.Errorf("bad mix: %v", err)
	}
	path := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(path, []byte(`{"u-1":{"Groups":[{"GroupName":"","GroupId":0}]}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := startSim(imsim.Config{SDKAppID: 1400000000, SecretKey: "k", RateLimit: 200}, nil, nil, path); err == nil {
		t.Error("the simulator started from an invalid state file")
	}
}

func TestAnalyseMixedPerAPI(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var calls []imsim.Call
	// create: 200 admitted calls in each of 3 seconds (+1 at the very end), and 5 answered
	// 60007 in the first second; update: 100/s for 2 s from 0.5 s; get: none.
	for s := range 3 {
		for i := range 200 {
			calls = append(calls, imsim.Call{API: im.APICreate, Arrived: t0.Add(time.Duration(s)*time.Second + time.Duration(i)*5*time.Millisecond)})
		}
	}
	calls = append(calls, imsim.Call{API: im.APICreate, Arrived: t0.Add(3 * time.Second)})
	for i := range 5 {
		calls = append(calls, imsim.Call{API: im.APICreate, Arrived: t0.Add(time.Duration(i) * time.Millisecond), Code: im.CodeFrequency})
	}
	for i := range 200 {
		// Handler starts late; the arrival stamp is what counts.
		at := t0.Add(500*time.Millisecond + time.Duration(i)*10*time.Millisecond)
		calls = append(calls, imsim.Call{API: im.APIUpdate, Arrived: at, Start: at.Add(300 * time.Millisecond)})
	}
	got := analyseMixed(calls, 200, map[string]int{im.APICreate: 601, im.APIUpdate: 200})
	if len(got) != len(MixedAPIs) {
		t.Fatalf("%d rows", len(got))
	}
	c, u, g := got[0], got[1], got[3]
	if c.API != im.APICreate || c.Admitted != 601 || c.Calls != 606 || c.RateLimited != 5 || c.Span != 3*time.Second {
		t.Errorf("create %+v", c)
	}
	if c.Utilisation < 1.0 || c.Utilisation > 1.002 || c.MaxWindow != 205 || c.FullSeconds != 3 || c.Seconds != 3 {
		t.Errorf("create utilisation %.4f window %d full %d/%d", c.Utilisation, c.MaxWindow, c.FullSeconds, c.Seconds)
	}
	if u.API != im.APIUpdate || u.Admitted != 200 || u.Utilisation < 0.5 || u.Utilisation > 0.51 || u.FullSeconds != 0 ||
		u.MaxWindow != 100 || u.Expected != 200 || u.PerSecond[0] != 50 {
		t.Errorf("update %+v", u)
	}
	if g.API != im.APIGet || g.Calls != 0 || g.Utilisation != 0 {
		t.Errorf("get %+v", g)
	}
}
