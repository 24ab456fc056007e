package budget

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/internal/configtest"
)

func TestLedgerGrants(t *testing.T) {
	t0 := time.Unix(1_900_000_000, 0)
	ts := func(d time.Duration) int64 { return t0.Add(d).UnixNano() }
	rec := func(m string, seq uint64, at time.Duration, held, want int) Record {
		return Record{Member: m, Seq: seq, TS: ts(at), Held: held, Want: want}
	}
	type step struct {
		r         Record
		wantGrant int
		wantLive  bool
		wantStale bool
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"alone: up to the budget", []step{
			{rec("a", 1, 0, 0, 150), 150, false, false},
			{rec("a", 2, 100*time.Millisecond, 150, 250), 200, true, false},
		}},
		{"second member gets what is left", []step{
			{rec("a", 1, 0, 0, 150), 150, false, false},
			{rec("b", 1, 0, 0, 100), 50, false, false},
		}},
		{"a want counts against others before it is granted", []step{
			{rec("a", 1, 0, 0, 50), 50, false, false},
			{rec("a", 2, 0, 50, 180), 180, true, false},
			{rec("b", 1, 0, 0, 100), 20, false, false},
		}},
		{"shrink is always granted and frees room", []step{
			{rec("a", 1, 0, 0, 200), 200, false, false},
			{rec("b", 1, 0, 0, 100), 0, false, false},
			{rec("a", 2, 0, 200, 100), 100, true, false},
			{rec("b", 2, 0, 0, 100), 100, true, false},
		}},
		{"held above the last grant is not believed", []step{
			{rec("a", 1, 0, 0, 200), 200, false, false},
			{rec("b", 1, 0, 0, 100), 0, false, false},
			{rec("b", 2, 0, 100, 100), 0, true, false},
		}},
		{"a stale record changes nothing", []step{
			{rec("a", 2, 0, 0, 10), 10, false, false},
			{rec("a", 1, 0, 0, 200), 10, true, true},
		}},
		{"an expired entry frees its grant; its member starts again from nothing", []step{
			{rec("a", 1, 0, 0, 200), 200, false, false},
			{rec("b", 1, 3100*time.Millisecond, 0, 200), 200, false, false},
			{rec("a", 2, 3200*time.Millisecond, 200, 200), 0, false, false},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLedger(200, 3*time.Second, 0, t0.Add(-3*time.Second))
			for i, s := range tc.steps {
				a := l.Apply(s.r)
				if a.Grant != s.wantGrant || a.Live != s.wantLive || a.Stale != s.wantStale {
					t.Fatalf("step %d %+v: %+v, want grant %d live %v stale %v", i, s.r, a, s.wantGrant, s.wantLive, s.wantStale)
				}
				if g := l.Granted(); g > 200 {
					t.Fatalf("step %d: grants add up to %d", i, g)
				}
			}
		})
	}
}

func TestLedgerReadyAfterHorizon(t *testing.T) {
	t0 := time.Unix(1_900_000_000, 0)
	l := NewLedger(200, 3*time.Second, 500*time.Millisecond, t0)
	l.Apply(Record{Member: "a", Seq: 1, TS: t0.Add(3 * time.Second).UnixNano()})
	if l.Ready() {
		t.Fatal("ready before ttl+margin after the first record read")
	}
	if a := l.Apply(Record{Member: "a", Seq: 2, TS: t0.Add(3500 * time.Millisecond).UnixNano()}); !a.Ready {
		t.Fatal("not ready at ttl+margin")
	}
}

func TestLedgerTarget(t *testing.T) {
	t0 := time.Unix(1_900_000_000, 0)
	for _, tc := range []struct {
		name    string
		others  map[string]int // member → demand
		demand  int
		want    int
		members string
	}{
		{"alone", nil, 200, 200, "m"},
		{"idle other", map[string]int{"b": 2}, 200, 198, "m"},
		{"both saturated", map[string]int{"b": 200}, 200, 100, "m"},
		{"three saturated: remainder to the lowest ids", map[string]int{"b": 200, "c": 200}, 200, 67, "a"},
		{"three saturated: not the lowest", map[string]int{"a": 200, "b": 200}, 200, 66, "c"},
		{"small demand is met", map[string]int{"b": 200}, 30, 30, "m"},
		{"demand above the budget", map[string]int{}, 1000, 200, "m"},
		{"uncontended: the rest is split evenly on top of the demands", map[string]int{"b": 2}, 2, 100, "m"},
		{"uncontended, uneven demands", map[string]int{"b": 2, "c": 50}, 10, 56, "a"},
		{"uncontended: remainder to the lowest ids", map[string]int{"b": 3, "c": 2}, 2, 67, "a"},
		{"uncontended: not the lowest", map[string]int{"a": 2, "b": 3}, 2, 66, "c"},
		{"uncontended: a member that left takes no headroom", map[string]int{"b": 0}, 2, 200, "m"},
		{"no demand, no headroom", map[string]int{"b": 2}, 0, 0, "m"},
		{"contended: no headroom", map[string]int{"b": 150}, 60, 60, "m"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLedger(200, 3*time.Second, 0, t0)
			for m, d := range tc.others {
				l.Apply(Record{Member: m, Seq: 1, TS: t0.UnixNano(), Demand: d})
			}
			if got := l.Target(tc.members, tc.demand); got != tc.want {
				t.Errorf("target %d, want %d", got, tc.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Member: "m", Budget: 200}
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   []string
	}{
		{"defaults", func(*Config) {}, nil},
		{"no member", func(c *Config) { c.Member = "" }, []string{"budget config: member: name is empty"}},
		{"no budget", func(c *Config) { c.Budget = 0 }, []string{"budget: 0 must be positive"}},
		{"negative duration", func(c *Config) { c.Interval = -time.Second }, []string{"interval: durations must be positive"}},
		{"negative ttl", func(c *Config) { c.TTL = -time.Second }, []string{"ttl: durations must be positive"}},
		{"fence too long for the ttl", func(c *Config) { c.Fence = 3 * time.Second }, []string{"fence: 3s + 2 × margin"}},
		{"ttl below the defaults' least", func(c *Config) { c.TTL = 2300 * time.Millisecond },
			[]string{"fence: 800ms + 2 × margin 250ms + window 1.005s must not exceed ttl 2.3s"}},
		{"resend too long for the fence", func(c *Config) { c.Interval, c.Resend = 100*time.Millisecond, 700*time.Millisecond },
			[]string{"resend: interval 100ms + resend 700ms must stay below fence 800ms"}},
		{"window under a second", func(c *Config) { c.Window = time.Millisecond }, []string{"window: 1ms shorter than one second"}},
		{"linger off", func(c *Config) { c.LeaveLinger = LingerOff }, nil},
		{"linger longer than the ttl", func(c *Config) { c.LeaveLinger = 4 * time.Second },
			[]string{"leave linger: 4s exceeds ttl 2.4s"}},
		{"everything", func(c *Config) {
			*c = Config{Budget: -1, Interval: -1, TTL: -1, Fence: -1, Margin: -1, Resend: -1, Window: time.Millisecond}
		}, []string{"member", "budget", "interval", "ttl", "fence", "margin", "resend", "window"}},
		{"member, budget and the relation", func(c *Config) { *c = Config{TTL: 2 * time.Second} },
			[]string{"member", "budget", "fence: 800ms"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mutate(&c)
			configtest.Problems(t, c.Validate(), tc.want...)
			if _, err := NewMember(c, &simLimiter{}, time.Time{}); (err == nil) != (len(tc.want) == 0) {
				t.Errorf("NewMember error %v disagrees with Validate", err)
			}
		})
	}
}

func TestKafkaConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		kc   KafkaConfig
		want []string
	}{
		{"ok", KafkaConfig{Brokers: []string{"b"}, Topic: "t"}, nil},
		{"no brokers", KafkaConfig{Topic: "t"}, []string{"budget kafka config: brokers: no brokers"}},
		{"no topic", KafkaConfig{Brokers: []string{"b"}}, []string{"topic: no topic"}},
		{"negative retention", KafkaConfig{Brokers: []string{"b"}, Topic: "t", Retention: -1}, []string{"retention: -1ns is negative"}},
		{"everything", KafkaConfig{Retention: -time.Minute}, []string{"brokers", "topic", "retention"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			configtest.Problems(t, tc.kc.Validate(), tc.want...)
		})
	}
	kc := KafkaConfig{}
	kc.setDefaults()
	if kc.Retention != DefaultRetention || kc.Logger == nil || kc.Metrics == nil {
		t.Errorf("defaults not applied: %+v", kc)
	}
}

func TestNewRunnerChecks(t *testing.T) {
	ok := Config{Member: "m", Budget: 200}
	if _, err := NewRunner(KafkaConfig{Brokers: []string{"b"}, Topic: "t"}, ok, nil, nil); err == nil {
		t.Error("runner without sink and source accepted")
	}
	if _, err := NewMember(ok, nil, time.Now()); err == nil {
		t.Error("member without sink accepted")
	}
}

func TestRecordValidate(t *testing.T) {
	for _, r := range []Record{{}, {Member: "m", Held: -1}, {Member: "m", Want: -1}, {Member: "m", Demand: -1},
		{Member: "m", Ages: []int{3, -1}}, {Member: "m", Ages: make([]int, maxAges+1)}} {
		if r.Validate() == nil {
			t.Errorf("%+v accepted", r)
		}
	}
	if err := (Record{Member: "m", Ages: make([]int, maxAges)}).Validate(); err != nil {
		t.Error(err)
	}
}

// FuzzRecord: whatever the budget topic holds, a record that decodes and validates folds into
// a ledger and a successor's plan without a panic, and the plan never stamps more calls than
// the record's ages timed plus the bound.
func FuzzRecord(f *testing.F) {
	f.Add([]byte(`{"m":"a","s":3,"t":1900000000000000000,"h":60,"w":60,"d":200,"u":58,"p":60,"a":[3,0,7,12]}`))
	f.Add([]byte(`{"m":"b","s":1,"t":1,"u":5,"x":"a","a":[]}`))
	f.Add([]byte(`{"m":"a","a":[-1]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Record
		if json.Unmarshal(b, &r) != nil || r.Validate() != nil {
			return
		}
		l := NewLedger(200, DefaultTTL, DefaultMargin, time.Unix(0, 0))
		l.Apply(r)
		bound, _ := l.Bound(r.Member)
		ts, ages := l.Ages(r.Member)
		plan, rest := preloadPlan(bound, ts, ages, ts.Add(100*time.Millisecond), DefaultWindow, false, false)
		total := rest
		for _, s := range plan {
			if s.n <= 0 || s.at.After(ts) {
				t.Fatalf("plan %+v of %+v: a slot of %d calls stamped at %v (record at %v)", plan, r, s.n, s.at, ts)
			}
			total += s.n
		}
		timed := 0
		for _, n := range r.Ages {
			timed += n
		}
		if total < bound || total > max(bound, timed) {
			t.Fatalf("plan %+v, rest %d of %+v: %d calls stamped, want from the bound %d to max(bound, timed %d)", plan, rest, r, total, bound, timed)
		}
	})
}

// TestMemberLeaveIsFinal: from its leave on a member's ceiling is 0 whatever it reads or is
// ticked with (the linger's records want nothing and are safe only because it calls nothing),
// and each further Leave is a newer record with the calls still in its window.
func TestMemberLeaveIsFinal(t *testing.T) {
	t0 := time.Unix(1_900_000_000, 0)
	m, lim := loneMember(t, &t0)
	at := t0
	r, _ := m.Tick(at, 100, 0, nil) // not ready before a record is read: wants nothing
	m.Apply(*r, at)
	at = at.Add(DefaultInterval)
	r, _ = m.Tick(at, 100, 0, nil)
	if got := m.Apply(*r, at); got != 100 {
		t.Fatalf("ceiling %d after its first grant, want 100", got)
	}
	r, _ = m.Tick(at.Add(200*time.Millisecond), 100, 40, nil)
	leave := m.Leave(at.Add(250*time.Millisecond), 40, nil)
	if m.Ceiling() != 0 || lim.share != 0 {
		t.Fatalf("ceiling %d (limiter %d) after the leave, want 0", m.Ceiling(), lim.share)
	}
	if got := m.Apply(*r, at.Add(260*time.Millisecond)); got != 0 {
		t.Errorf("a grant read back after the leave set the ceiling to %d", got)
	}
	if rec, got := m.Tick(at.Add(400*time.Millisecond), 100, 30, nil); rec != nil || got != 0 {
		t.Errorf("Tick after the leave: record %+v, ceiling %d; want none and 0", rec, got)
	}
	next := m.Leave(at.Add(350*time.Millisecond), 30, nil)
	if next.Seq <= leave.Seq || next.Held != 0 || next.Want != 0 || next.Demand != 0 || next.Used != 30 || next.Peak != 100 {
		t.Errorf("lingering record %+v after leave %+v: want a newer seq, nothing held or wanted, used 30, peak 100", next, leave)
	}
	if got := m.LeaveLinger(); got != DefaultWindow+2*DefaultInterval {
		t.Errorf("default linger %v, want a window and two intervals", got)
	}
}

// TestMemberFencesItsSink: every grant the member confirms reaches its sink with the fence of
// that confirmation (the record's publication + Fence), so that the limiter stops on its own
// clock even if the member never ticks again (a process frozen past its fence); a leave ends it
// at once.
func TestMemberFencesItsSink(t *testing.T) {
	t0 := time.Unix(1_900_000_000, 0)
	m, lim := loneMember(t, &t0)
	at := t0
	r, _ := m.Tick(at, 100, 0, nil)
	m.Apply(*r, at)
	for i := range 3 {
		at = at.Add(DefaultInterval)
		r, _ = m.Tick(at, 100, 0, nil)
		m.Apply(*r, at.Add(30*time.Millisecond))
		if want := at.Add(DefaultFence); !lim.fence.Equal(want) {
			t.Fatalf("confirmation %d: sink fence %v, want the record's publication + Fence %v", i, lim.fence.Sub(t0), want.Sub(t0))
		}
	}
	if got := lim.take(at.Add(DefaultFence-time.Millisecond), 5); got != 5 {
		t.Fatalf("inside the fence the sink made %d of 5 calls", got)
	}
	// Frozen: no Tick, no Apply. The sink stops at the fence by itself.
	if got := lim.take(at.Add(DefaultFence+time.Second), 5); got != 0 {
		t.Errorf("past the fence, with no tick since, the sink made %d calls", got)
	}
	leave := at.Add(200 * time.Millisecond)
	m.Leave(leave, 5, nil)
	if !lim.fence.Equal(leave) {
		t.Errorf("fence %v after the leave, want the leave %v", lim.fence.Sub(t0), leave.Sub(t0))
	}
}

// loneMember is member "a" of a budget of 100, alone, starting to read at *t0, steering a
// simulated limiter on that clock.
func loneMember(t *testing.T, t0 *time.Time) (*Member, *simLimiter) {
	t.Helper()
	lim := &simLimiter{now: t0}
	c := Config{Member: "a", Budget: 100}
	m, err := NewMember(c, lim, c.StartAt(*t0))
	if err != nil {
		t.Fatal(err)
	}
	return m, lim
}

// TestMemberUsesRoomFreedAtOthersRecords: a grant's part usable at once grows as soon as the
// member reads another member's record that frees room (a leaving member's linger reporting
// fewer calls left), not at its own next round trip; a stale record frees nothing, and neither
// does any record read past the member's fence.
func TestMemberUsesRoomFreedAtOthersRecords(t *testing.T) {
	t0 := time.Unix(1_900_000_000, 0)
	m, lim := loneMember(t, &t0)
	ms := func(d int) time.Time { return t0.Add(time.Duration(d) * time.Millisecond) }
	b := func(seq uint64, at time.Time, held, want, used int) Record {
		return Record{Member: "b", Seq: seq, TS: at.UnixNano(), Held: held, Want: want, Demand: want, Used: used}
	}
	m.Apply(b(1, ms(0), 0, 100, 0), ms(0))
	m.Apply(b(2, ms(50), 100, 100, 100), ms(50))
	m.Apply(b(3, ms(100), 0, 0, 100), ms(100)) // b leaves with a full window
	r, _ := m.Tick(ms(110), 100, 0, nil)
	if got := m.Apply(*r, ms(110)); got != 100 || lim.share != 0 {
		t.Fatalf("after its grant: ceiling %d, in force %d; want 100 and nothing at once (b's calls fill the window)", got, lim.share)
	}
	for _, step := range []struct {
		rec  Record
		at   int
		want int
	}{
		{b(4, ms(150), 0, 0, 60), 150, 40},  // b's linger: 40 of its calls aged out
		{b(3, ms(100), 0, 0, 100), 160, 40}, // stale: changes nothing
		{b(5, ms(200), 0, 0, 25), 200, 75},
		{b(6, ms(2000), 0, 0, 0), 2000, 75}, // past a's fence (its record + 800 ms): nothing
	} {
		m.Apply(step.rec, ms(step.at))
		if lim.share != step.want {
			t.Errorf("after b's record seq %d (used %d) read at %d ms: %d in force, want %d", step.rec.Seq, step.rec.Used, step.at, lim.share, step.want)
		}
	}
}
