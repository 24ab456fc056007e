package chaos

import (
	"strings"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
)

// A seed always draws the same schedule, and every schedule has the lifecycle events the suite
// promises, each on a replica that is up at the time; with the retry lane too.
func TestNewSchedule(t *testing.T) {
	for n := uint64(1); n <= 80; n++ {
		seed := (n-1)%40 + 1
		o := Options{Seed: seed, Duration: 60 * time.Second, DLQFaults: true, RetryLane: n > 40}
		s := NewSchedule(o)
		if again := NewSchedule(o); again.String() != s.String() {
			t.Fatalf("seed %d: two draws differ", seed)
		}
		if s.Replicas < 3 || s.Replicas > 5 {
			t.Errorf("seed %d: %d replicas", seed, s.Replicas)
		}
		for _, k := range []Kind{KindStop, KindKill, KindPause, KindBurst} {
			if s.Count(k) == 0 {
				t.Errorf("seed %d: no %s step\n%s", seed, k, s)
			}
		}
		// Replay the fleet: stop, kill and pause only a replica that is up and not paused;
		// start only one that is down; never all replicas out at once.
		// Lasting faults alternate with their ends.
		storm, dlqDown, slow := false, false, map[string]bool{}
		for _, st := range s.Steps {
			bad := false
			switch st.Kind {
			case KindStorm, KindStormEnd:
				bad, storm = storm == (st.Kind == KindStorm), st.Kind == KindStorm
			case KindDLQDown, KindDLQUp:
				bad, dlqDown = dlqDown == (st.Kind == KindDLQDown), st.Kind == KindDLQDown
			case KindSlow, KindSlowEnd:
				bad, slow[st.Account] = slow[st.Account] == (st.Kind == KindSlow), st.Kind == KindSlow
			}
			if bad {
				t.Fatalf("seed %d: %s at %v overlaps or ends nothing\n%s", seed, st.Kind, st.At, s)
			}
		}
		up := make([]bool, s.Replicas)
		paused := make([]bool, s.Replicas)
		for i := range up {
			up[i] = true
		}
		for _, st := range s.Steps {
			switch st.Kind {
			case KindStop, KindKill, KindPause:
				if !up[st.Slot] || paused[st.Slot] {
					t.Fatalf("seed %d: %s of replica %d at %v, which is down or paused\n%s", seed, st.Kind, st.Slot, st.At, s)
				}
				if st.Kind == KindPause {
					paused[st.Slot] = true
				} else {
					up[st.Slot] = false
				}
			case KindResume:
				paused[st.Slot] = false
			case KindStart:
				if up[st.Slot] {
					t.Fatalf("seed %d: start of replica %d at %v, which is up\n%s", seed, st.Slot, st.At, s)
				}
				up[st.Slot] = true
			}
			working := 0
			for i := range up {
				if up[i] && !paused[i] {
					working++
				}
			}
			if working == 0 {
				t.Fatalf("seed %d: no replica working at %v\n%s", seed, st.At, s)
			}
		}
	}
	if NewSchedule(Options{Seed: 1}).String() == NewSchedule(Options{Seed: 2}).String() {
		t.Fatal("seeds 1 and 2 draw the same schedule")
	}
	if n := NewSchedule(Options{Seed: 3}).Count(KindDLQDown); n != 0 {
		t.Fatalf("%d dlq-down steps without DLQFaults", n)
	}
}

// Generated records are what their kind says: valid ones parse, invalid ones do not, seqs
// count up per account from 1, and a duplicate is byte-identical to its original.
func TestScheduleRecords(t *testing.T) {
	s := NewSchedule(Options{Seed: 11, Duration: 60 * time.Second})
	last := map[string]int64{}
	byID := map[string][]byte{}
	for _, r := range s.Records() {
		e, err := event.Parse(r.Value)
		switch r.Kind {
		case Valid, Rejected:
			if err != nil {
				t.Fatalf("%s %s does not parse: %v", r.Kind, r.EventID, err)
			}
			if e.Seq <= last[r.Account] && !(r.Seq == last[r.Account]-1) {
				// Swapped pairs go out seq n+1, then n; anything else must count up.
				t.Fatalf("account %s: seq %d after %d", r.Account, e.Seq, last[r.Account])
			}
			last[r.Account] = max(last[r.Account], e.Seq)
			byID[r.EventID] = r.Value
		case Duplicate:
			if string(byID[r.EventID]) != string(r.Value) {
				t.Fatalf("duplicate %s differs from its original", r.EventID)
			}
		case Invalid:
			if err == nil {
				t.Fatalf("invalid record parses: %s", r.Value)
			}
		}
	}
	if len(byID) < 100 {
		t.Fatalf("only %d events in 60s", len(byID))
	}
}

// The fleet budget mode alternates by seed, both modes among a few seeds, without changing the
// seed's steps; a mode given is kept.
func TestScheduleFleetBudget(t *testing.T) {
	modes := map[string][]uint64{}
	for seed := uint64(1); seed <= 10; seed++ {
		s := NewSchedule(Options{Seed: seed})
		modes[s.FleetBudget] = append(modes[s.FleetBudget], seed)
		if !strings.Contains(s.String(), "fleet budget "+s.FleetBudget) {
			t.Errorf("seed %d: the printed schedule does not say its fleet budget %q", seed, s.FleetBudget)
		}
		for _, m := range []string{BudgetStatic, BudgetKafka} {
			f := NewSchedule(Options{Seed: seed, FleetBudget: m})
			if f.FleetBudget != m {
				t.Errorf("seed %d: fleet budget %q given, schedule has %q", seed, m, f.FleetBudget)
			}
			if steps(f) != steps(s) {
				t.Errorf("seed %d: forcing fleet budget %s changed the steps", seed, m)
			}
		}
	}
	if len(modes[BudgetStatic]) == 0 || len(modes[BudgetKafka]) == 0 || len(modes) != 2 {
		t.Errorf("seeds 1-10 drew %v: want both modes and nothing else", modes)
	}
	t.Logf("fleet budget by seed: %v", modes)
}

// steps is the printed schedule without its header line.
func steps(s *Schedule) string {
	_, rest, _ := strings.Cut(s.String(), "\n")
	return rest
}

// Every third seed draws lifecycle events (contract v2), the others creates only, as before;
// a lifecycle seed's records carry what the checker reads (type, group, new name, the
// conversations), agree with their bytes, and each account's valid events all apply in seq
// order: none names a group that does not exist then.
func TestScheduleLifecycle(t *testing.T) {
	for seed := uint64(1); seed <= 12; seed++ {
		s := NewSchedule(Options{Seed: seed, DLQFaults: true})
		want := EventsCreate
		if seed%3 == 0 {
			want = EventsLifecycle
		}
		if s.Events != want || !strings.Contains(s.String(), "events "+want) {
			t.Fatalf("seed %d: events %q, want %q", seed, s.Events, want)
		}
		if want == EventsCreate {
			if forced := NewSchedule(Options{Seed: seed, DLQFaults: true, Events: EventsCreate}); forced.String() != s.String() {
				t.Errorf("seed %d: the default is not the create schedule", seed)
			}
		}
		types := map[string]int{}
		for _, r := range s.Records() {
			if r.Kind != Valid && r.Kind != Rejected {
				continue
			}
			types[r.Type]++
			e, err := event.Parse(r.Value)
			if err != nil {
				t.Fatalf("seed %d: %s does not parse: %v", seed, r.EventID, err)
			}
			if string(e.EventType) != r.Type || e.GroupName != r.Group || e.NewGroupName != r.NewGroup || e.Seq != r.Seq ||
				len(e.Contacts) != len(r.Contacts) {
				t.Fatalf("seed %d: record %+v disagrees with its event %+v", seed, r, e)
			}
			for i, c := range e.Contacts {
				if r.Contacts[i] != (im.ContactItem{Type: c.Type, ToAccount: c.ToAccount, ToGroupID: c.ToGroupID}) {
					t.Fatalf("seed %d: record %s contact %d: %+v, event has %+v", seed, r.EventID, i, r.Contacts[i], c)
				}
			}
			if r.Kind == Rejected && r.Type != EventCreated {
				t.Errorf("seed %d: a ghost's event %s is a %s: ghosts only create", seed, r.EventID, r.Type)
			}
		}
		if _, err := applyInOrder(s.Records()); err != nil {
			t.Errorf("seed %d: %v", seed, err)
		}
		switch {
		case want == EventsCreate && len(types) != 1:
			t.Errorf("seed %d: a create seed has types %v", seed, types)
		case want == EventsLifecycle && len(types) != 5:
			t.Errorf("seed %d: a lifecycle seed has types %v, want all five", seed, types)
		}
		if want == EventsLifecycle {
			t.Logf("seed %d: valid events by type %v", seed, types)
		}
	}
}

// TestScheduleReplayWithReplicas: forcing the fleet size a seed draws anyway (as the printed
// replay command does) gives the very same schedule; seed 9 once replayed as another one.
func TestScheduleReplayWithReplicas(t *testing.T) {
	for seed := uint64(1); seed <= 30; seed++ {
		drawn := NewSchedule(Options{Seed: seed, Duration: time.Minute})
		forced := NewSchedule(Options{Seed: seed, Duration: time.Minute, Replicas: drawn.Replicas})
		if drawn.String() != forced.String() {
			t.Fatalf("seed %d: forcing %d replicas changed the schedule:\n%s\nvs\n%s", seed, drawn.Replicas, drawn, forced)
		}
	}
}
