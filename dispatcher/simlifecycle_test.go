package dispatcher

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
)

// lifecycleOf is one account's events in seq order: create "friends" with bob and carol, add
// dave and erin, remove bob, rename to "pals", and, when deleted, delete "pals".
func lifecycleOf(account string, deleted bool) []*event.Event {
	id := func(n int) string { return fmt.Sprintf("%s-%d", account, n) }
	evs := []*event.Event{
		{EventID: id(1), EventType: event.TypeContactGroupCreated, FromAccount: account, GroupName: "friends",
			Contacts: []event.Contact{c2c("bob"), c2c("carol")}},
		{EventID: id(2), EventType: event.TypeContactGroupContactsAdded, FromAccount: account, GroupName: "friends",
			Contacts: []event.Contact{c2c("dave"), c2c("erin")}},
		{EventID: id(3), EventType: event.TypeContactGroupContactsRemoved, FromAccount: account, GroupName: "friends",
			Contacts: []event.Contact{c2c("bob")}},
		{EventID: id(4), EventType: event.TypeContactGroupRenamed, FromAccount: account, GroupName: "friends", NewGroupName: "pals"},
	}
	if deleted {
		evs = append(evs, &event.Event{EventID: id(5), EventType: event.TypeContactGroupDeleted, FromAccount: account, GroupName: "pals"})
	}
	for i, ev := range evs {
		ev.Seq = int64(i + 1)
	}
	return evs
}

// TestSimulatorLifecycleApplyThenFail runs every account's lifecycle, one event at a time per
// account as the consumer would, through the real IM client against the simulator, where half
// of all creates, updates and deletes are applied and then answered 50005. Every event ends
// applied, the simulator's groups are what applying each event once gives, and each event
// changed the simulator's state exactly once.
func TestSimulatorLifecycleApplyThenFail(t *testing.T) {
	e := newSimEnv(t, imsim.Config{CallLog: true, Faults: imsim.Faults{ApplyThenFailRate: 0.5,
		APIs: []string{im.APICreate, im.APIUpdate, im.APIDelete}}}, simKey,
		func(c *Config) { c.RetryBudget = 10 * time.Second })
	const accounts = 20
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		events int
	)
	for i := range accounts {
		account := fmt.Sprintf("user%d", i)
		evs := lifecycleOf(account, i%2 == 0)
		events += len(evs)
		wg.Go(func() {
			for _, ev := range evs {
				o, err := e.d.Dispatch(ctx, Task{Event: ev})
				if err != nil || o.Result != Applied {
					mu.Lock()
					t.Errorf("%s %s: %+v %v", account, ev.EventType, o, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	for i := range accounts {
		account := fmt.Sprintf("user%d", i)
		got := map[string][]string{}
		for _, g := range e.sim.Groups(account) {
			var names []string
			for _, c := range g.Contacts {
				names = append(names, c.ToAccount)
			}
			slices.Sort(names)
			got[g.Name] = names
		}
		want := map[string][]string{"pals": {"carol", "dave", "erin"}}
		if i%2 == 0 {
			want = map[string][]string{}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s groups (-want +got):\n%s", account, diff)
		}
	}
	applied := 0
	for _, c := range e.sim.Calls() {
		if c.Applied {
			applied++
		}
	}
	if applied != events {
		t.Errorf("%d calls changed the simulator's state for %d events: want one each", applied, events)
	}
	st := e.sim.Stats()
	for _, api := range []string{im.APICreate, im.APIUpdate, im.APIDelete} {
		if st.APIs[api].Codes[im.CodeTimeout] == 0 {
			t.Errorf("no %s was applied and answered 50005: the fault did not fire", api)
		}
	}
}
