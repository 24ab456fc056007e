package budget

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/metrics"
)

// DefaultRetention is the budget topic's retention when a Runner creates it.
const DefaultRetention = 10 * time.Minute

// KafkaConfig is how a Runner reaches the budget topic. Brokers and Topic are required; zero
// values of the other fields take the defaults documented on them.
type KafkaConfig struct {
	Brokers []string
	// Topic is the budget topic (one partition; created when missing).
	Topic string
	// Dialer is for the reader, Transport for the writer and the admin client; nil for plain TCP.
	Dialer    *kafka.Dialer
	Transport kafka.RoundTripper
	// Retention of the topic when it is created (DefaultRetention): records older than a few
	// TTLs are never read.
	Retention time.Duration
	// ReplicationOf names a topic whose replication factor the budget topic gets when it is
	// created (the event topic); without it, or when it can't be read, the broker's default.
	ReplicationOf string
	Logger        *zap.Logger      // default zap.NewNop()
	Metrics       *metrics.Metrics // default metrics.NewNop()
}

// setDefaults fills the zero fields that have a default.
func (c *KafkaConfig) setDefaults() {
	c.Retention = cmp.Or(c.Retention, DefaultRetention)
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewNop()
	}
}

// Validate reports every problem of c, defaults applied, joined, each naming its field.
func (c KafkaConfig) Validate() error {
	c.setDefaults()
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("brokers: no brokers"))
	}
	if c.Topic == "" {
		errs = append(errs, errors.New("topic: no topic"))
	}
	if c.Retention < 0 {
		errs = append(errs, fmt.Errorf("retention: %v is negative", c.Retention))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("budget kafka config: %w", err)
	}
	return nil
}

// Runner runs a Member over the budget topic: it reads every record into the member, ticks it
// every half Interval with the source's demand, and publishes what the member asks to.
type Runner struct {
	kc     KafkaConfig
	mc     Config
	sink   Sink
	src    Source
	log    *zap.Logger
	m      *metrics.Metrics
	now    func() time.Time
	mu     sync.Mutex
	member *Member
}

// NewRunner applies both configurations' defaults, validates them and returns a Runner
// steering sink.
func NewRunner(kc KafkaConfig, mc Config, sink Sink, src Source) (*Runner, error) {
	kc.setDefaults()
	if err := kc.Validate(); err != nil {
		return nil, err
	}
	mc.setDefaults()
	if err := mc.Validate(); err != nil {
		return nil, err
	}
	if sink == nil || src == nil {
		return nil, errors.New("budget: runner needs a sink and a source")
	}
	r := &Runner{kc: kc, mc: mc, sink: sink, src: src, log: kc.Logger, m: kc.Metrics, now: time.Now}
	for _, op := range []string{"published", "read", "publish_error", "read_error", "invalid"} {
		r.m.FleetRecords.WithLabelValues(op).Add(0)
	}
	return r, nil
}

// Run takes part in the budget until ctx ends, then publishes that this member leaves and
// lingers (Config.LeaveLinger): it goes on publishing the calls still in its last window until
// none is left, so that the others grow into its room as those calls age out. exit bounds the
// linger too: it ends when the process must be gone (the caller's shutdown deadline). The sink
// gets nothing until the member's first record is read back: a replica that can't reach the
// topic makes no call.
func (r *Runner) Run(ctx, exit context.Context) error {
	start := r.now()
	member, err := NewMember(r.mc, r.sink, r.mc.StartAt(start))
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.member = member
	r.mu.Unlock()
	r.ensureTopic(ctx)

	w := r.writer()
	defer w.Close()
	records := make(chan Record, 256)
	outbox := make(chan Record, 1)
	rctx, cancel := context.WithCancel(ctx)
	wait := r.start(rctx, w, r.mc.StartAt(start), records, outbox)
	defer func() {
		cancel()
		wait()
	}()
	tick := time.NewTicker(r.mc.Interval / 2)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			cancel()
			wait() // the reader is done with the member; the writer no longer writes
			r.leave(exit, w)
			return nil
		case rec := <-records:
			r.apply(member, rec)
		case <-tick.C:
			r.tick(member, outbox)
		}
	}
}

// start runs the reader (into records) and the writer (of outbox) until ctx ends; wait waits
// for both.
func (r *Runner) start(ctx context.Context, w *kafka.Writer, from time.Time, records chan<- Record, outbox <-chan Record) (wait func()) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		r.read(ctx, from, records)
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case rec := <-outbox:
				r.write(ctx, w, rec)
			}
		}
	}()
	return wg.Wait
}

// apply feeds one record of the budget topic to the member.
func (r *Runner) apply(member *Member, rec Record) {
	r.mu.Lock()
	before := member.Ceiling()
	ceiling := member.Apply(rec, r.now())
	r.m.FleetPeers.Set(float64(member.Peers()))
	r.mu.Unlock()
	// At debug level every record read is logged with the ceiling it left, so that a window
	// the API saw crossed can be replayed against the ledger.
	if ce := r.log.Check(zap.DebugLevel, "budget record read"); ce != nil {
		ce.Write(zap.Any("record", rec), zap.Int("ceiling_before", before), zap.Int("ceiling", ceiling))
	}
}

// tick lets the member publish its demand and share; the outbox holds only the newest record.
func (r *Runner) tick(member *Member, outbox chan Record) {
	r.mu.Lock()
	before := member.preloaded
	now := r.now()
	out, _ := member.Tick(now, r.src.Demand(), r.src.Used(), r.src.UsedByAge(now, AgeStep))
	counted := member.preloaded - before
	r.mu.Unlock()
	if out == nil {
		return
	}
	if counted > 0 {
		r.log.Info("budget: succeeding the previous member of this instance; its calls are counted as ours until they age out",
			zap.String("predecessor", out.Succeeds), zap.Int("calls", counted))
	}
	if ce := r.log.Check(zap.DebugLevel, "budget record published"); ce != nil {
		ce.Write(zap.Any("record", *out))
	}
	select {
	case <-outbox: // an unsent older record is superseded
	default:
	}
	outbox <- *out
}

// writer publishes the member's records: one at a time, acknowledged by every replica, never
// retried past Resend (a newer record supersedes it by then).
func (r *Runner) writer() *kafka.Writer {
	return &kafka.Writer{
		Addr: kafka.TCP(r.kc.Brokers...), Topic: r.kc.Topic, Transport: r.kc.Transport,
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, BatchSize: 1,
		MaxAttempts: 1, WriteTimeout: r.mc.Resend,
	}
}

// leave publishes the member's last record, best effort (without it the entry expires by
// TTL), then lingers: every Interval a record of the calls still in the member's last window,
// until one reports none, LeaveLinger has passed or exit ends. The member makes no call from
// its leave on; the topic is not read any more (its records need no grant).
func (r *Runner) leave(exit context.Context, w *kafka.Writer) {
	linger, stop := context.WithTimeout(exit, r.member.LeaveLinger())
	defer stop()
	rec := r.leaveRecord()
	// As before the linger: the leave record gets its 2 s whatever exit says, since the
	// others otherwise wait for its entry's TTL.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(exit), 2*time.Second)
	defer cancel()
	r.write(ctx, w, rec)
	if rec.Used == 0 {
		return // nothing of ours left in any window: the leave record said it all
	}
	tick := time.NewTicker(r.mc.Interval)
	defer tick.Stop()
	for {
		select {
		case <-linger.Done():
			return
		case <-tick.C:
		}
		rec = r.leaveRecord()
		r.write(linger, w, rec)
		if rec.Used == 0 {
			return
		}
	}
}

// leaveRecord is the member's next record after it left: its calls still in the window.
func (r *Runner) leaveRecord() Record {
	r.mu.Lock()
	now := r.now()
	rec := r.member.Leave(now, r.src.Used(), r.src.UsedByAge(now, AgeStep))
	r.mu.Unlock()
	if ce := r.log.Check(zap.DebugLevel, "budget record published"); ce != nil {
		ce.Write(zap.Any("record", rec), zap.Bool("left", true))
	}
	return rec
}

func (r *Runner) write(ctx context.Context, w *kafka.Writer, rec Record) {
	b, err := json.Marshal(rec)
	if err != nil {
		r.log.Error("budget: encode record", zap.Error(err))
		return
	}
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte(rec.Member), Value: b}); err != nil {
		if ctx.Err() == nil {
			r.m.FleetRecords.WithLabelValues("publish_error").Inc()
			r.log.Warn("budget: publish failed", zap.String("topic", r.kc.Topic), zap.Error(err))
		}
		return
	}
	r.m.FleetRecords.WithLabelValues("published").Inc()
}

// read feeds every record from the first one stamped from on into out until ctx ends,
// reopening the reader after errors.
func (r *Runner) read(ctx context.Context, from time.Time, out chan<- Record) {
	var next int64 = -1
	for ctx.Err() == nil {
		rd := kafka.NewReader(kafka.ReaderConfig{
			Brokers: r.kc.Brokers, Topic: r.kc.Topic, Partition: 0, Dialer: r.kc.Dialer,
			MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 50 * time.Millisecond, ReadBatchTimeout: time.Second,
			ReadLagInterval: -1,
		})
		var err error
		if next >= 0 {
			err = rd.SetOffset(next)
		} else {
			err = rd.SetOffsetAt(ctx, from)
		}
		for err == nil {
			var msg kafka.Message
			msg, err = rd.ReadMessage(ctx)
			if err != nil {
				break
			}
			next = msg.Offset + 1
			var rec Record
			if jerr := json.Unmarshal(msg.Value, &rec); jerr != nil || rec.Validate() != nil {
				r.m.FleetRecords.WithLabelValues("invalid").Inc()
				continue
			}
			r.m.FleetRecords.WithLabelValues("read").Inc()
			select {
			case out <- rec:
			case <-ctx.Done():
			}
		}
		rd.Close()
		if ctx.Err() != nil {
			return
		}
		r.m.FleetRecords.WithLabelValues("read_error").Inc()
		r.log.Warn("budget: read failed; reopening", zap.String("topic", r.kc.Topic), zap.Error(err))
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// ensureTopic creates the budget topic when it is missing. Errors are logged only: the topic
// may exist already, or be created by an operator without our ACL to create it.
func (r *Runner) ensureTopic(ctx context.Context) {
	client := &kafka.Client{Addr: kafka.TCP(r.kc.Brokers...), Transport: r.kc.Transport, Timeout: 10 * time.Second}
	if md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{r.kc.Topic}}); err == nil {
		for _, t := range md.Topics {
			if t.Name == r.kc.Topic && t.Error == nil && len(t.Partitions) > 0 {
				return // exists
			}
		}
	}
	res, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: r.kc.Topic, NumPartitions: 1, ReplicationFactor: r.replication(ctx, client),
		ConfigEntries: []kafka.ConfigEntry{
			{ConfigName: "cleanup.policy", ConfigValue: "delete"},
			{ConfigName: "retention.ms", ConfigValue: fmt.Sprint(r.kc.Retention.Milliseconds())},
			{ConfigName: "segment.ms", ConfigValue: fmt.Sprint(r.kc.Retention.Milliseconds() / 4)},
		},
	}}})
	if err == nil {
		err = res.Errors[r.kc.Topic]
	}
	if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		r.log.Warn("budget: could not create the budget topic", zap.String("topic", r.kc.Topic), zap.Error(err))
	}
}

// replication is the replication factor of ReplicationOf, or -1 (the broker's default).
func (r *Runner) replication(ctx context.Context, client *kafka.Client) int {
	if r.kc.ReplicationOf == "" {
		return -1
	}
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{r.kc.ReplicationOf}})
	if err != nil {
		return -1
	}
	n := 0
	for _, t := range md.Topics {
		if t.Name == r.kc.ReplicationOf && t.Error == nil {
			for _, p := range t.Partitions {
				n = max(n, len(p.Replicas))
			}
		}
	}
	if n == 0 {
		return -1
	}
	return n
}
