package consumer

import (
	"context"
	"errors"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap/zaptest"

	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
)

// groupEnv is a topic and group on a cluster, for member-level tests.
type groupEnv struct {
	t     *testing.T
	k     *kafkatest.Cluster
	topic string
	group string
}

func newGroupEnv(t *testing.T, parts int) *groupEnv {
	e := newEnv(t, parts) // the embedded cluster, or the real broker under CHATGROUPD_TEST_BROKERS
	return &groupEnv{t: t, k: e.k, topic: e.topic, group: e.group}
}

func (g *groupEnv) member(instance string) *member {
	cfg := Config{Brokers: g.k.Brokers, Topic: g.topic, GroupID: g.group, InstanceID: instance,
		SessionTimeout: 6 * time.Second, RebalanceTimeout: 4 * time.Second,
		Logger: zaptest.NewLogger(g.t, zaptest.Level(testLogLevel()))}
	cfg = cfg.withDefaults()
	return newMember(&cfg, DefaultHeartbeatInterval)
}

// joined joins in the background; the result arrives on the channel.
func joined(ctx context.Context, m *member) <-chan *groupGen {
	ch := make(chan *groupGen, 1)
	go func() {
		g, err := m.join(ctx)
		if err != nil {
			g = nil
		}
		ch <- g
	}()
	return ch
}

func parts(g *groupGen) []int {
	var out []int
	for _, pas := range g.gen.Assignments {
		for _, pa := range pas {
			out = append(out, pa.ID)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func waitGen(t *testing.T, ch <-chan *groupGen, what string) *groupGen {
	t.Helper()
	select {
	case g := <-ch:
		if g == nil {
			t.Fatalf("%s: join failed", what)
		}
		return g
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no generation within 30s", what)
	}
	return nil
}

func waitEnded(t *testing.T, g *groupGen, what string) time.Time {
	t.Helper()
	select {
	case <-g.ctx.Done():
		return time.Now()
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: the generation did not end within 30s", what)
	}
	return time.Time{}
}

// beats counts accepted heartbeats of g.
func beats(g *groupGen) *atomic.Int64 {
	var n atomic.Int64
	g.setRenew(func(time.Time) { n.Add(1) })
	return &n
}

// TestGroupJoinRebalanceLeave: a member alone gets every partition; a second joining ends the
// first one's generation (its heartbeat hears of the rebalance), the first keeps half of what
// it owned and the newcomer gets the rest; the newcomer leaving ends the first one's generation
// again and it gets everything back. The times from a join or leave to the other member's
// generation ending are logged (heartbeat 500 ms).
func TestGroupJoinRebalanceLeave(t *testing.T) {
	for _, static := range []bool{false, true} {
		t.Run(map[bool]string{false: "dynamic", true: "static"}[static], func(t *testing.T) {
			ge := newGroupEnv(t, 4)
			id := func(s string) string {
				if static {
					return s
				}
				return ""
			}
			ctx := context.Background()
			a := ge.member(id("a"))
			ga := waitGen(t, joined(ctx, a), "a alone")
			if got := parts(ga); !slices.Equal(got, []int{0, 1, 2, 3}) {
				t.Fatalf("a alone got %v, want every partition", got)
			}

			b := ge.member(id("b"))
			joinStart := time.Now()
			bch := joined(ctx, b)
			ended := waitEnded(t, ga, "a after b joined")
			t.Logf("b joined: a's generation ended %v after b began to join", ended.Sub(joinStart).Round(time.Millisecond))
			if cause := context.Cause(ga.ctx); !errors.Is(cause, errRejoin) {
				t.Fatalf("a's generation ended with %v, want a rebalance", cause)
			}
			ga.stop()
			ga2 := waitGen(t, joined(ctx, a), "a rejoining")
			gb := waitGen(t, bch, "b")
			t.Logf("b joined: both in the new generation %v after b began to join", time.Since(joinStart).Round(time.Millisecond))
			if ga2.gen.ID != gb.gen.ID || ga2.gen.ID <= ga.gen.ID {
				t.Fatalf("generations: a %d then %d, b %d", ga.gen.ID, ga2.gen.ID, gb.gen.ID)
			}
			pa, pb := parts(ga2), parts(gb)
			if !slices.Equal(pa, []int{0, 1}) || !slices.Equal(pb, []int{2, 3}) {
				t.Fatalf("after b joined: a %v, b %v; want a keeping 0,1 and b getting 2,3", pa, pb)
			}

			gb.stop()
			leaveStart := time.Now()
			if err := b.leave(ctx); err != nil {
				t.Fatal(err)
			}
			ended = waitEnded(t, ga2, "a after b left")
			t.Logf("b left: a's generation ended %v after the leave", ended.Sub(leaveStart).Round(time.Millisecond))
			ga2.stop()
			ga3 := waitGen(t, joined(ctx, a), "a after b left")
			defer ga3.stop()
			t.Logf("b left: a in its new generation %v after the leave", time.Since(leaveStart).Round(time.Millisecond))
			if got := parts(ga3); !slices.Equal(got, []int{0, 1, 2, 3}) {
				t.Fatalf("after b left a got %v, want every partition", got)
			}
		})
	}
}

// TestStaticRestartWithoutRebalance: a member dies without leaving (its heartbeats just stop); a
// new process with the same instance id joins before the session times out and gets the dead
// one's partitions back, and the other member's generation goes on (it keeps heartbeating,
// accepted, after the restart). The dead process, if it came back (a paused process), is fenced.
//
// "follower": b, which joined once, owning nothing, dies; "leader": a, which rejoined owning
// every partition, dies. Kafka skips the rebalance of a static rejoin either way; the embedded
// broker only when the metadata is byte-identical to the member's last join, so the leader case
// runs on the real broker only (CHATGROUPD_TEST_BROKERS, scripts/test-kafka.sh).
func TestStaticRestartWithoutRebalance(t *testing.T) {
	for _, victim := range []string{"follower", "leader"} {
		t.Run(victim, func(t *testing.T) {
			if victim == "leader" && os.Getenv(kafkatest.EnvBrokers) == "" {
				t.Skip("the embedded broker rebalances a static rejoin whose metadata changed; real broker only")
			}
			testStaticRestart(t, victim == "leader")
		})
	}
}

func testStaticRestart(t *testing.T, killLeader bool) {
	ge := newGroupEnv(t, 4)
	ctx := context.Background()
	a := ge.member("a")
	ga := waitGen(t, joined(ctx, a), "a alone")
	b := ge.member("b")
	bch := joined(ctx, b)
	waitEnded(t, ga, "a after b joined")
	ga.stop()
	ga = waitGen(t, joined(ctx, a), "a rejoining")
	gb := waitGen(t, bch, "b")
	// dead is the member killed; gLive is the other one's generation.
	dead, gDead, gLive, inst := b, gb, ga, "b"
	if killLeader {
		dead, gDead, gLive, inst = a, ga, gb, "a"
	}
	defer gLive.stop()
	before := parts(gDead)
	liveBeats := beats(gLive)

	// The member crashes: no leave, no more heartbeats.
	gDead.stop()
	crash := time.Now()
	m2 := ge.member(inst)
	g2 := waitGen(t, joined(ctx, m2), inst+" restarted")
	defer g2.stop()
	t.Logf("%s restarted: back in the group with its partitions %v after the crash", inst, time.Since(crash).Round(time.Millisecond))
	if got := parts(g2); !slices.Equal(got, before) {
		t.Fatalf("%s restarted got %v, had %v", inst, got, before)
	}
	if g2.gen.ID != gDead.gen.ID {
		t.Fatalf("%s restarted in generation %d, was %d: the group rebalanced", inst, g2.gen.ID, gDead.gen.ID)
	}
	// The other member's generation must survive: three of its heartbeats accepted after the restart.
	n := liveBeats.Load()
	testwait.For(t, 10*time.Second, "the other member's heartbeats after the restart", func() bool {
		return liveBeats.Load() >= n+3 || gLive.ctx.Err() != nil
	})
	if err := context.Cause(gLive.ctx); err != nil {
		t.Fatalf("the other member's generation ended after the static restart: %v", err)
	}

	// The old process wakes up and heartbeats as if nothing happened: it is fenced.
	zombie := &groupGen{gen: gDead.gen}
	zombie.ctx, zombie.cancel = context.WithCancelCause(ctx)
	zombie.beats.Go(func() { dead.heartbeat(zombie) })
	waitEnded(t, zombie, "the zombie")
	zombie.stop()
	if cause := context.Cause(zombie.ctx); !errors.Is(cause, ErrFenced) {
		t.Fatalf("the zombie's generation ended with %v, want ErrFenced", cause)
	}
	// So is its rejoin with its old member id.
	jctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if g, err := dead.join(jctx); !errors.Is(err, ErrFenced) {
		if g != nil {
			g.stop()
		}
		t.Fatalf("the old process rejoining: %v, want ErrFenced", err)
	}
	if err := context.Cause(g2.ctx); err != nil {
		t.Fatalf("the restarted member's generation ended: %v", err)
	}
}

// TestJoinRetriesGroupErrors injects the coordinator's refusals (embedded broker): a JoinGroup
// answered NOT_COORDINATOR is retried after a backoff, a SyncGroup answered REBALANCE_IN_PROGRESS
// rejoins at once; the member still gets every partition. A heartbeat answered
// UNKNOWN_MEMBER_ID ends the generation and makes the member forget its id, and it joins again
// as a new member.
func TestJoinRetriesGroupErrors(t *testing.T) {
	ge := newGroupEnv(t, 2)
	f := ge.k.Fake
	if f == nil {
		t.Skip("injects coordinator errors: embedded broker only")
	}
	var joins, syncs atomic.Int32
	f.ControlKey(int16(kmsg.JoinGroup), func(r kmsg.Request) (kmsg.Response, error, bool) {
		joins.Add(1)
		resp := r.ResponseKind().(*kmsg.JoinGroupResponse)
		resp.ErrorCode = kerr.NotCoordinator.Code
		return resp, nil, true
	})
	f.ControlKey(int16(kmsg.SyncGroup), func(r kmsg.Request) (kmsg.Response, error, bool) {
		syncs.Add(1)
		resp := r.ResponseKind().(*kmsg.SyncGroupResponse)
		resp.ErrorCode = kerr.RebalanceInProgress.Code
		return resp, nil, true
	})
	ctx := context.Background()
	m := ge.member("")
	g := waitGen(t, joined(ctx, m), "join after refusals")
	if joins.Load() != 1 || syncs.Load() != 1 {
		t.Fatalf("refusals injected: %d joins, %d syncs; want one each", joins.Load(), syncs.Load())
	}
	if got := parts(g); !slices.Equal(got, []int{0, 1}) {
		t.Fatalf("got %v, want every partition", got)
	}
	first := g.gen.MemberID
	f.ControlKey(int16(kmsg.Heartbeat), func(r kmsg.Request) (kmsg.Response, error, bool) {
		resp := r.ResponseKind().(*kmsg.HeartbeatResponse)
		resp.ErrorCode = kerr.UnknownMemberID.Code
		return resp, nil, true
	})
	waitEnded(t, g, "after UNKNOWN_MEMBER_ID")
	g.stop()
	if cause := context.Cause(g.ctx); !errors.Is(cause, kafka.UnknownMemberId) {
		t.Fatalf("generation ended with %v, want UNKNOWN_MEMBER_ID", cause)
	}
	if m.id != "" {
		t.Fatalf("member id %q kept after UNKNOWN_MEMBER_ID", m.id)
	}
	g2 := waitGen(t, joined(ctx, m), "rejoin as a new member")
	defer g2.stop()
	if g2.gen.MemberID == first || !slices.Equal(parts(g2), []int{0, 1}) {
		t.Fatalf("rejoined as %q (was %q) with %v", g2.gen.MemberID, first, parts(g2))
	}
}
