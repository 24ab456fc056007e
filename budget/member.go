package budget

import (
	"cmp"
	"errors"
	"fmt"
	"time"
)

// Defaults of Config. TTL is the least Validate allows with the others (2.305 s), rounded up to
// 100 ms: a crashed member's grant is held that long. Fence and Resend bound how long a member's
// own records may take to come back (DESIGN.md "Fence and TTL").
const (
	DefaultInterval = 50 * time.Millisecond
	DefaultTTL      = 2400 * time.Millisecond
	DefaultFence    = 800 * time.Millisecond
	DefaultMargin   = 250 * time.Millisecond
	DefaultResend   = 300 * time.Millisecond
	DefaultWindow   = time.Second + 5*time.Millisecond
)

// LingerOff, as Config.LeaveLinger, turns the linger after a leave off (any negative value
// does): the leave record is the member's last, and the others take its room at once only as
// far as that record's Used allows, the rest a window after they read it.
const LingerOff time.Duration = -1

// Config configures a Member. Zero durations take the defaults above.
type Config struct {
	// Member names this process in the topic; it must differ from every other process's,
	// restarts included (a hostname plus a random suffix).
	Member string
	// Budget is the group's budget in calls per limiter window.
	Budget int
	// Interval is how often the member publishes its record.
	Interval time.Duration
	// TTL is how long after its last record (by the records' timestamps) an entry expires and
	// its grant returns to the pool: a crashed member's budget is back after about TTL.
	TTL time.Duration
	// Fence is how long after publishing its last confirmed record a member may go on using
	// its grant: one that can't read its own records back stops by then (Sink.SetFence).
	// Fence + 2 × Margin + Window must not exceed TTL: a member's entry can't expire in anyone's
	// ledger before the member itself has stopped and its last calls have left every window. A
	// live member confirms a record about every Interval plus a round trip, so its fence trips
	// only when its records take hundreds of milliseconds to come back (DESIGN.md "Fence and
	// TTL").
	Fence time.Duration
	// Margin is the largest clock difference between replicas the protocol allows for (expiry
	// compares one member's timestamps with another's), and the extra the horizon of a new
	// reader reaches back.
	Margin time.Duration
	// Resend is how long a record may go unconfirmed before the next one is published anyway,
	// and the writer's timeout. Interval + Resend must stay below Fence: a lost record is
	// then resent and confirmed before the fence trips.
	Resend time.Duration
	// Window is the limiter's window: at least one second, and no shorter than the window the
	// sink's limiter enforces (Record.Peak is taken over it).
	Window time.Duration
	// LeaveLinger is how long a stopping member may go on publishing after its leave record
	// (every Interval, nothing held or wanted, the calls still in its last window), so that
	// the others grow into its room at once as those calls age out instead of a window after
	// its leave. It stops as soon as a record reports no call left. Zero takes Window + 2 ×
	// Interval (all its calls have left the window by then); LingerOff turns it off. At most
	// TTL: longer could only delay the process's exit.
	LeaveLinger time.Duration
	// Succeeds names the member that ran this process's instance before it on this host, when
	// the caller proved it dead (its host-local lock was free: a frozen process would still
	// hold it; see internal/instancelock). Once ready, the member counts that predecessor's
	// bound as calls of its own (Sink.Preload) and asks, in its records, for the predecessor's
	// entry to end at once rather than TTL after its last record (DESIGN.md, "Succession after
	// a crash"). Empty: none.
	Succeeds string
	// SucceedsAt is when the caller proved Succeeds dead (took its lock): every call of the
	// predecessor was made before it, so its counted calls are stamped then and age out a
	// window later, not a window after the member got ready (up to half a second later on
	// the bench: a start, a connection, the budget topic read up to the horizon). Zero: when
	// they are counted.
	SucceedsAt time.Time
}

// setDefaults fills the zero durations with the defaults above.
func (c *Config) setDefaults() {
	c.Interval = cmp.Or(c.Interval, DefaultInterval)
	c.TTL = cmp.Or(c.TTL, DefaultTTL)
	c.Fence = cmp.Or(c.Fence, DefaultFence)
	c.Margin = cmp.Or(c.Margin, DefaultMargin)
	c.Resend = cmp.Or(c.Resend, DefaultResend)
	c.Window = cmp.Or(c.Window, DefaultWindow)
	c.LeaveLinger = cmp.Or(c.LeaveLinger, c.Window+2*c.Interval)
}

// Validate reports every problem of c, defaults applied, joined, each naming its field.
func (c Config) Validate() error {
	c.setDefaults()
	var errs []error
	if c.Member == "" {
		errs = append(errs, errors.New("member: name is empty"))
	}
	if c.Budget <= 0 {
		errs = append(errs, fmt.Errorf("budget: %d must be positive", c.Budget))
	}
	durations := []struct {
		name string
		v    time.Duration
	}{{"interval", c.Interval}, {"ttl", c.TTL}, {"fence", c.Fence}, {"margin", c.Margin}, {"resend", c.Resend}}
	negative := false
	for _, d := range durations {
		if d.v < 0 {
			negative = true
			errs = append(errs, fmt.Errorf("%s: durations must be positive, got %v", d.name, d.v))
		}
	}
	if c.Window < time.Second {
		errs = append(errs, fmt.Errorf("window: %v shorter than one second", c.Window))
	} else if !negative && c.Fence+2*c.Margin+c.Window > c.TTL {
		// The relation is meaningful only between durations that are each valid.
		errs = append(errs, fmt.Errorf("fence: %v + 2 × margin %v + window %v must not exceed ttl %v", c.Fence, c.Margin, c.Window, c.TTL))
	}
	if !negative && c.Interval+c.Resend >= c.Fence {
		errs = append(errs, fmt.Errorf("resend: interval %v + resend %v must stay below fence %v (a lost record must be resent and confirmed before the fence trips)",
			c.Interval, c.Resend, c.Fence))
	}
	if c.LeaveLinger > c.TTL && c.TTL > 0 {
		errs = append(errs, fmt.Errorf("leave linger: %v exceeds ttl %v (a member's calls have left every window one window after its leave; lingering longer only delays its exit)", c.LeaveLinger, c.TTL))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("budget config: %w", err)
	}
	return nil
}

// Member is one replica's side of the protocol. It is not safe for concurrent use: Runner
// serialises calls. Times passed in must be readings of one monotonic clock whose wall time is
// the replica's (time.Now(), or a test clock).
type Member struct {
	cfg    Config
	sink   Sink
	ledger *Ledger
	seq    uint64
	// ceiling is what the limiter has been told: shrinks apply at once, growth one window later
	// (the limiter's rule, which the safety argument relies on).
	ceiling int
	// out is the last record published and not yet read back.
	out   *Record
	outAt time.Time
	// fenceAt: past it, the ceiling drops to 0 until a record is confirmed again.
	fenceAt time.Time
	demand  int
	used    int
	ages    []int // Record.Ages of the next record
	lastPub time.Time
	history []change // ceilings set, the last one before the window and all within it
	// left: Leave was called. The ceiling stays 0 from then on whatever is read or ticked:
	// the records it lingers with (Held = Want = 0) are safe only because it makes no call.
	left bool
	// preloaded is how many calls of the predecessor (Config.Succeeds) the sink was told of.
	preloaded int
	// nowTold is the part of ceiling the sink was told it may use at once.
	nowTold int
	// unsafeAllSlots counts every slot of the predecessor's ages at its time, those partly
	// before the window included; unsafeSlotStart stamps each slot at its start, up to a step
	// before its calls (tests: broken variants the simulation must catch).
	unsafeAllSlots  bool
	unsafeSlotStart bool
}

// Sink is the rate limiter a Member steers. SetCeiling(n, now) makes n the ceiling: a smaller
// one at once; a larger one up to now at once and the rest only one limiter window (at least
// one second) after the call. The limiter must count a call when it reaches the server and
// never allow more calls in a window than its ceiling: the safety argument (DESIGN.md) rests on
// exactly that.
//
// SetFence(until) makes until the end of every grant the sink holds: from until on it must grant
// no call and write no request, whatever its ceiling, until a later SetFence moves the fence on.
// The member lowers the ceiling itself once it sees its fence pass, but it may not be the first
// to run when a frozen process wakes.
//
// Preload(n, at) counts n calls as made at at (or now, if at is zero or later) in the sink's
// window (a dead predecessor's, see Config.Succeeds): they hold room against its ceiling and
// count in its Used until they age out, a window after at.
type Sink interface {
	SetCeiling(n, now int)
	SetFence(until time.Time)
	Preload(n int, at time.Time)
}

// Source reports this replica's use of the budget: how many calls per window it could use
// (Demand: the budget when work waits for the limiter), how many calls it made in the last
// window (Used), and when (UsedByAge(at, step)[i]: the calls timed in (at − (i+1)·step,
// at − i·step] whose time can no longer move; see Record.Ages).
type Source interface {
	Demand() int
	Used() int
	UsedByAge(at time.Time, step time.Duration) []int
}

// change is one ceiling the member set, for Record.Peak.
type change struct {
	at time.Time
	n  int
}

// NewMember returns a member steering sink that starts reading the topic at records stamped
// from on (see Config.StartAt).
func NewMember(cfg Config, sink Sink, from time.Time) (*Member, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if sink == nil {
		return nil, errors.New("budget: no sink")
	}
	return &Member{cfg: cfg, sink: sink, ledger: NewLedger(cfg.Budget, cfg.TTL, cfg.Margin, from)}, nil
}

// set tells the sink a new ceiling, of which now may be used at once.
func (m *Member) set(at time.Time, n, now int) {
	if n != m.ceiling || (now > 0 && n > 0) {
		if n != m.ceiling {
			m.nowTold = 0
		}
		m.ceiling = n
		m.nowTold = max(m.nowTold, min(now, n))
		m.history = append(m.history, change{at, n})
		m.sink.SetCeiling(n, min(now, n))
	}
}

// useFreedRoom lets the sink use at once as much of the ceiling as the ledger now shows free:
// the room another member's record (or an expiry) just released. The grant was decided at our
// own record; its part usable at once is the same bound evaluated at a later fold, so the room
// flows the moment the releasing member's record is read instead of at our next round trip
// (up to an Interval and a round trip later: on a hand-over at full rate, calls lost for good).
// Safe for the reason the at-once part is (DESIGN.md, "Growth at once"): every bound counted is
// from a record folded before the room is used, and every later growth of the others is folded
// after this point, against our claim, which covers the whole grant.
func (m *Member) useFreedRoom(at time.Time) {
	if m.ceiling <= m.nowTold || !m.ledger.Ready() || at.After(m.fenceAt) {
		return
	}
	now, live := m.ledger.Now(m.cfg.Member)
	if !live || min(now, m.ceiling) <= m.nowTold {
		return
	}
	m.set(at, m.ceiling, now)
}

// peak is the highest ceiling set within the last window (pending growth included).
func (m *Member) peak(at time.Time) int {
	cut := at.Add(-m.cfg.Window)
	i := 0
	for i+1 < len(m.history) && !m.history[i+1].at.After(cut) {
		i++ // history[i] was replaced before the window began
	}
	m.history = m.history[i:]
	p := m.ceiling
	for _, c := range m.history {
		p = max(p, c.n)
	}
	return p
}

// StartAt is where a member starting at now should begin reading the topic.
func (c Config) StartAt(now time.Time) time.Time {
	c.setDefaults()
	return now.Add(-c.TTL - c.Margin)
}

// Ceiling is the calls per window the member may use now (pending growth included; the
// limiter delays it).
func (m *Member) Ceiling() int { return m.ceiling }

// Peers is the number of other live members in the ledger.
func (m *Member) Peers() int { return m.ledger.Peers(m.cfg.Member) }

// Ready reports whether the member has read enough of the topic to take part.
func (m *Member) Ready() bool { return m.ledger.Ready() }

// Apply folds a record read from the topic and returns the ceiling to use.
func (m *Member) Apply(r Record, now time.Time) int {
	a := m.ledger.Apply(r)
	if m.left {
		return m.ceiling
	}
	if r.Member != m.cfg.Member {
		m.useFreedRoom(now)
		return m.ceiling
	}
	if m.out == nil || r.Seq != m.out.Seq || a.Stale {
		return m.ceiling
	}
	// Our latest record is back. Its grant counts only if we are still within the fence of
	// the previous confirmation: past it we stopped, and resuming is growth from zero.
	pub := m.outAt
	m.out = nil
	if !a.Ready {
		return m.ceiling
	}
	if now.After(m.fenceAt) || !a.Live {
		m.set(now, 0, 0) // stopped (or never started): the grant is growth from nothing
	}
	m.fenceAt = pub.Add(m.cfg.Fence)
	m.sink.SetFence(m.fenceAt)
	// Shrink to the grant at once; grow into it at once as far as the others' records show
	// room nobody can be using, the rest one window later.
	m.set(now, a.Grant, a.Now)
	return m.ceiling
}

// Tick is called every so often (at least every Interval) with the member's demand in calls
// per window, the calls it made in the last window, and when (Record.Ages, taken at now; nil:
// not known). It returns a record to publish (nil: none now) and the ceiling to use.
func (m *Member) Tick(now time.Time, demand, used int, ages []int) (*Record, int) {
	if m.left {
		return nil, 0 // a member that left publishes only through Leave
	}
	m.demand = min(max(demand, 0), m.cfg.Budget)
	m.used = max(used, 0)
	m.ages = ages
	if now.After(m.fenceAt) {
		// Our entry may expire in the others' ledgers soon: stop before it can.
		m.set(now, 0, 0)
	}
	if !m.ledger.Ready() {
		// Until the horizon our view may miss live entries: no grant, only records that
		// let the others see us (wanting nothing, so they grant nothing).
		return m.publish(now, 0, false)
	}
	want := m.ledger.Target(m.cfg.Member, m.demand)
	if want < m.ceiling {
		m.set(now, want, 0) // shrink before telling: the record then never overstates our use
	}
	return m.publish(now, want, true)
}

func (m *Member) publish(now time.Time, want int, ready bool) (*Record, int) {
	due := now.Sub(m.lastPub) >= m.cfg.Interval
	if m.out != nil && now.Sub(m.outAt) < m.cfg.Resend {
		due = false // one record in flight, so the next carries its grant as Held
	}
	if !due {
		return nil, m.ceiling
	}
	if !ready {
		want = 0
	}
	m.seq++
	r := Record{Member: m.cfg.Member, Seq: m.seq, TS: now.UnixNano(), Held: m.ceiling, Want: want, Demand: m.demand,
		Used: m.used, Peak: m.peak(now), Ages: m.ages}
	m.succeed(&r, now, ready)
	m.out, m.outAt, m.lastPub = &r, now, now
	return &r, m.ceiling
}

// Leave returns the record a member publishes when it stops: nothing held, nothing wanted, and
// the calls it made in the last window and when, as Tick takes them (others may use that room
// once they have left it). The ceiling is 0 from the first call on, for good.
//
// A member lingering after its leave (Config.LeaveLinger) calls Leave again every Interval and
// publishes each record: Used falls as its last calls age out of the window, and each record
// lets the others use that much more at once, as a live member's records do when it shrinks.
// It publishes until a record reports Used 0 (that one included); past LeaveLinger it stops
// anyway, and its entry expires by TTL as a crashed member's does.
func (m *Member) Leave(now time.Time, used int, ages []int) Record {
	m.set(now, 0, 0)
	if m.fenceAt.After(now) {
		m.fenceAt = now
		m.sink.SetFence(now)
	}
	m.left = true
	m.used = max(used, 0)
	m.seq++
	return Record{Member: m.cfg.Member, Seq: m.seq, TS: now.UnixNano(), Used: m.used, Peak: m.peak(now), Ages: ages}
}

// LeaveLinger is how long the member may go on publishing after its leave record (0: not at
// all).
func (m *Member) LeaveLinger() time.Duration { return max(m.cfg.LeaveLinger, 0) }
