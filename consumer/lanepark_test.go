package consumer

import (
	"context"
	"fmt"
	"hash/maphash"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// laneMsg is a lane record of acct's event seq at lane offset off; seq ≤ 0 makes an unpark
// marker declaring acct's records through lane offset -seq-1 ended (0: through off-1).
func laneMsg(off int64, acct string, seq int64) kafka.Message {
	if seq <= 0 {
		through := -seq - 1
		if seq == 0 {
			through = off - 1
		}
		return kafka.Message{Offset: off, Key: []byte(acct), Headers: []kafka.Header{{Key: laneHdrUnpark, Value: []byte(strconv.FormatInt(through, 10))}}}
	}
	m := evMsg(fmt.Sprintf("%s-%d", acct, seq), acct, seq)
	m.Offset = off
	m.Headers = []kafka.Header{{Key: laneHdrSrcOffset, Value: []byte(strconv.FormatInt(100+off, 10))}}
	return m
}

func laneTestEngine(t *testing.T) (*engine, *part) {
	cfg := Config{Topic: "ev", RetryLane: true}.withDefaults()
	c := &Consumer{cfg: cfg, hash: hasher{seed: maphash.MakeSeed()}}
	e := newEngine(c, context.Background())
	t.Cleanup(e.endClaim)
	p := &part{id: 0, lane: &lanePart{accts: map[string]*laneAcct{}, unended: map[int64]*laneRec{}}}
	e.parts[0] = p
	return e, p
}

// TestLaneLoadDecidesParked: what a new owner concludes from the lane between its committed
// position and its end — which accounts are parked, with which events in which order, and
// where the lane's position may be committed.
func TestLaneLoadDecidesParked(t *testing.T) {
	type rec struct {
		acct string
		seq  int64 // 0: unpark marker
	}
	for _, tc := range []struct {
		name   string
		lane   []rec
		parked map[string][]int64
		commit int64
	}{
		{"nothing", nil, map[string][]int64{}, 0},
		{"two parked accounts", []rec{{"a", 1}, {"a", 2}, {"b", 7}}, map[string][]int64{"a": {1, 2}, "b": {7}}, 0},
		{"unparked after its records ended", []rec{{"a", 1}, {"a", 2}, {"a", 0}, {"b", 1}}, map[string][]int64{"b": {1}}, 3},
		{"parked again after an unpark", []rec{{"a", 1}, {"a", 0}, {"a", 2}}, map[string][]int64{"a": {2}}, 2},
		{"re-forwarded after a crash: the copies end at once", []rec{{"a", 1}, {"a", 2}, {"a", 1}, {"a", 2}, {"a", 3}},
			map[string][]int64{"a": {1, 2, 3}}, 0},
		{"marker alone", []rec{{"x", 0}}, map[string][]int64{}, 1},
		// A record a fenced former owner wrote between our last ended one (offset 0) and our
		// marker is not taken as ended.
		{"a record slipped in before the marker", []rec{{"a", 1}, {"a", 2}, {"a", -1}}, map[string][]int64{"a": {2}}, 1},
		{"the marker names the last ended", []rec{{"a", 1}, {"b", 1}, {"a", 2}, {"a", -2}}, map[string][]int64{"a": {2}, "b": {1}}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, p := laneTestEngine(t)
			e.mu.Lock()
			defer e.mu.Unlock()
			for i, r := range tc.lane {
				e.laneIngest(p, laneMsg(int64(i), r.acct, r.seq))
			}
			p.lane.readPos = int64(len(tc.lane))
			p.lane.loaded, p.lane.commitOK = true, true
			got := map[string][]int64{}
			for name, la := range p.lane.accts {
				for _, r := range la.q {
					got[name] = append(got[name], r.ev.Seq)
				}
			}
			if len(got) != len(tc.parked) {
				t.Fatalf("parked %v, want %v", got, tc.parked)
			}
			for name, seqs := range tc.parked {
				if !slices.Equal(got[name], seqs) {
					t.Fatalf("parked %v, want %v", got, tc.parked)
				}
			}
			cs := e.laneCommits()
			if len(cs) != 1 || cs[0].Offset != tc.commit {
				t.Fatalf("lane commit %+v, want offset %d", cs, tc.commit)
			}
		})
	}
}

// TestLaneUnparkDecision: an account is unparked only when nothing of it is left in the lane or
// on its way there (being forwarded, or written by us and not yet read back).
func TestLaneUnparkDecision(t *testing.T) {
	for _, tc := range []struct {
		name string
		la   laneAcct
		read int64
		want bool
	}{
		{"drained", laneAcct{lastProd: 4}, 5, true},
		{"events left", laneAcct{q: []*laneRec{{}}, lastProd: 4}, 5, false},
		{"events left in the lane, none in memory", laneAcct{left: true, skipFrom: 3, lastProd: 4}, 5, false},
		{"a forward under way", laneAcct{forwarding: 1, lastProd: 4}, 5, false},
		{"written, not read back yet", laneAcct{lastProd: 5}, 5, false},
		{"marker being written", laneAcct{lastProd: -1, unparking: true}, 5, false},
		{"parked by a previous owner", laneAcct{lastProd: -1}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &part{lane: &lanePart{readPos: tc.read}}
			e := &engine{}
			if got := e.laneCanUnpark(p, &tc.la); got != tc.want {
				t.Errorf("can unpark = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestLaneStallLimitOnlyWithLane: the dispatcher is asked to stall only with the lane on;
// without it an event keeps retrying until its budget is spent, as before.
func TestLaneStallLimitOnlyWithLane(t *testing.T) {
	for _, on := range []bool{false, true} {
		cfg := Config{Topic: "ev", RetryLane: on, AccountStallLimit: 3 * time.Second}.withDefaults()
		e := &engine{cfg: &cfg}
		want := time.Duration(0)
		if on {
			want = 3 * time.Second
		}
		if got := e.stallLimit(); got != want {
			t.Errorf("lane %v: stall limit %v, want %v", on, got, want)
		}
	}
	if got := (Config{}).withDefaults().AccountStallLimit; got != DefaultAccountStallLimit {
		t.Errorf("default stall limit %v", got)
	}
	if err := (Config{Brokers: []string{"x"}, Topic: "t", GroupID: "g", Dispatcher: newFakeDispatcher(t), DeadLetterer: &fakeDL{},
		RetryLane: true, LaneTopic: "t"}).Validate(); err == nil {
		t.Error("a lane topic equal to the event topic was accepted")
	}
	if err := (Config{Brokers: []string{"x"}, Topic: "t", GroupID: "g", Dispatcher: newFakeDispatcher(t), DeadLetterer: &fakeDL{},
		AccountStallLimit: -time.Second}).Validate(); err == nil {
		t.Error("a negative stall limit was accepted")
	}
}

// TestLaneKeepsKeyMismatchVerdict: a record the main path would dead-letter for its key
// (--key-mismatch=dead-letter) is dead-lettered from the lane too, not dispatched; in count
// mode it is dispatched as on the main path.
func TestLaneKeepsKeyMismatchVerdict(t *testing.T) {
	for _, mode := range []string{KeyMismatchCount, KeyMismatchDeadLetter} {
		e, p := laneTestEngine(t)
		e.cfg.KeyMismatch = mode
		m := laneMsg(0, "a", 1)
		m.Headers = append(m.Headers, kafka.Header{Key: laneHdrSrcKey, Value: []byte("not-a")})
		e.mu.Lock()
		e.laneIngest(p, m)
		r := p.lane.accts["a"].q[0]
		e.mu.Unlock()
		if invalid := r.ev == nil; invalid != (mode == KeyMismatchDeadLetter) {
			t.Errorf("mode %s: invalid = %v (%v)", mode, invalid, r.verr)
		}
	}
}
