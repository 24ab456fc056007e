package consumer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap/zaptest"
)

// connKiller is a transport whose connections can all be cut at once: a process killed.
type connKiller struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (k *connKiller) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err == nil {
		k.mu.Lock()
		k.conns = append(k.conns, c)
		k.mu.Unlock()
	}
	return c, err
}

func (k *connKiller) kill() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range k.conns {
		_ = c.Close()
	}
}

// TestLeaderRebalancesAwayFromVanishedMember is issue 14's seed 9 in small: a member is killed
// while its JoinGroup waits in a rebalance. The coordinator completes the rebalance with it (it
// was waiting), the leader gives it partitions, and it never heartbeats. The embedded broker
// starts no session timer for such a member when its join answer can't be delivered (about
// half the time) and drops the sync deadline once the leader synced, so it keeps the vanished
// member, and its partitions, forever; the live member's heartbeats keep succeeding. The leader
// must notice that those partitions make no progress while records wait, and rejoin: the
// rebalance that follows drops the vanished member and the leader gets every partition.
//
// Without the progress watch this fails either way: the generation never ends (no session
// timer) or it ends only by the coordinator's eviction a session (20 s) later, with another cause.
func TestLeaderRebalancesAwayFromVanishedMember(t *testing.T) {
	ge := newGroupEnv(t, 4)
	var msgs []kafka.Message
	for i := range 40 {
		msgs = append(msgs, kafka.Message{Key: fmt.Appendf(nil, "k%d", i), Value: []byte("x")})
	}
	ge.k.Produce(t, ge.topic, msgs...) // records wait in every partition; nobody commits here

	cfg := Config{Brokers: ge.k.Brokers, Topic: ge.topic, GroupID: ge.group,
		SessionTimeout: 20 * time.Second, RebalanceTimeout: 4 * time.Second, ProgressStall: 2 * time.Second,
		Logger: zaptest.NewLogger(t, zaptest.Level(testLogLevel()))}
	cfg = cfg.withDefaults()
	a := newMember(&cfg, DefaultHeartbeatInterval)
	ctx := context.Background()
	ga := waitGen(t, joined(ctx, a), "a alone")
	if got := parts(ga); !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Fatalf("a alone got %v, want every partition", got)
	}

	// The doomed member: its first join is given a member id, its second waits in the
	// rebalance it started (a's generation ends), and then its process dies.
	gcfg := cfg
	killer := &connKiller{}
	tr := &kafka.Transport{Dial: killer.dial}
	defer tr.CloseIdleConnections() // its connection pool's goroutines end with the test (leakcheck)
	gcfg.Transport = tr
	ghost := newMember(&gcfg, DefaultHeartbeatInterval)
	jreq := func() *kafka.JoinGroupRequest {
		return &kafka.JoinGroupRequest{GroupID: gcfg.GroupID, SessionTimeout: gcfg.SessionTimeout,
			RebalanceTimeout: gcfg.RebalanceTimeout, MemberID: ghost.id, ProtocolType: "consumer", Protocols: ghost.protocols()}
	}
	jr, err := ghost.cl.JoinGroup(ctx, jreq())
	if err != nil {
		t.Fatalf("ghost's first join: %v", err)
	}
	if !errors.Is(jr.Error, kafka.MemberIDRequired) || jr.MemberID == "" {
		t.Fatalf("ghost's first join: error %v member %q, want MEMBER_ID_REQUIRED with an id", jr.Error, jr.MemberID)
	}
	ghost.id = jr.MemberID
	parked := make(chan error, 1)
	go func() {
		_, err := ghost.cl.JoinGroup(ctx, jreq())
		parked <- err
	}()
	waitEnded(t, ga, "a's generation after the ghost joined")
	ga.stop()
	killer.kill()
	if err := <-parked; err == nil {
		t.Fatal("the ghost's parked join returned an answer before it was killed")
	}
	time.Sleep(100 * time.Millisecond) // let the broker see the connection close

	ga2 := waitGen(t, joined(ctx, a), "a with the ghost")
	if got := parts(ga2); len(got) == 4 {
		t.Fatalf("a got %v: the ghost was not in the generation, the test proves nothing", got)
	}
	t.Logf("generation %d: a owns %v, the vanished member %s the rest", ga2.gen.ID, parts(ga2), ghost.id)
	select {
	case <-ga2.ctx.Done():
	case <-time.After(60 * time.Second):
		t.Fatal("the leader's generation never ended: the vanished member's partitions stay unconsumed")
	}
	if cause := context.Cause(ga2.ctx); !errors.Is(cause, errStalled) {
		t.Fatalf("a's generation ended with %v, want the progress watch's %v", cause, errStalled)
	}
	ga2.stop()
	ga3 := waitGen(t, joined(ctx, a), "a after the forced rebalance")
	defer ga3.stop()
	if got := parts(ga3); !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Fatalf("after the forced rebalance a got %v, want every partition", got)
	}
}

// TestStallWatch: a partition counts as stalled once records wait and neither its committed
// offset nor its metadata changed for the limit; any change, or nothing waiting, resets it.
func TestStallWatch(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	type obs struct {
		at float64
		p  int
		s  partProgress
	}
	waiting := partProgress{committed: 10, meta: "m", end: 20}
	for _, tc := range []struct {
		name string
		obs  []obs
		now  float64
		want []int
	}{
		{"unchanged for the limit", []obs{{0, 1, waiting}, {5, 1, waiting}, {10, 1, waiting}}, 10, []int{1}},
		{"unchanged under the limit", []obs{{0, 1, waiting}, {9, 1, waiting}}, 9.9, nil},
		{"offset moved", []obs{{0, 1, waiting}, {8, 1, partProgress{committed: 11, meta: "m", end: 20}}}, 12, nil},
		{"metadata moved", []obs{{0, 1, waiting}, {8, 1, partProgress{committed: 10, meta: "n", end: 20}}}, 12, nil},
		{"end moved but not the commit", []obs{{0, 1, waiting}, {8, 1, partProgress{committed: 10, meta: "m", end: 30}}}, 10, []int{1}},
		{"caught up", []obs{{0, 1, waiting}, {8, 1, partProgress{committed: 20, meta: "m", end: 20}}}, 12, nil},
		{"records arrive behind an idle commit", []obs{{0, 1, partProgress{committed: 20, end: 20}}, {5, 1, partProgress{committed: 20, end: 25}}}, 14, nil},
		{"records arrive behind an idle commit, then the limit", []obs{{0, 1, partProgress{committed: 20, end: 20}}, {5, 1, partProgress{committed: 20, end: 25}}}, 15, []int{1}},
		{"nothing committed, log empty from its start", []obs{{0, 2, partProgress{committed: -1, start: 7, end: 7}}}, 30, nil},
		{"nothing committed, records waiting", []obs{{0, 2, partProgress{committed: -1, start: 7, end: 9}}}, 10, []int{2}},
		{"two partitions, one stalled", []obs{{0, 1, waiting}, {0, 3, waiting}, {6, 3, partProgress{committed: 12, meta: "m", end: 20}}}, 10, []int{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newStallWatch(10 * time.Second)
			for _, o := range tc.obs {
				w.observe(at(o.at), o.p, o.s)
			}
			if got := w.stalled(at(tc.now)); !slices.Equal(got, tc.want) {
				t.Fatalf("stalled = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestAssignmentGaps: the leader's coverage check names unowned partitions (also those given to
// an id outside the generation) and partitions given twice.
func TestAssignmentGaps(t *testing.T) {
	const topic = "t"
	parts := []int{0, 1, 2, 3}
	for _, tc := range []struct {
		name          string
		members       []string
		out           kafka.GroupMemberAssignments
		unowned, twin []int
	}{
		{"covered", []string{"a", "b"}, kafka.GroupMemberAssignments{"a": {topic: {0, 1}}, "b": {topic: {2, 3}}}, nil, nil},
		{"one left out", []string{"a", "b"}, kafka.GroupMemberAssignments{"a": {topic: {0, 1}}, "b": {topic: {2}}}, []int{3}, nil},
		{"given to a stranger", []string{"a"}, kafka.GroupMemberAssignments{"a": {topic: {0, 1, 2}}, "x": {topic: {3}}}, []int{3}, nil},
		{"given twice", []string{"a", "b"}, kafka.GroupMemberAssignments{"a": {topic: {0, 1, 2}}, "b": {topic: {2, 3}}}, nil, []int{2}},
		{"other topic ignored", []string{"a"}, kafka.GroupMemberAssignments{"a": {topic: {0, 1, 2, 3}, "u": {0}}}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			unowned, twice := assignmentGaps(topic, parts, tc.members, tc.out)
			if !slices.Equal(unowned, tc.unowned) || !slices.Equal(twice, tc.twin) {
				t.Fatalf("gaps = %v, twice = %v; want %v, %v", unowned, twice, tc.unowned, tc.twin)
			}
		})
	}
}

// TestDropPartitionBreak: the test-only break takes exactly the highest partition away, and the
// coverage check sees it.
func TestDropPartitionBreak(t *testing.T) {
	a := stickyBalancer{}.AssignGroups([]kafka.GroupMember{{ID: "a", Topics: []string{"t"}}, {ID: "b", Topics: []string{"t"}}},
		[]kafka.Partition{{Topic: "t", ID: 0}, {Topic: "t", ID: 1}, {Topic: "t", ID: 2}, {Topic: "t", ID: 3}})
	dropLastPartition(a, "t")
	unowned, twice := assignmentGaps("t", []int{0, 1, 2, 3}, []string{"a", "b"}, a)
	if !slices.Equal(unowned, []int{3}) || twice != nil {
		t.Fatalf("after the break: unowned %v twice %v, want [3] and none", unowned, twice)
	}
}
