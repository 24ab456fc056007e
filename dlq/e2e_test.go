package dlq_test

import (
	"context"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sync/errgroup"

	"github.com/chatgroupd/chatgroupd/consumer"
	"github.com/chatgroupd/chatgroupd/dispatcher"
	"github.com/chatgroupd/chatgroupd/dlq"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
	"github.com/chatgroupd/chatgroupd/metrics"
	"github.com/chatgroupd/chatgroupd/metrics/metricstest"
	"github.com/chatgroupd/chatgroupd/ratelimit"
)

const (
	e2eAppID = 1400000000
	e2eKey   = "e2e-test-secret-key-0123456789abcdef"
)

// recordingAPI is the real IM client, remembering the update requests the dispatcher makes.
type recordingAPI struct {
	*im.Client
	mu      sync.Mutex
	updates []im.UpdateRequest
}

func (r *recordingAPI) UpdateContactGroup(ctx context.Context, req *im.UpdateRequest) (*im.UpdateResponse, error) {
	r.mu.Lock()
	r.updates = append(r.updates, *req)
	r.mu.Unlock()
	return r.Client.UpdateContactGroup(ctx, req)
}

func (r *recordingAPI) updatesOf(account string) []im.UpdateRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []im.UpdateRequest
	for _, u := range r.updates {
		if u.FromAccount == account {
			out = append(out, u)
		}
	}
	return out
}

// pipeline is the real service on one machine: embedded Kafka, the IM simulator, dispatcher,
// consumer and DLQ writer.
type pipeline struct {
	k       *kafkatest.Cluster
	sim     *imsim.Server
	api     *recordingAPI
	m       *metrics.Metrics
	tools   dlq.ToolConfig
	topic   string
	cons    *consumer.Consumer
	cancel  context.CancelFunc
	stopped chan error
}

func startPipeline(t *testing.T, simCfg imsim.Config, seed func(ctx context.Context, c *im.Client)) *pipeline {
	t.Helper()
	return startPipelineDLQ(t, simCfg, seed, true)
}

// startPipelineDLQ is startPipeline, leaving the DLQ topic uncreated unless createDLQ.
func startPipelineDLQ(t *testing.T, simCfg imsim.Config, seed func(ctx context.Context, c *im.Client), createDLQ bool) *pipeline {
	t.Helper()
	return startPipelineTopics(t, simCfg, seed, nil, nil, createDLQ)
}

// startPipelineTopics is startPipelineDLQ with topic configs (name, value pairs) for the event
// and DLQ topics.
func startPipelineTopics(t *testing.T, simCfg imsim.Config, seed func(ctx context.Context, c *im.Client), evConfigs, dlqConfigs []string, createDLQ bool) *pipeline {
	t.Helper()
	k := kafkatest.New(t)
	p := &pipeline{k: k, topic: "ev", m: metrics.NewNop()}
	k.CreateTopic(t, "ev", 2, evConfigs...)
	if createDLQ {
		k.CreateTopic(t, "ev.dlq", 2, dlqConfigs...)
	}
	p.tools = dlq.ToolConfig{Brokers: k.Brokers, Topic: "ev"}
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))

	simCfg.SDKAppID, simCfg.SecretKey = e2eAppID, e2eKey
	sim, err := imsim.New(simCfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	t.Cleanup(sim.Close)
	p.sim = sim
	client, err := im.New(im.Config{SDKAppID: e2eAppID, SecretKey: e2eKey, BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	p.api = &recordingAPI{Client: client}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	seed(ctx, client)
	cancel()

	disp, err := dispatcher.New(dispatcher.Config{API: p.api, Limiter: ratelimit.Config{Standalone: true}, RetryBudget: 5 * time.Second,
		BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond, Logger: log, Metrics: p.m})
	if err != nil {
		t.Fatal(err)
	}
	dw, err := dlq.NewWriter(dlq.Config{Brokers: k.Brokers, Topic: "ev.dlq", GroupID: "g", Logger: log, Metrics: p.m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dw.Close() })
	cons, err := consumer.New(consumer.Config{Brokers: k.Brokers, Topic: "ev", GroupID: "g",
		Dispatcher: disp, DeadLetterer: dw, Share: disp, Logger: log, Metrics: p.m,
		CommitInterval: 200 * time.Millisecond, ReorderWindow: 200 * time.Millisecond,
		SessionTimeout: 6 * time.Second, RebalanceTimeout: 4 * time.Second, ShutdownTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	p.cons = cons
	runCtx, runCancel := context.WithCancel(context.Background())
	p.cancel, p.stopped = runCancel, make(chan error, 1)
	go func() {
		g, gctx := errgroup.WithContext(runCtx)
		g.Go(func() error { return cons.Run(gctx) })
		g.Go(func() error { return disp.Run(gctx) })
		p.stopped <- g.Wait()
	}()
	t.Cleanup(func() {
		p.cancel()
		select {
		case err := <-p.stopped:
			if err != nil {
				t.Errorf("pipeline: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("pipeline did not stop within 30s")
		}
	})
	return p
}

func (p *pipeline) produce(t *testing.T, evs ...event.Event) {
	t.Helper()
	var msgs []kafka.Message
	for _, ev := range evs {
		v, err := ev.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, kafka.Message{Key: ev.Key(), Value: v})
	}
	p.k.Produce(t, p.topic, msgs...)
}

func (p *pipeline) list(t *testing.T, f dlq.Filter) []dlq.Entry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	es, err := dlq.List(ctx, p.tools, f)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func (p *pipeline) replay(t *testing.T, opts dlq.ReplayOptions) dlq.Summary {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sum, err := dlq.Replay(ctx, p.tools, opts)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

func contacts(names ...string) []event.Contact {
	out := make([]event.Contact, len(names))
	for i, n := range names {
		out[i] = event.Contact{Type: event.ContactC2C, ToAccount: n}
	}
	return out
}

func imContacts(names ...string) []im.ContactItem {
	out := make([]im.ContactItem, len(names))
	for i, n := range names {
		out[i] = im.ContactItem{Type: im.ContactC2C, ToAccount: n}
	}
	return out
}

func groupNames(gs []imsim.Group) []string {
	var out []string
	for _, g := range gs {
		out = append(out, g.Name)
	}
	return out
}

func members(gs []imsim.Group, name string) []string {
	for _, g := range gs {
		if g.Name == name {
			var out []string
			for _, c := range g.Contacts {
				out = append(out, c.ToAccount)
			}
			slices.Sort(out)
			return out
		}
	}
	return nil
}

// TestReplayEndToEnd drives the operator's loop through the real consumer and dispatcher:
// events fail (51010, 51008 partial, 50001), the operator makes room and replays; each replay is
// applied once, a second identical replay applies nothing, a partial replay adds only the
// missing conversations, and a replay that fails again returns to the DLQ with
// dlq-replay-count 1, where the max-replays guard stops it.
func TestReplayEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: consumer group, simulator and DLQ")
	}
	p := startPipeline(t, imsim.Config{MaxGroups: 2, MaxContacts: 4, NotImported: []string{"ghost"}},
		func(ctx context.Context, c *im.Client) {
			create := func(account, group string, cs ...string) {
				_, err := c.CreateContactGroup(ctx, &im.CreateRequest{FromAccount: account,
					GroupContactItem: []im.GroupContactItem{{GroupName: group, ContactItem: imContacts(cs...)}}})
				if err != nil {
					t.Fatalf("seed %s/%s: %v", account, group, err)
				}
			}
			create("full", "old1", "y1") // full has the most groups allowed (2)
			create("full", "old2", "y1")
			create("part", "old1", "y1", "y2") // part has 2 of its 4 conversations
		})

	p.produce(t,
		event.Event{EventID: "full-1", EventType: event.TypeContactGroupCreated, FromAccount: "full", GroupName: "new1", Contacts: contacts("x1")},
		event.Event{EventID: "part-1", EventType: event.TypeContactGroupCreated, FromAccount: "part", GroupName: "new1", Contacts: contacts("x1", "x2", "x3")},
		event.Event{EventID: "ghost-1", EventType: event.TypeContactGroupCreated, FromAccount: "ghost", GroupName: "new1", Contacts: contacts("x1")},
	)
	var dead []dlq.Entry
	testwait.For(t, 30*time.Second, "three dead letters", func() bool { dead = p.list(t, dlq.Filter{}); return len(dead) == 3 })
	got := map[string]string{}
	for _, e := range dead {
		got[e.Account()] = e.Reason + "/" + strconv.Itoa(e.Code) + "/rc" + strconv.Itoa(e.ReplayCount)
	}
	want := map[string]string{"full": "rejected/51010/rc0", "part": "partial/51008/rc0", "ghost": "rejected/50001/rc0"}
	for a, w := range want {
		if got[a] != w {
			t.Fatalf("dead letters %v, want %v", got, want)
		}
	}
	if m := members(p.sim.Groups("part"), "new1"); !slices.Equal(m, []string{"x1", "x2"}) {
		t.Fatalf("part/new1 holds %v before the replay, want x1 x2", m)
	}

	// The operator makes room: one group less for full, two conversations less for part.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, a := range []string{"full", "part"} {
		if _, err := p.api.DelContactGroup(ctx, &im.DeleteRequest{FromAccount: a, GroupName: []string{"old1"}}); err != nil {
			t.Fatalf("make room for %s: %v", a, err)
		}
	}
	createsBefore := p.sim.Stats().APIs[im.APICreate].Total

	sum := p.replay(t, dlq.ReplayOptions{Filter: dlq.Filter{Codes: []int{51010, 51008}}})
	if sum.Replayed != 2 || sum.Matched != 2 {
		t.Fatalf("replay summary %+v, want 2 replayed", sum)
	}
	testwait.For(t, 30*time.Second, "replays applied", func() bool {
		return slices.Contains(groupNames(p.sim.Groups("full")), "new1") &&
			slices.Equal(members(p.sim.Groups("part"), "new1"), []string{"x1", "x2", "x3"})
	})
	// Applied once: full has new1 once, part's group was not created again, and the partial
	// replay sent only the missing conversation.
	if names := groupNames(p.sim.Groups("full")); !slices.Equal(names, []string{"old2", "new1"}) {
		t.Errorf("full's groups %v, want old2 new1", names)
	}
	if n := p.sim.Stats().APIs[im.APICreate].Total - createsBefore; n != 1 {
		t.Errorf("%d create calls for the replays, want 1 (full's; part's group exists)", n)
	}
	ups := p.api.updatesOf("part")
	if len(ups) != 1 || len(ups[0].UpdateGroup.ContactUpdateItem) != 1 ||
		ups[0].UpdateGroup.ContactUpdateItem[0].ContactItem.ToAccount != "x3" ||
		ups[0].UpdateGroup.ContactUpdateItem[0].ContactOptType != im.ContactOptAdd {
		t.Errorf("updates for part %+v, want one adding x3 only", ups)
	}
	if st := p.sim.Stats(); st.DuplicateCreates != 0 {
		t.Errorf("%d duplicate creates", st.DuplicateCreates)
	}

	// The same command again replays nothing; --again re-produces full's record with the same
	// replay-count, and the consumer drops it as a duplicate.
	sum = p.replay(t, dlq.ReplayOptions{Filter: dlq.Filter{Codes: []int{51010, 51008}}})
	if sum.Replayed != 0 || sum.AlreadyReplayed != 2 {
		t.Fatalf("second replay %+v, want nothing replayed", sum)
	}
	dups := metricstest.CollectorSum(p.m.EventsProcessed, metrics.LabelOutcome, metrics.OutcomeDuplicate)
	sum = p.replay(t, dlq.ReplayOptions{Filter: dlq.Filter{Account: "full"}, Again: true})
	if sum.Replayed != 1 {
		t.Fatalf("--again %+v", sum)
	}
	testwait.For(t, 30*time.Second, "the --again copy dropped as a duplicate", func() bool {
		return metricstest.CollectorSum(p.m.EventsProcessed, metrics.LabelOutcome, metrics.OutcomeDuplicate) == dups+1
	})
	if names := groupNames(p.sim.Groups("full")); !slices.Equal(names, []string{"old2", "new1"}) {
		t.Errorf("after --again full's groups %v", names)
	}

	// ghost is still not imported: its replay fails again and comes back with dlq-replay-count 1.
	sum = p.replay(t, dlq.ReplayOptions{Filter: dlq.Filter{Account: "ghost"}})
	if sum.Replayed != 1 {
		t.Fatalf("ghost replay %+v", sum)
	}
	var ghost []dlq.Entry
	testwait.For(t, 30*time.Second, "ghost's second dead letter", func() bool {
		ghost = p.list(t, dlq.Filter{Account: "ghost"})
		return len(ghost) == 2
	})
	first, again := ghost[0], ghost[1]
	if first.ReplayCount == 1 {
		first, again = again, first
	}
	if again.ReplayCount != 1 || again.Reason != dlq.ReasonRejected || again.Code != 50001 || !first.Replayed || again.Replayed {
		t.Fatalf("ghost's dead letters: first %+v, again %+v", first, again)
	}
	if again.EventID != "ghost-1" || string(again.Value) != string(first.Value) {
		t.Errorf("the re-dead-lettered record is not the original event")
	}
	rc, of := header(again.Headers, event.HeaderReplayCount), header(again.Headers, event.HeaderReplayOf)
	if rc != "1" || of != dlq.Coordinate("ev.dlq", first.Partition, first.Offset) {
		t.Errorf("re-dead-lettered headers replay-count=%q replay-of=%q", rc, of)
	}
	// The guard: with --max-replays 1, ghost's new record (already replayed once) is skipped.
	sum = p.replay(t, dlq.ReplayOptions{Filter: dlq.Filter{Account: "ghost"}, MaxReplays: 1})
	if sum.Replayed != 0 || sum.OverMax != 1 || sum.AlreadyReplayed != 1 {
		t.Fatalf("max-replays guard %+v", sum)
	}
}

// committed returns the group's committed offset of partition (-1 when none).
func (p *pipeline) committed(t *testing.T, partition int) int64 {
	t.Helper()
	cl := &kafka.Client{Addr: kafka.TCP(p.k.Brokers...), Timeout: 5 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: "g", Topics: map[string][]int{p.topic: {partition}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range res.Topics[p.topic] {
		if op.Partition == partition {
			return op.CommittedOffset
		}
	}
	return -1
}

// TestDLQUnwritableBlocksCommit: while the DLQ topic can't be written, the consumer keeps
// retrying the dead letter and commits nothing past it; once the topic exists the record lands
// there and the commit moves on.
func TestDLQUnwritableBlocksCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: consumer group, simulator and DLQ")
	}
	p := startPipelineDLQ(t, imsim.Config{}, func(context.Context, *im.Client) {}, false)
	p.k.Produce(t, p.topic, kafka.Message{Key: []byte("alice"), Value: []byte(`{"event_id":"bad-1"`)}) // invalid: to the DLQ
	part := p.k.ReadAll(t, p.topic)[0].Partition
	testwait.For(t, 30*time.Second, "the record consumed", func() bool {
		return testutil.ToFloat64(p.m.EventsConsumed) == 1
	})
	time.Sleep(1500 * time.Millisecond) // several commit intervals
	if c := p.committed(t, part); c > 0 {
		t.Fatalf("committed offset %d past a record whose dead letter was not written", c)
	}
	p.k.CreateTopic(t, "ev.dlq", 2)
	testwait.For(t, 60*time.Second, "the dead letter written once the topic exists", func() bool {
		return len(p.list(t, dlq.Filter{})) == 1
	})
	testwait.For(t, 30*time.Second, "the commit to move past the record", func() bool { return p.committed(t, part) == 1 })
	if e := p.list(t, dlq.Filter{})[0]; e.Reason != dlq.ReasonInvalid || string(e.Value) != `{"event_id":"bad-1"` {
		t.Errorf("dead letter %+v", e)
	}
}

func header(hs []kafka.Header, key string) string {
	for i := len(hs) - 1; i >= 0; i-- {
		if hs[i].Key == key {
			return string(hs[i].Value)
		}
	}
	return ""
}
