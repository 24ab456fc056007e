package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
)

// ErrFenced is returned by Run when another process joined the group with this member's
// instance id (Config.InstanceID): this one is a zombie of an earlier run, or two replicas
// were given the same id, and it stops rather than fight over the partitions.
var ErrFenced = errors.New("consumer: fenced: another member joined with this instance id")

// member is this process's membership of the consumer group, spoken directly on kafka.Client
// (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) so that it can carry a group.instance.id (static
// membership), send the partitions it owns for the leader's sticky assignment, and heartbeat as
// often as it likes. kafka.ConsumerGroup offers none of the three.
type member struct {
	cfg *Config
	cl  *kafka.Client
	// id is the member id the coordinator gave; empty before the first join and after the
	// coordinator forgot it.
	id string
	// owned is what the last generation assigned: sent with the next join so the leader keeps it.
	owned []int
	// hb is the heartbeat interval.
	hb time.Duration
	// joinBackoff is the first pause after a failed join; it doubles up to 5 s.
	joinBackoff time.Duration
}

// groupGen is one generation of the group as this member sees it.
type groupGen struct {
	// gen carries the generation id, member id and assigned partitions (it is not a generation
	// of a kafka.ConsumerGroup: only those fields are set).
	gen *kafka.Generation
	// ctx ends with the generation: a heartbeat told of a rebalance, the member was evicted or
	// fenced, or the member stopped.
	ctx    context.Context
	cancel context.CancelCauseFunc
	// renew, when set, is called with the send time of every accepted heartbeat: membership
	// confirmed then (the consumer's lease).
	renew atomic.Pointer[func(time.Time)]
	beats sync.WaitGroup
}

// setRenew installs (or with nil removes) the heartbeat hook.
func (g *groupGen) setRenew(f func(time.Time)) {
	if f == nil {
		g.renew.Store(nil)
		return
	}
	g.renew.Store(&f)
}

func newMember(cfg *Config, hb time.Duration) *member {
	return &member{
		cfg: cfg,
		// No client timeout: a JoinGroup legitimately blocks for up to the rebalance timeout.
		// Each call gets its own deadline below.
		cl: &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: cfg.Transport},
		hb: hb, joinBackoff: 250 * time.Millisecond,
	}
}

// errRejoin: the join or sync has to start over at once (rebalance in progress, new member id).
var errRejoin = errors.New("rejoin")

// join joins the group, retrying with backoff until it has a generation, ctx ends, or the member
// is fenced (ErrFenced). The generation's heartbeats run until it ends (see groupGen.ctx); the
// caller must call end when done with it.
func (m *member) join(ctx context.Context) (*groupGen, error) {
	backoff := m.joinBackoff
	for rejoins := 0; ; {
		g, err := m.joinOnce(ctx)
		if err == nil {
			return g, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, ErrFenced) {
			return nil, err
		}
		// A rejoin is normal protocol and goes again at once, but not forever: a coordinator
		// that keeps answering so gets the backoff too.
		if rejoins++; errors.Is(err, errRejoin) && rejoins <= 3 {
			continue
		}
		m.cfg.Logger.Warn("consumer group: join failed, retrying", zap.String("group", m.cfg.GroupID),
			zap.Duration("backoff", backoff), zap.Error(err))
		if !sleepCtx(ctx, backoff) {
			return nil, ctx.Err()
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// groupErr maps a group answer to what join, sync and heartbeat do about it.
func (m *member) groupErr(op string, err error) error {
	switch {
	case errors.Is(err, kafka.FencedInstanceID):
		return fmt.Errorf("%w (%s, instance %q)", ErrFenced, op, m.cfg.InstanceID)
	case errors.Is(err, kafka.MemberIDRequired):
		return fmt.Errorf("%s: %w: member id assigned", op, errRejoin)
	case errors.Is(err, kafka.UnknownMemberId), errors.Is(err, kafka.IllegalGeneration):
		// Evicted, or the coordinator lost its state: join as new (a static member keeps its
		// instance id, so the coordinator still recognises it).
		m.id = ""
		return fmt.Errorf("%s: %w: %w", op, errRejoin, err)
	case errors.Is(err, kafka.RebalanceInProgress):
		return fmt.Errorf("%s: %w: %w", op, errRejoin, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func (m *member) protocols() []kafka.GroupProtocol {
	owned := slices.Clone(m.owned)
	slices.Sort(owned)
	sub := kafka.GroupProtocolSubscription{Topics: []string{m.cfg.Topic}, UserData: encodeOwned(owned)}
	return []kafka.GroupProtocol{
		{Name: stickyProtocol, Metadata: sub},
		{Name: kafka.RangeGroupBalancer{}.ProtocolName(), Metadata: sub},
	}
}

func (m *member) joinOnce(ctx context.Context) (*groupGen, error) {
	cfg := m.cfg
	jr, err := m.sendJoin(ctx)
	if err != nil {
		return nil, err
	}
	var (
		assignments []kafka.SyncGroupRequestAssignment
		owners      map[int]string // the leader's: each partition of the topic → its member
	)
	if jr.LeaderID == jr.MemberID {
		if assignments, owners, err = m.assign(ctx, jr); err != nil {
			return nil, fmt.Errorf("assign: %w", err)
		}
	}
	sctx, cancel2 := context.WithTimeout(ctx, cfg.RebalanceTimeout+cfg.SessionTimeout)
	defer cancel2()
	sr, err := m.cl.SyncGroup(sctx, &kafka.SyncGroupRequest{
		GroupID: cfg.GroupID, GenerationID: jr.GenerationID, MemberID: m.id, GroupInstanceID: cfg.InstanceID,
		ProtocolType: "consumer", ProtocolName: jr.ProtocolName, Assignments: assignments,
	})
	if err == nil {
		err = sr.Error
	}
	if err != nil {
		return nil, m.groupErr("sync", err)
	}
	parts := slices.Clone(sr.Assignment.AssignedPartitions[cfg.Topic])
	slices.Sort(parts)
	m.owned = parts
	pa := make([]kafka.PartitionAssignment, 0, len(parts))
	for _, p := range parts {
		pa = append(pa, kafka.PartitionAssignment{ID: p, Offset: kafka.FirstOffset})
	}
	g := &groupGen{gen: &kafka.Generation{ID: int32(jr.GenerationID), GroupID: cfg.GroupID, MemberID: m.id,
		Assignments: map[string][]kafka.PartitionAssignment{cfg.Topic: pa}}}
	g.ctx, g.cancel = context.WithCancelCause(context.WithoutCancel(ctx))
	cfg.Logger.Debug("consumer group: joined", zap.Int("generation", jr.GenerationID), zap.String("member", m.id),
		zap.String("leader", jr.LeaderID), zap.String("protocol", jr.ProtocolName), zap.Ints("partitions", parts))
	g.beats.Go(func() { m.heartbeat(g) })
	if owners != nil {
		others := map[int]string{}
		for p, id := range owners {
			if id != m.id {
				others[p] = id
			}
		}
		g.beats.Go(func() { m.watchProgress(g, others) })
	}
	return g, nil
}

// sendJoin sends JoinGroup and adopts the member id the coordinator gives.
func (m *member) sendJoin(ctx context.Context) (*kafka.JoinGroupResponse, error) {
	cfg := m.cfg
	jctx, cancel := context.WithTimeout(ctx, cfg.RebalanceTimeout+cfg.SessionTimeout)
	defer cancel()
	jr, err := m.cl.JoinGroup(jctx, &kafka.JoinGroupRequest{
		GroupID: cfg.GroupID, SessionTimeout: cfg.SessionTimeout, RebalanceTimeout: cfg.RebalanceTimeout,
		MemberID: m.id, GroupInstanceID: cfg.InstanceID, ProtocolType: "consumer", Protocols: m.protocols(),
	})
	if err == nil {
		err = jr.Error
		if jr.MemberID != "" && jr.MemberID != m.id {
			m.id = jr.MemberID
			// Logged before the id is used, so whoever reads the logs (the chaos suite) knows
			// every member this process may be in the group as, even if it dies in the join.
			cfg.Logger.Info("consumer group: member id assigned", zap.String("group", cfg.GroupID), zap.String("member", m.id))
		}
	}
	if err != nil {
		return nil, m.groupErr("join", err)
	}
	return jr, nil
}

// assign is the leader's part: the topic's partitions spread over the members by the protocol
// the coordinator chose. It also returns who got each partition. An assignment that leaves a
// partition without an owner or gives it twice is logged and counted (AssignmentGaps): the
// assignors never do, so it is a defect to hear of, not a state to repair here.
func (m *member) assign(ctx context.Context, jr *kafka.JoinGroupResponse) ([]kafka.SyncGroupRequestAssignment, map[int]string, error) {
	cfg := m.cfg
	md, err := m.cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{cfg.Topic}})
	if err != nil {
		return nil, nil, fmt.Errorf("metadata: %w", err)
	}
	var parts []kafka.Partition
	for _, t := range md.Topics {
		if t.Name == cfg.Topic && t.Error == nil {
			parts = t.Partitions
		}
	}
	if len(parts) == 0 {
		return nil, nil, fmt.Errorf("metadata: topic %s missing", cfg.Topic)
	}
	var bal kafka.GroupBalancer = stickyBalancer{}
	if jr.ProtocolName != stickyProtocol {
		bal = kafka.RangeGroupBalancer{}
	}
	members := make([]kafka.GroupMember, 0, len(jr.Members))
	ids := make([]string, 0, len(jr.Members))
	for _, mm := range jr.Members {
		members = append(members, kafka.GroupMember{ID: mm.ID, Topics: mm.Metadata.Topics, UserData: mm.Metadata.UserData})
		ids = append(ids, mm.ID)
	}
	assigned := bal.AssignGroups(members, parts)
	if cfg.TestDropPartition {
		dropLastPartition(assigned, cfg.Topic)
	}
	var topicParts []int
	for _, p := range parts {
		if p.Topic == cfg.Topic {
			topicParts = append(topicParts, p.ID)
		}
	}
	if unowned, twice := assignmentGaps(cfg.Topic, topicParts, ids, assigned); len(unowned)+len(twice) > 0 {
		cfg.Logger.Error("consumer group: the assignment leaves partitions without an owner or gives them twice",
			zap.Int("generation", jr.GenerationID), zap.String("protocol", jr.ProtocolName),
			zap.Ints("unowned", unowned), zap.Ints("twice", twice), zap.Strings("members", ids))
		cfg.Metrics.AssignmentGaps.Add(float64(len(unowned) + len(twice)))
	}
	out := make([]kafka.SyncGroupRequestAssignment, 0, len(members))
	owners := map[int]string{}
	for id, topics := range assigned {
		out = append(out, kafka.SyncGroupRequestAssignment{MemberID: id,
			Assignment: kafka.GroupProtocolAssignment{AssignedPartitions: topics}})
		for _, p := range topics[cfg.Topic] {
			owners[p] = id
		}
	}
	for _, p := range topicParts {
		if _, ok := owners[p]; !ok {
			owners[p] = "" // nobody's: the progress watch looks after it too
		}
	}
	cfg.Logger.Debug("consumer group: assigned as leader", zap.Int("generation", jr.GenerationID),
		zap.String("protocol", jr.ProtocolName), zap.Strings("members", ids), zap.Any("owners", owners))
	return out, owners, nil
}

// dropLastPartition is the TestDropPartition break: the topic's highest assigned partition is
// taken from its member.
func dropLastPartition(a kafka.GroupMemberAssignments, topic string) {
	last, who := -1, ""
	for id, topics := range a {
		for _, p := range topics[topic] {
			if p > last {
				last, who = p, id
			}
		}
	}
	if who != "" {
		a[who][topic] = slices.DeleteFunc(a[who][topic], func(p int) bool { return p == last })
	}
}

// heartbeat runs for the life of g: every m.hb one heartbeat, each accepted one renewing the
// lease. It ends the generation on the coordinator's word (a rebalance, eviction, a newer
// generation, fencing) or once no heartbeat has been accepted for a whole session, by which time
// the coordinator has surely evicted the member. Other failures (coordinator moving, broker
// unreachable) are retried: the lease stops dispatches meanwhile.
func (m *member) heartbeat(g *groupGen) {
	cfg := m.cfg
	last := time.Now()
	timeout := min(cfg.SessionTimeout/2, max(time.Second, 4*m.hb))
	for sleepCtx(g.ctx, m.hb) {
		sent := time.Now()
		hctx, cancel := context.WithTimeout(g.ctx, timeout)
		err := sendHeartbeat(hctx, m.transport(), m.cl.Addr, cfg.GroupID, g.gen.ID, g.gen.MemberID, cfg.InstanceID)
		cancel()
		if err == nil {
			last = sent
			if f := g.renew.Load(); f != nil {
				(*f)(sent)
			}
			continue
		}
		if g.ctx.Err() != nil {
			return
		}
		switch {
		case errors.Is(err, kafka.RebalanceInProgress), errors.Is(err, kafka.UnknownMemberId),
			errors.Is(err, kafka.IllegalGeneration), errors.Is(err, kafka.FencedInstanceID):
			g.cancel(m.groupErr("heartbeat", err))
			return
		}
		if time.Since(last) > cfg.SessionTimeout {
			m.id = "" // surely evicted
			g.cancel(fmt.Errorf("heartbeat: none accepted for a session: %w", err))
			return
		}
		cfg.Logger.Debug("heartbeat failed", zap.Int32("generation", g.gen.ID), zap.Error(err))
	}
}

// transport is the round tripper of the member's client.
func (m *member) transport() kafka.RoundTripper {
	if m.cl.Transport != nil {
		return m.cl.Transport
	}
	return kafka.DefaultTransport
}

// stop ends g's heartbeats (if the generation is still on) and waits for them.
func (g *groupGen) stop() {
	g.cancel(context.Canceled)
	g.beats.Wait()
}

// leave tells the coordinator the member is going, with its instance id, so its partitions move
// at once instead of a session later.
func (m *member) leave(ctx context.Context) error {
	if m.id == "" && m.cfg.InstanceID == "" {
		return nil
	}
	cfg := m.cfg
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := sendLeave(lctx, m.transport(), m.cl.Addr, cfg.GroupID, m.id, cfg.InstanceID); err != nil {
		return err
	}
	m.id = ""
	m.owned = nil
	return nil
}
