package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
)

// These tests re-check, against the real broker, every kafka-go v0.4.51 behaviour chatgroupd
// relies on (the findings in docs/kafka.md were established on kfake first).

func client(c *kafkatest.Cluster) *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(c.Brokers...), Timeout: 10 * time.Second}
}

// TestApiVersions logs the broker's version ranges for the APIs kafka-go's group code pins to a
// fixed version, and fails if one of them is no longer served (KIP-896 removed old versions in 4.0).
func TestApiVersions(t *testing.T) {
	c := kafkatest.Real(t)
	resp, err := client(c).ApiVersions(testwait.Context(t, 30*time.Second), &kafka.ApiVersionsRequest{})
	if err != nil {
		t.Fatalf("ApiVersions: %v", err)
	}
	if resp.Error != nil {
		t.Fatalf("ApiVersions error: %v", resp.Error)
	}
	// The versions kafka-go v0.4.51's Conn sends without negotiating (conn.go): the group
	// protocol of ConsumerGroup and Generation.CommitOffsets.
	pinned := map[string]int{
		"FindCoordinator": 0, "Heartbeat": 0, "LeaveGroup": 0, "SyncGroup": 0,
		"OffsetCommit": 2, "OffsetFetch": 1,
		"JoinGroup": 2, // negotiated v1-v2; v2 must be served
	}
	seen := map[string]bool{}
	for _, k := range resp.ApiKeys {
		if v, ok := pinned[k.ApiName]; ok {
			t.Logf("%-16s broker v%d-v%d, kafka-go sends v%d", k.ApiName, k.MinVersion, k.MaxVersion, v)
			seen[k.ApiName] = true
			if v < k.MinVersion || v > k.MaxVersion {
				t.Errorf("%s v%d is not served (broker v%d-v%d)", k.ApiName, v, k.MinVersion, k.MaxVersion)
			}
		}
	}
	for name := range pinned {
		if !seen[name] {
			t.Errorf("broker does not list %s", name)
		}
	}
}

func TestCreateTopicsAndMetadata(t *testing.T) {
	c := kafkatest.Real(t)
	ctx := testwait.Context(t, 60*time.Second)
	topic := kafkatest.UniqueName("it-create")
	cl := client(c)
	resp, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic, NumPartitions: 3, ReplicationFactor: 1,
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "retention.ms", ConfigValue: "3600000"}},
	}}})
	if err != nil {
		t.Fatalf("CreateTopics: %v", err)
	}
	if err := resp.Errors[topic]; err != nil {
		t.Fatalf("CreateTopics %s: %v", topic, err)
	}
	// A second create must come back as the typed TopicAlreadyExists, which callers branch on.
	resp, err = cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic, NumPartitions: 3, ReplicationFactor: 1,
	}}})
	if err != nil {
		t.Fatalf("CreateTopics again: %v", err)
	}
	if err := resp.Errors[topic]; !errors.Is(err, kafka.TopicAlreadyExists) {
		t.Fatalf("CreateTopics again: got %v, want TopicAlreadyExists", err)
	}
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		t.Fatalf("Metadata: %v", err)
	}
	if len(md.Topics) != 1 || len(md.Topics[0].Partitions) != 3 {
		t.Fatalf("Metadata: %+v", md.Topics)
	}
	// auto.create.topics.enable=false: a missing topic is reported, not created.
	missing := kafkatest.UniqueName("it-missing")
	md, err = cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{missing}})
	if err != nil {
		t.Fatalf("Metadata missing: %v", err)
	}
	if len(md.Topics) != 1 || !errors.Is(md.Topics[0].Error, kafka.UnknownTopicOrPartition) {
		t.Fatalf("Metadata of a missing topic: %+v", md.Topics)
	}
}

func groupConfig(c *kafkatest.Cluster, group, topic string) kafka.ConsumerGroupConfig {
	return kafka.ConsumerGroupConfig{
		ID:                group,
		Brokers:           c.Brokers,
		Topics:            []string{topic},
		HeartbeatInterval: 500 * time.Millisecond,
		SessionTimeout:    6 * time.Second, // the broker's group.min.session.timeout.ms
		RebalanceTimeout:  5 * time.Second,
		JoinGroupBackoff:  200 * time.Millisecond,
		StartOffset:       kafka.FirstOffset,
		Timeout:           10 * time.Second,
	}
}

func partitionsOf(gen *kafka.Generation, topic string) []int {
	var ps []int
	for _, a := range gen.Assignments[topic] {
		ps = append(ps, a.ID)
	}
	sort.Ints(ps)
	return ps
}

// next returns the group's next generation. ConsumerGroup.Next also hands back every join error
// (GroupCoordinatorNotAvailable while __consumer_offsets is created on a fresh broker,
// RebalanceInProgress, ...) and only then retries, so callers must loop on it.
func next(t *testing.T, ctx context.Context, g *kafka.ConsumerGroup) *kafka.Generation {
	t.Helper()
	for {
		gen, err := g.Next(ctx)
		if err == nil {
			return gen
		}
		if ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
			t.Fatalf("Next: %v", err)
		}
		t.Logf("Next: %v (retrying)", err)
	}
}

// awaitEnd blocks until gen ends (a rebalance or Close), or fails the test.
func awaitEnd(t *testing.T, ctx context.Context, gen *kafka.Generation) {
	t.Helper()
	ended := make(chan struct{})
	gen.Start(func(gctx context.Context) {
		<-gctx.Done()
		close(ended)
	})
	select {
	case <-ended:
	case <-ctx.Done():
		t.Fatalf("generation %d did not end: %v", gen.ID, ctx.Err())
	}
}

// TestConsumerGroupCommitMetadata joins one member, commits offsets with metadata, adds a second
// member (a rebalance splits the partitions), then lets the second leave and checks that the
// first gets every partition back with the committed offsets and metadata intact.
func TestConsumerGroupCommitMetadata(t *testing.T) {
	c := kafkatest.Real(t)
	ctx := testwait.Context(t, 90*time.Second)
	topic := kafkatest.UniqueName("it-group")
	group := kafkatest.UniqueName("it-group")
	c.CreateTopic(t, topic, 4)
	cl := client(c)

	g1, err := kafka.NewConsumerGroup(groupConfig(c, group, topic))
	if err != nil {
		t.Fatalf("NewConsumerGroup: %v", err)
	}
	defer g1.Close()
	gen1 := next(t, ctx, g1)
	if got := partitionsOf(gen1, topic); !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Fatalf("g1 alone got partitions %v", got)
	}
	for _, a := range gen1.Assignments[topic] {
		if a.Offset != kafka.FirstOffset {
			t.Errorf("partition %d: fresh group offset %d, want FirstOffset sentinel", a.ID, a.Offset)
		}
	}

	commits := []kafka.OffsetCommit{}
	for p := range 4 {
		commits = append(commits, kafka.OffsetCommit{Partition: p, Offset: int64(10 + p), Metadata: fmt.Sprintf(`{"w":%d,"done":[1,2]}`, p)})
	}
	resp, err := cl.OffsetCommit(ctx, &kafka.OffsetCommitRequest{
		GroupID: group, GenerationID: int(gen1.ID), MemberID: gen1.MemberID,
		Topics: map[string][]kafka.OffsetCommit{topic: commits},
	})
	if err != nil {
		t.Fatalf("OffsetCommit: %v", err)
	}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			t.Fatalf("OffsetCommit partition %d: %v", p.Partition, p.Error)
		}
	}

	// Metadata over offset.metadata.max.bytes (4096) is refused per partition with error 12, and
	// err stays nil: callers must read the per-partition errors.
	resp, err = cl.OffsetCommit(ctx, &kafka.OffsetCommitRequest{
		GroupID: group, GenerationID: int(gen1.ID), MemberID: gen1.MemberID,
		Topics: map[string][]kafka.OffsetCommit{topic: {{Partition: 0, Offset: 99, Metadata: strings.Repeat("x", 4097)}}},
	})
	if err != nil {
		t.Fatalf("OffsetCommit big metadata: err %v, want a per-partition error", err)
	}
	if ps := resp.Topics[topic]; len(ps) != 1 || !errors.Is(ps[0].Error, kafka.OffsetMetadataTooLarge) {
		t.Fatalf("OffsetCommit big metadata: %+v, want OffsetMetadataTooLarge (12)", ps)
	}
	// Exactly 4096 bytes is accepted.
	resp, err = cl.OffsetCommit(ctx, &kafka.OffsetCommitRequest{
		GroupID: group, GenerationID: int(gen1.ID), MemberID: gen1.MemberID,
		Topics: map[string][]kafka.OffsetCommit{topic: {{Partition: 3, Offset: 13, Metadata: strings.Repeat("y", 4096)}}},
	})
	if err != nil || resp.Topics[topic][0].Error != nil {
		t.Fatalf("OffsetCommit 4096-byte metadata: %v %+v", err, resp.Topics[topic])
	}
	commits[3].Metadata = strings.Repeat("y", 4096)

	// A stale generation id is refused (IllegalGeneration), per partition.
	resp, err = cl.OffsetCommit(ctx, &kafka.OffsetCommitRequest{
		GroupID: group, GenerationID: int(gen1.ID) + 7, MemberID: gen1.MemberID,
		Topics: map[string][]kafka.OffsetCommit{topic: {{Partition: 1, Offset: 500}}},
	})
	if err != nil {
		t.Fatalf("OffsetCommit wrong generation: %v", err)
	}
	if ps := resp.Topics[topic]; len(ps) != 1 || !errors.Is(ps[0].Error, kafka.IllegalGeneration) {
		t.Fatalf("OffsetCommit wrong generation: %+v, want IllegalGeneration", ps)
	}

	checkFetch := func(what string) {
		t.Helper()
		f, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {0, 1, 2, 3}}})
		if err != nil || f.Error != nil {
			t.Fatalf("%s: OffsetFetch: %v %v", what, err, f.Error)
		}
		got := f.Topics[topic]
		sort.Slice(got, func(i, j int) bool { return got[i].Partition < got[j].Partition })
		if len(got) != 4 {
			t.Fatalf("%s: OffsetFetch returned %d partitions", what, len(got))
		}
		for i, p := range got {
			if p.Error != nil || p.CommittedOffset != commits[i].Offset || p.Metadata != commits[i].Metadata {
				t.Errorf("%s: partition %d: offset %d metadata %.40q err %v; want %d %.40q",
					what, p.Partition, p.CommittedOffset, p.Metadata, p.Error, commits[i].Offset, commits[i].Metadata)
			}
		}
	}
	checkFetch("after commit")

	// A second member joins: the first one's generation ends, both get the next one, and the
	// range balancer splits the four partitions between them.
	g2, err := kafka.NewConsumerGroup(groupConfig(c, group, topic))
	if err != nil {
		t.Fatalf("NewConsumerGroup 2: %v", err)
	}
	defer g2.Close()
	gen2b := make(chan *kafka.Generation, 1)
	go func() {
		for {
			g, err := g2.Next(ctx)
			if err == nil || ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
				if err != nil {
					t.Errorf("g2 Next: %v", err)
				}
				gen2b <- g
				return
			}
			t.Logf("g2 Next: %v (retrying)", err)
		}
	}()
	start := time.Now()
	awaitEnd(t, ctx, gen1)
	gen2a := next(t, ctx, g1)
	b := <-gen2b
	if b == nil {
		t.FailNow()
	}
	t.Logf("rebalance to two members took %v", time.Since(start))
	if gen2a.ID != b.ID || gen2a.ID <= gen1.ID {
		t.Fatalf("generation ids: g1 %d then %d, g2 %d", gen1.ID, gen2a.ID, b.ID)
	}
	pa, pb := partitionsOf(gen2a, topic), partitionsOf(b, topic)
	if len(pa) != 2 || len(pb) != 2 {
		t.Fatalf("split %v / %v, want 2 + 2", pa, pb)
	}
	if all := append(slices.Clone(pa), pb...); !slices.Equal(sorted(all), []int{0, 1, 2, 3}) {
		t.Fatalf("split %v / %v does not cover each partition once", pa, pb)
	}
	// Assignments carry the committed offsets.
	for _, g := range []*kafka.Generation{gen2a, b} {
		for _, a := range g.Assignments[topic] {
			if a.Offset != commits[a.ID].Offset {
				t.Errorf("gen %d partition %d: assignment offset %d, want %d", g.ID, a.ID, a.Offset, commits[a.ID].Offset)
			}
		}
	}
	checkFetch("after rebalance")

	// The second member leaves (LeaveGroup on Close): the first gets all four back.
	closed := make(chan error, 1)
	go func() { closed <- g2.Close() }()
	start = time.Now()
	awaitEnd(t, ctx, gen2a)
	gen3 := next(t, ctx, g1)
	t.Logf("rebalance after a leave took %v", time.Since(start))
	if got := partitionsOf(gen3, topic); !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Fatalf("after leave g1 got %v", got)
	}
	if err := <-closed; err != nil {
		t.Errorf("g2 Close: %v", err)
	}
	checkFetch("after leave")

	// Generation.CommitOffsets sends empty metadata and erases what was stored (the trap).
	if err := gen3.CommitOffsets(map[string]map[int]int64{topic: {0: 10}}); err != nil {
		t.Fatalf("CommitOffsets: %v", err)
	}
	f, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {0}}})
	if err != nil {
		t.Fatalf("OffsetFetch: %v", err)
	}
	if p := f.Topics[topic][0]; p.CommittedOffset != 10 || p.Metadata != "" {
		t.Errorf("after Generation.CommitOffsets: offset %d metadata %q; want 10 and erased metadata", p.CommittedOffset, p.Metadata)
	}
}

func sorted(s []int) []int { sort.Ints(s); return s }

// TestProduceAcksAllMurmur2 writes keyed records with acks=all and the Murmur2 balancer and checks
// that every key lands in the partition Java's default partitioner would pick, and that
// ListOffsets and a partition Reader with SetOffset see them.
func TestProduceAcksAllMurmur2(t *testing.T) {
	c := kafkatest.Real(t)
	ctx := testwait.Context(t, 60*time.Second)
	topic := kafkatest.UniqueName("it-produce")
	c.CreateTopic(t, topic, 6)

	w := c.Writer(topic)
	defer w.Close()
	if w.RequiredAcks != kafka.RequireAll {
		t.Fatalf("kafkatest.Writer acks %v", w.RequiredAcks)
	}
	const n = 300
	var msgs []kafka.Message
	for i := range n {
		msgs = append(msgs, kafka.Message{Key: fmt.Appendf(nil, "acct-%d", i%37), Value: fmt.Appendf(nil, "v%d", i)})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("WriteMessages: %v", err)
	}

	// Keys must hash as the Java client does, so that other producers of the topic agree.
	for key, want := range javaPartitions6 {
		if got := (&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: []byte(key)}, 0, 1, 2, 3, 4, 5); got != want {
			t.Errorf("murmur2 %q: %d, want %d", key, got, want)
		}
	}

	all := c.ReadAll(t, topic)
	if len(all) != n {
		t.Fatalf("read %d records, want %d", len(all), n)
	}
	perPartition := map[int]int64{}
	for _, m := range all {
		want := (&kafka.Murmur2Balancer{}).Balance(m, 0, 1, 2, 3, 4, 5)
		if m.Partition != want {
			t.Errorf("key %s in partition %d, want %d", m.Key, m.Partition, want)
		}
		perPartition[m.Partition]++
	}

	var reqs []kafka.OffsetRequest
	for p := range 6 {
		reqs = append(reqs, kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	lo, err := client(c).ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		t.Fatalf("ListOffsets: %v", err)
	}
	if len(lo.Topics[topic]) != 6 {
		t.Fatalf("ListOffsets: %+v", lo.Topics)
	}
	for _, po := range lo.Topics[topic] {
		if po.Error != nil || po.FirstOffset != 0 || po.LastOffset != perPartition[po.Partition] {
			t.Errorf("ListOffsets partition %d: first %d last %d err %v; want 0 %d", po.Partition, po.FirstOffset, po.LastOffset, po.Error, perPartition[po.Partition])
		}
	}

	// A non-group Reader on one partition, started mid-way with SetOffset.
	var p int
	for q, cnt := range perPartition {
		if cnt >= 3 {
			p = q
			break
		}
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: c.Brokers, Topic: topic, Partition: p, MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 250 * time.Millisecond})
	defer r.Close()
	if err := r.SetOffset(1); err != nil {
		t.Fatalf("SetOffset: %v", err)
	}
	m, err := r.ReadMessage(ctx)
	if err != nil {
		t.Fatalf("ReadMessage: %v", err)
	}
	if m.Offset != 1 || m.Partition != p || m.HighWaterMark != perPartition[p] {
		t.Errorf("read offset %d partition %d hwm %d; want 1 %d %d", m.Offset, m.Partition, m.HighWaterMark, p, perPartition[p])
	}
}

// javaPartitions6 are partitions for 6 partitions from the Java client's default partitioner,
// Utils.toPositive(Utils.murmur2(key)) % 6, computed once with kafka-clients 4.1.1.
var javaPartitions6 = map[string]int{
	"alice": 3, "bob": 0, "acct-0": 0, "acct-1": 2, "acct-17": 2, "user_000042": 4, "中文": 3,
}
