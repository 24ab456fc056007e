package dispatcher

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
)

// TestDuplicateNamePolicyEveryPath: an event naming a group its user already has ends the same
// way whichever path meets the name — a plain create the API refuses, the look-up of an
// uncertain event, a replay — as the one policy says: merged (applied, with every conversation
// in the group) or rejected with the duplicate code (the group untouched).
func TestDuplicateNamePolicyEveryPath(t *testing.T) {
	paths := []struct {
		name string
		task func(ev *event.Event) Task
	}{
		{"plain create", func(ev *event.Event) Task { return Task{Event: ev} }},
		{"uncertain", func(ev *event.Event) Task { return Task{Event: ev, Uncertain: true} }},
		{"replay", func(ev *event.Event) Task { return Task{Event: ev, ReplayCount: 1} }},
	}
	for _, policy := range []string{DuplicateMerge, DuplicateReject} {
		for _, p := range paths {
			t.Run(policy+"/"+p.name, func(t *testing.T) {
				h := newHarness(t, func(c *Config) { c.DuplicateNames = policy })
				h.api.seed("alice", "friends", item("bob"))
				o := h.dispatch(p.task(newEvent("alice", "friends", c2c("bob"), c2c("carol"))))
				g := h.api.group("alice", "friends")
				if h.api.groupCount("alice") != 1 {
					t.Fatalf("%d groups, want the one", h.api.groupCount("alice"))
				}
				switch policy {
				case DuplicateMerge:
					if o.Result != Applied || len(g.contacts) != 2 {
						t.Fatalf("outcome %+v, group %+v: want applied with bob and carol", o, g)
					}
				case DuplicateReject:
					var det ResultDetail
					if err := json.Unmarshal(o.Detail, &det); err != nil {
						t.Fatal(err)
					}
					if o.Result != Rejected || o.Code != im.CodeBadParams || !strings.Contains(o.Info, "already exists") ||
						det.GroupID != g.id || len(det.Failed) != 1 || det.Failed[0].ToAccount != "carol" || len(g.contacts) != 1 {
						t.Fatalf("outcome %+v (%s), group %+v: want rejected as a duplicate, group untouched", o, o.Detail, g)
					}
				}
			})
		}
	}
}

// TestDuplicateNameAlreadyComplete: under either policy, a group that already holds every
// conversation of the event is the event applied (its own earlier create, or alike).
func TestDuplicateNameAlreadyComplete(t *testing.T) {
	for _, policy := range []string{DuplicateMerge, DuplicateReject} {
		t.Run(policy, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.DuplicateNames = policy })
			h.api.seed("alice", "friends", item("bob"))
			if o := h.dispatch(Task{Event: newEvent("alice", "friends", c2c("bob"))}); o.Result != Applied {
				t.Fatalf("outcome %+v", o)
			}
			if h.api.count(im.APIUpdate) != 0 {
				t.Fatal("nothing to add, yet an update was sent")
			}
		})
	}
}

// TestDuplicateCodeWithoutDuplicate: the duplicate code answering a create for a name the user
// does not have is taken as the bad parameters it also means: rejected, never created again.
func TestDuplicateCodeWithoutDuplicate(t *testing.T) {
	h := newHarness(t, nil)
	h.api.failCodes(im.APICreate, im.CodeBadParams, 1)
	o := h.dispatch(Task{Event: newEvent("alice", "friends")})
	if o.Result != Rejected || o.Code != im.CodeBadParams || h.api.count(im.APICreate) != 1 || h.api.groupCount("alice") != 0 {
		t.Fatalf("outcome %+v after %d creates", o, h.api.count(im.APICreate))
	}
}

// TestDuplicateNameAfterRename: a group the user renamed no longer has the event's name, so a
// replay (of a partial letter, say) creates the group again under its name, on either policy.
func TestDuplicateNameAfterRename(t *testing.T) {
	for _, policy := range []string{DuplicateMerge, DuplicateReject} {
		t.Run(policy, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.DuplicateNames = policy })
			h.api.seed("alice", "besties", item("bob")) // was "friends"
			o := h.dispatch(Task{Event: newEvent("alice", "friends", c2c("bob"), c2c("carol")), ReplayCount: 1})
			if o.Result != Applied || h.api.group("alice", "friends") == nil || h.api.groupCount("alice") != 2 {
				t.Fatalf("outcome %+v, %d groups", o, h.api.groupCount("alice"))
			}
		})
	}
}

// TestDuplicateNameSimulator: against the simulator, whose duplicate code is configurable
// (what imcheck found), the dispatcher with the same code merges a plain create of an existing
// name; with a code it does not know, the create is rejected as it was before the policy.
func TestDuplicateNameSimulator(t *testing.T) {
	for _, c := range []struct {
		simCode, dispCode int
		want              Result
	}{
		{0, 0, Applied},         // both default to 50002
		{51099, 51099, Applied}, // configured alike
		{51099, 0, Rejected},    // the dispatcher doesn't know the API's code
		{0, 51099, Rejected},    // 50002 then is only bad parameters
	} {
		t.Run(fmt.Sprintf("sim %d dispatcher %d", c.simCode, c.dispCode), func(t *testing.T) {
			e := newSimEnv(t, imsim.Config{DuplicateCode: c.simCode}, simKey, func(cfg *Config) { cfg.DuplicateCode = c.dispCode })
			if o := e.dispatchAll(newEvent("alice", "friends", c2c("bob")))[0]; o.Result != Applied {
				t.Fatalf("setup: %+v", o)
			}
			o := e.dispatchAll(newEvent("alice", "friends", c2c("carol")))[0]
			if o.Result != c.want {
				t.Fatalf("outcome %+v, want %v", o, c.want)
			}
			g := e.sim.Groups("alice")
			if len(g) != 1 || (c.want == Applied) != (len(g[0].Contacts) == 2) {
				t.Fatalf("groups %+v", g)
			}
		})
	}
}

func TestDuplicateNamesValidate(t *testing.T) {
	err := Config{API: newFakeAPI(), DuplicateNames: "allow"}.Validate()
	if err == nil || !strings.Contains(err.Error(), "merge or reject") {
		t.Fatalf("err %v", err)
	}
}
