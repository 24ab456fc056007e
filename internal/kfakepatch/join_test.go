package kfakepatch_test

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/chatgroupd/chatgroupd/internal/kfakepatch"
)

// envUnpatched set runs TestJoinBarrier on the unpatched broker, to see it fail.
const envUnpatched = "KFAKEPATCH_RUN_UNPATCHED"

// The group's timeouts: a rebalance deadline long enough that a join answered before half of it
// was answered by the barrier (every member joined), not by the deadline; sessions longer still,
// so kfake's session timer (which keeps running while a member is parked) evicts no one.
const (
	rebalanceTimeout = 30 * time.Second
	sessionTimeout   = 60 * time.Second
	answerWithin     = rebalanceTimeout / 2
)

// TestJoinBarrier: generation 2 has a leader and a follower whose SyncGroup is parked (the leader
// has not synced). Then the follower leaves, or re-joins with new metadata; either way every
// member of the group is then in JoinGroup, and the rebalance must complete at once, as on Kafka.
// kfake unpatched miscounts the parked SyncGroup (removed: one too few joined; re-joined: not
// counted), so the joins wait for the rebalance deadline, which every later join restarts.
func TestJoinBarrier(t *testing.T) {
	if _, err := kfakepatch.Patched(); err != nil && os.Getenv(envUnpatched) == "" {
		t.Skipf("needs the patched kfake (%v): run `make test`, or go test -modfile \"$(go run ./internal/kfakepatch/cmd/kfakemodfile)\"; "+
			"%s=1 runs it on the unpatched broker, where it fails", err, envUnpatched)
	}
	for _, tc := range []struct {
		name string
		// then acts for the follower, whose SyncGroup is parked, and returns the joins of the
		// group's remaining members to wait for besides the leader's.
		then func(t *testing.T, g *group, follower string) []<-chan joinResult
	}{
		{"follower leaves", func(t *testing.T, g *group, follower string) []<-chan joinResult {
			ctx, cancel := context.WithTimeout(context.Background(), answerWithin)
			defer cancel()
			resp, err := g.client().LeaveGroup(ctx, &kafka.LeaveGroupRequest{GroupID: g.id,
				Members: []kafka.LeaveGroupRequestMember{{ID: follower}}})
			if err == nil {
				err = resp.Error
			}
			if err != nil {
				t.Fatalf("leave: %v", err)
			}
			return nil
		}},
		{"follower re-joins with new metadata", func(t *testing.T, g *group, follower string) []<-chan joinResult {
			seen := g.seen(kmsg.JoinGroup)
			j := g.join(follower, "t", "u")
			seen()
			return []<-chan joinResult{j}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGroup(t)
			a := g.newMember()
			if gen, err := g.joinNow(a); err != nil {
				t.Fatalf("first join: %v", err)
			} else if err := g.sync(a, gen.GenerationID, []kafka.SyncGroupRequestAssignment{{MemberID: a}}); err != nil {
				t.Fatalf("first sync: %v", err)
			}
			b := g.newMember()
			seen := g.seen(kmsg.JoinGroup)
			bj := g.join(b, "t") // parks until a re-joins
			seen()
			aj := g.join(a, "t")
			ra, rb := wait(t, aj), wait(t, bj)
			leader, follower := a, b
			if ra.LeaderID == b {
				leader, follower = b, a
			}
			if ra.GenerationID != rb.GenerationID {
				t.Fatalf("generations %d and %d", ra.GenerationID, rb.GenerationID)
			}
			g.parkSync(follower, ra.GenerationID)
			others := tc.then(t, g, follower)
			lj := g.join(leader, "t")
			for _, j := range append(others, lj) {
				r := wait(t, j)
				if r.GenerationID != ra.GenerationID+1 {
					t.Errorf("join answered in generation %d, want %d", r.GenerationID, ra.GenerationID+1)
				}
			}
		})
	}
}

type joinResult struct {
	*kafka.JoinGroupResponse
	err error
}

// wait returns the join's answer, failing the test if the rebalance waited for its deadline.
func wait(t *testing.T, j <-chan joinResult) joinResult {
	t.Helper()
	r := <-j
	var ne net.Error
	if errors.Is(r.err, context.DeadlineExceeded) || errors.As(r.err, &ne) && ne.Timeout() {
		t.Fatalf("JoinGroup not answered within %v (rebalance timeout %v) although every member had joined: "+
			"the broker miscounts members parked in SyncGroup (kfake unpatched? see internal/kfakepatch)", answerWithin, rebalanceTimeout)
	}
	if r.err != nil {
		t.Fatalf("join: %v", r.err)
	}
	return r
}

// group is one consumer group on its own embedded broker. Each request gets a client of its own:
// the broker answers a connection's requests in order, so a parked one would hold up the next.
type group struct {
	t    *testing.T
	id   string
	c    *kfake.Cluster
	addr []string
	wg   sync.WaitGroup
	stop context.CancelFunc
	ctx  context.Context
}

func newGroup(t *testing.T) *group {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t", "u"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	g := &group{t: t, id: "g", c: c, addr: c.ListenAddrs(), ctx: ctx, stop: stop}
	t.Cleanup(func() {
		g.stop()
		c.Close()
		g.wg.Wait()
	})
	return g
}

func (g *group) client() *kafka.Client {
	tr := &kafka.Transport{}
	g.t.Cleanup(tr.CloseIdleConnections)
	return &kafka.Client{Addr: kafka.TCP(g.addr...), Transport: tr}
}

func (g *group) request(id string, topics ...string) *kafka.JoinGroupRequest {
	return &kafka.JoinGroupRequest{GroupID: g.id, MemberID: id, SessionTimeout: sessionTimeout, RebalanceTimeout: rebalanceTimeout,
		ProtocolType: "consumer", Protocols: []kafka.GroupProtocol{{Name: "range", Metadata: kafka.GroupProtocolSubscription{Topics: topics}}}}
}

// newMember returns a member id from the broker's MEMBER_ID_REQUIRED answer.
func (g *group) newMember() string {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(g.ctx, answerWithin)
	defer cancel()
	r, err := g.client().JoinGroup(ctx, g.request("", "t"))
	if r == nil || r.MemberID == "" {
		g.t.Fatalf("no member id: %v", err)
	}
	return r.MemberID
}

// join sends a JoinGroup for id on its own client and answers on the channel.
func (g *group) join(id string, topics ...string) <-chan joinResult {
	ch := make(chan joinResult, 1)
	cl := g.client()
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		ctx, cancel := context.WithTimeout(g.ctx, answerWithin)
		defer cancel()
		r, err := cl.JoinGroup(ctx, g.request(id, topics...))
		if err == nil {
			err = r.Error
		}
		ch <- joinResult{r, err}
	}()
	return ch
}

func (g *group) joinNow(id string) (*kafka.JoinGroupResponse, error) {
	r := <-g.join(id, "t")
	return r.JoinGroupResponse, r.err
}

func (g *group) sync(id string, gen int, as []kafka.SyncGroupRequestAssignment) error {
	ctx, cancel := context.WithTimeout(g.ctx, answerWithin)
	defer cancel()
	r, err := g.client().SyncGroup(ctx, &kafka.SyncGroupRequest{GroupID: g.id, GenerationID: gen, MemberID: id,
		ProtocolType: "consumer", ProtocolName: "range", Assignments: as})
	if err == nil {
		err = r.Error
	}
	return err
}

// parkSync sends the follower's SyncGroup, which the broker parks until the leader syncs (never,
// here), and returns once the broker holds it.
func (g *group) parkSync(id string, gen int) {
	seen := g.seen(kmsg.SyncGroup)
	cl := g.client()
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		_, _ = cl.SyncGroup(g.ctx, &kafka.SyncGroupRequest{GroupID: g.id, GenerationID: gen, MemberID: id,
			ProtocolType: "consumer", ProtocolName: "range"})
	}()
	seen()
}

// seen returns a function that waits until the broker has taken the next request of key: it
// handles that request on its loop right after the control function that saw it, before it takes
// another request, so a request sent after seen returns is handled after it.
func (g *group) seen(key kmsg.Key) func() {
	ch := make(chan struct{})
	g.c.ControlKey(int16(key), func(kmsg.Request) (kmsg.Response, error, bool) {
		g.c.DropControl()
		close(ch)
		return nil, nil, false
	})
	return func() {
		g.t.Helper()
		select {
		case <-ch:
		case <-time.After(answerWithin):
			g.t.Fatalf("the broker never saw the %v request", key)
		}
	}
}
