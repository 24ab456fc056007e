package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/dlq"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
)

// The fault-suite harness: an in-process IM simulator, chatgroupd consumer processes, a planned
// event stream, and the invariant check that ends every scenario.

const (
	simAppID = 1400012345
	simKey   = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"
	// ghostPrefix marks accounts the simulator treats as not imported (50001, a permanent error).
	ghostPrefix = "ghost-"
)

// simulator is imsim served on 127.0.0.1 for the consumer processes; the test reads its state
// directly.
type simulator struct {
	*imsim.Server
	URL string
}

func startSim(t *testing.T, rateLimit int) *simulator {
	t.Helper()
	srv, err := imsim.New(imsim.Config{
		SDKAppID: simAppID, SecretKey: simKey, RateLimit: rateLimit,
		// Room for every planned event: the suite tests delivery, not the per-user quotas.
		MaxGroups: 100000, MaxContacts: 1 << 30,
		Imported: func(acct string) bool { return !strings.HasPrefix(acct, ghostPrefix) },
		Seed:     1,
		MaxHang:  8 * time.Second,
	})
	if err != nil {
		t.Fatalf("imsim: %v", err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		srv.Close() // releases hung requests so hs.Close does not wait for them
		hs.Close()
	})
	return &simulator{Server: srv, URL: hs.URL}
}

// kind is what a planned record must end as.
type kind int

const (
	kindValid     kind = iota // applied exactly once
	kindDuplicate             // a re-send of a valid event: dropped, never applied again or DLQ'd
	kindInvalid               // dead-lettered with reason invalid, never sent to the API
	kindRejected              // dead-lettered with reason rejected (permanent API error)
)

func (k kind) String() string { return [...]string{"valid", "duplicate", "invalid", "rejected"}[k] }

// plan is a record to produce and what must become of it.
type plan struct {
	Key, Value []byte
	Headers    []kafka.Header
	Kind       kind
	Account    string
	Group      string           // group name, for valid events
	Contacts   []im.ContactItem // for valid events
	EventID    string           // when it has one
	Partition  int              // where it landed, filled by scenario.source
	Offset     int64            // idem
}

// stream makes planned records with unique ids, group names and account sequence numbers.
type stream struct {
	prefix string
	n      int
	seq    map[string]int64
}

func newStream(prefix string) *stream { return &stream{prefix: prefix, seq: map[string]int64{}} }

func (s *stream) valid(account string) plan {
	s.n++
	s.seq[account]++
	contacts := []event.Contact{{Type: event.ContactC2C, ToAccount: fmt.Sprintf("peer-%d", s.n%7)}}
	if s.n%3 == 0 {
		contacts = append(contacts, event.Contact{Type: event.ContactGroup, ToGroupID: fmt.Sprintf("@TGS#%d", s.n%5)})
	}
	e := event.Event{
		EventID: fmt.Sprintf("%s-%d", s.prefix, s.n), EventType: event.TypeContactGroupCreated,
		FromAccount: account, Seq: s.seq[account], OccurredAt: time.Now().UTC().Truncate(time.Millisecond),
		GroupName: fmt.Sprintf("g%d", s.n), Contacts: contacts,
	}
	v, err := e.Marshal()
	if err != nil {
		panic(err) // a bug in the generator, not a test outcome
	}
	var items []im.ContactItem
	for _, c := range contacts {
		items = append(items, im.ContactItem{Type: c.Type, ToAccount: c.ToAccount, ToGroupID: c.ToGroupID})
	}
	k := kindValid
	if strings.HasPrefix(account, ghostPrefix) {
		k = kindRejected
	}
	return plan{Key: []byte(account), Value: v, Kind: k, Account: account, Group: e.GroupName, Contacts: items, EventID: e.EventID}
}

// invalid returns a record that breaks the event contract (docs/events.md) in one of several ways, chosen by variant.
func (s *stream) invalid(account string, variant int) plan {
	s.n++
	id := fmt.Sprintf("%s-%d", s.prefix, s.n)
	var v []byte
	switch variant % 7 {
	case 0:
		v = fmt.Appendf(nil, `{"event_id":%q,"event_type":"contact_group.created","from_account":%q,"group_name":"x","contacts":[{"type":1,"to_account":"p"}]`, id, account) // truncated JSON
	case 1:
		v = fmt.Appendf(nil, `{"event_id":%q,"event_type":"contact_group.archived","from_account":%q,"group_name":"x","contacts":[{"type":1,"to_account":"p"}]}`, id, account)
	case 2:
		v = fmt.Appendf(nil, `{"event_id":%q,"event_type":"contact_group.created","from_account":%q,"group_name":"x","contacts":[]}`, id, account)
	case 3:
		v = fmt.Appendf(nil, `{"event_id":%q,"event_type":"contact_group.created","from_account":%q,"group_name":%q,"contacts":[{"type":1,"to_account":"p"}]}`, id, account, strings.Repeat("名", 11))
	case 4:
		v = append(fmt.Appendf(nil, `{"event_id":%q,"x":"`, id), 0xff, 0xfe, '"', '}') // not UTF-8
	case 5:
		v = fmt.Appendf(nil, `[{"event_id":%q}]`, id)
	case 6:
		v = fmt.Appendf(nil, `{"event_id":%q,"event_type":"contact_group.created","from_account":%q,"group_name":"x","contacts":[{"type":3,"to_account":"p"}]}`, id, account)
	}
	return plan{Key: []byte(account), Value: v, Kind: kindInvalid, Account: account, EventID: id}
}

// duplicate re-sends p byte for byte.
func duplicate(p plan) plan {
	p.Kind = kindDuplicate
	return p
}

// scenario is one fault-suite run: topics, a consumer group, the simulator and the processes.
type scenario struct {
	t          *testing.T
	name       string
	c          *kafkatest.Cluster
	sim        *simulator
	topic      string
	dlqTopic   string
	group      string
	partitions int
	rateLimit  int
	plans      []plan // in produce order; coordinates filled by source
	located    bool
	procs      []*consumer
	start      time.Time
	dir        string // process logs; created before the cleanup that prints them, so it outlives it
}

func newScenario(t *testing.T, name string, partitions, rateLimit int) *scenario {
	t.Helper()
	c := kafkatest.Real(t)
	s := &scenario{
		t: t, name: name, c: c, sim: startSim(t, rateLimit),
		topic: kafkatest.UniqueName("ft-" + name), group: kafkatest.UniqueName("ft-" + name),
		partitions: partitions, rateLimit: rateLimit, start: time.Now(), dir: t.TempDir(),
	}
	s.dlqTopic = s.topic + ".dlq"
	c.CreateTopic(t, s.topic, partitions)
	t.Cleanup(func() {
		for _, p := range s.procs {
			p.kill()
		}
		for _, p := range s.procs {
			if err := secretsIn(p.logPath); err != nil {
				t.Errorf("%s log: %v", p.name, err)
			}
		}
		if t.Failed() {
			for _, p := range s.procs {
				t.Logf("--- %s log (last 40 lines of %s)\n%s", p.name, p.logPath, tail(p.logPath, 40))
			}
		}
	})
	return s
}

func (s *scenario) createDLQ() { s.c.CreateTopic(s.t, s.dlqTopic, s.partitions) }

// produce writes ps (acks=all, murmur2 keys) and remembers them for the final check.
func (s *scenario) produce(ps ...plan) {
	s.t.Helper()
	msgs := make([]kafka.Message, len(ps))
	for i, p := range ps {
		msgs[i] = kafka.Message{Key: p.Key, Value: p.Value, Headers: p.Headers}
	}
	s.c.Produce(s.t, s.topic, msgs...)
	s.plans = append(s.plans, ps...)
	s.located = false
}

// keyFor returns an account name whose records land in partition p.
func (s *scenario) keyFor(prefix string, p int) string {
	bal := &kafka.Murmur2Balancer{}
	parts := make([]int, s.partitions)
	for i := range parts {
		parts[i] = i
	}
	for i := 0; ; i++ {
		k := fmt.Sprintf("%s%d", prefix, i)
		if bal.Balance(kafka.Message{Key: []byte(k)}, parts...) == p {
			return k
		}
	}
}

// locate reads the event topic back and fills each plan's partition and offset. Identical values
// (duplicates) are matched in offset order, so the first copy is the original.
func (s *scenario) locate(ctx context.Context) error {
	if s.located {
		return nil
	}
	msgs, err := kafkatest.ReadAll(ctx, s.c.Brokers, s.topic)
	if err != nil {
		return fmt.Errorf("read %s: %w", s.topic, err)
	}
	if len(msgs) != len(s.plans) {
		return fmt.Errorf("topic %s has %d records, %d were produced", s.topic, len(msgs), len(s.plans))
	}
	sort.SliceStable(msgs, func(i, j int) bool {
		if msgs[i].Partition != msgs[j].Partition {
			return msgs[i].Partition < msgs[j].Partition
		}
		return msgs[i].Offset < msgs[j].Offset
	})
	byValue := map[string][]int{} // value → plan indexes, originals first
	for i, p := range s.plans {
		if p.Kind == kindDuplicate {
			continue
		}
		byValue[string(p.Value)] = append(byValue[string(p.Value)], i)
	}
	for i, p := range s.plans {
		if p.Kind == kindDuplicate {
			byValue[string(p.Value)] = append(byValue[string(p.Value)], i)
		}
	}
	for _, m := range msgs {
		q := byValue[string(m.Value)]
		if len(q) == 0 {
			return fmt.Errorf("record %d/%d matches no plan", m.Partition, m.Offset)
		}
		s.plans[q[0]].Partition, s.plans[q[0]].Offset = m.Partition, m.Offset
		byValue[string(m.Value)] = q[1:]
	}
	s.located = true
	return nil
}

// dlqEntries reads the DLQ topic; a missing topic reads as empty.
func (s *scenario) dlqEntries(ctx context.Context) ([]*dlq.Entry, error) {
	md, err := client(s.c).Metadata(ctx, &kafka.MetadataRequest{Topics: []string{s.dlqTopic}})
	if err != nil {
		return nil, err
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil {
		return nil, nil
	}
	msgs, err := kafkatest.ReadAll(ctx, s.c.Brokers, s.dlqTopic)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", s.dlqTopic, err)
	}
	out := make([]*dlq.Entry, 0, len(msgs))
	for _, m := range msgs {
		e, err := dlq.Parse(m)
		if err != nil {
			return nil, fmt.Errorf("dlq record %d/%d: %w", m.Partition, m.Offset, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// lag returns the group's committed-to-end distance summed over partitions (a partition
// without a commit counts all its records).
func (s *scenario) lag(ctx context.Context) (int64, error) {
	return kafkatest.GroupLag(ctx, client(s.c), s.group, s.topic, s.partitions)
}

// committed returns the group's committed offset per partition (-1 when none).
func (s *scenario) committed(ctx context.Context) (map[int]int64, error) {
	ids := make([]int, s.partitions)
	for i := range ids {
		ids[i] = i
	}
	of, err := client(s.c).OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: s.group, Topics: map[string][]int{s.topic: ids}})
	if err != nil {
		return nil, err
	}
	out := map[int]int64{}
	for _, p := range of.Topics[s.topic] {
		out[p.Partition] = p.CommittedOffset
	}
	return out, nil
}

// snapshot judges the current state.
func (s *scenario) snapshot(ctx context.Context) (report, error) {
	if err := s.locate(ctx); err != nil {
		return report{}, err
	}
	entries, err := s.dlqEntries(ctx)
	if err != nil {
		return report{}, err
	}
	groups := map[string][]imsim.Group{}
	for _, p := range s.plans {
		if _, ok := groups[p.Account]; !ok {
			groups[p.Account] = s.sim.Groups(p.Account)
		}
	}
	r := judge(s.topic, s.plans, groups, entries, s.sim.Stats().DuplicateCreates)
	lag, err := s.lag(ctx)
	if err != nil {
		return r, fmt.Errorf("lag: %w", err)
	}
	r.Lag = lag
	return r, nil
}

// progress is the share of planned records already ended (applied or dead-lettered).
func (s *scenario) progress(ctx context.Context) (float64, report, error) {
	r, err := s.snapshot(ctx)
	if err != nil {
		return 0, r, err
	}
	return float64(r.Ended()) / float64(max(len(s.plans), 1)), r, nil
}

// waitProgress blocks until at least frac of the records have ended.
func (s *scenario) waitProgress(ctx context.Context, frac float64) {
	s.t.Helper()
	var last report
	for {
		f, r, err := s.progress(ctx)
		if err == nil && f >= frac {
			return
		}
		last = r
		select {
		case <-ctx.Done():
			s.t.Fatalf("%s: progress %.0f%% not reached: %v (last %s, err %v)", s.name, frac*100, ctx.Err(), last.Summary(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitDrained blocks until every record has ended and the group committed up to the end of
// every partition, and returns the final report.
func (s *scenario) waitDrained(ctx context.Context) report {
	s.t.Helper()
	var last report
	var lastErr error
	for {
		r, err := s.snapshot(ctx)
		if err == nil && r.Ended() == len(s.plans) && r.Lag == 0 {
			return r
		}
		last, lastErr = r, err
		select {
		case <-ctx.Done():
			s.t.Fatalf("%s: not drained: %v\nlast: %s (err %v)\n%s", s.name, ctx.Err(), last.Summary(), lastErr, strings.Join(last.Problems, "\n"))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// verify fails the test unless r satisfies the invariants, and logs the figures.
func (s *scenario) verify(r report, allowDLQDuplicates bool) {
	s.t.Helper()
	s.t.Logf("FIGURES %s: %s", s.name, r.Summary())
	if err := r.check(allowDLQDuplicates); err != nil {
		s.t.Errorf("%s: invariant violated: %v", s.name, err)
	}
}

// report is the invariant check of one scenario.
type report struct {
	Records          int // planned records
	Applied          int // valid events whose group exists exactly once
	DeadLettered     int // invalid/rejected records found in the DLQ with the right reason
	Dropped          int // duplicates neither applied twice nor dead-lettered
	Pending          int // records not ended yet (lost, at the end)
	AppliedTwice     int // a group created more than once for one event
	AppliedAndDLQ    int // applied and also dead-lettered
	WrongOutcome     int // dead-lettered with the wrong reason, or a valid event dead-lettered
	DLQDuplicates    int // extra DLQ records for one source coordinate
	DLQStrays        int // DLQ records that match no planned record
	DuplicateCreates int // creates the simulator saw for a name the user already had
	Lag              int64
	Problems         []string // the first few, for the failure message
}

// Ended counts records in a final state, right or wrong.
func (r report) Ended() int { return r.Records - r.Pending }

func (r report) Summary() string {
	return fmt.Sprintf("records=%d applied=%d dead_lettered=%d duplicates_dropped=%d lost_or_pending=%d applied_twice=%d applied_and_dlq=%d wrong_outcome=%d dlq_duplicates=%d dlq_strays=%d duplicate_creates=%d lag=%d",
		r.Records, r.Applied, r.DeadLettered, r.Dropped, r.Pending, r.AppliedTwice, r.AppliedAndDLQ, r.WrongOutcome, r.DLQDuplicates, r.DLQStrays, r.DuplicateCreates, r.Lag)
}

func (r report) check(allowDLQDuplicates bool) error {
	var errs []error
	add := func(n int, what string) {
		if n != 0 {
			errs = append(errs, fmt.Errorf("%d %s", n, what))
		}
	}
	add(r.Pending, "records lost (neither applied nor dead-lettered)")
	add(r.AppliedTwice, "events applied more than once")
	add(r.AppliedAndDLQ, "events both applied and dead-lettered")
	add(r.WrongOutcome, "records with the wrong outcome")
	add(r.DLQStrays, "DLQ records matching no produced record")
	add(r.DuplicateCreates, "duplicate creates at the API")
	if !allowDLQDuplicates {
		add(r.DLQDuplicates, "duplicate DLQ records")
	}
	if r.Lag != 0 {
		errs = append(errs, fmt.Errorf("lag %d: offsets not committed to the end", r.Lag))
	}
	if len(errs) > 0 && len(r.Problems) > 0 {
		errs = append(errs, errors.New("first problems:\n  "+strings.Join(r.Problems, "\n  ")))
	}
	return errors.Join(errs...)
}

// judge compares what was planned with the simulator's groups and the DLQ. It is pure, so the
// check itself is unit-tested (TestJudge).
func judge(topic string, plans []plan, groups map[string][]imsim.Group, entries []*dlq.Entry, dupCreates int) report {
	r := report{Records: len(plans), DuplicateCreates: dupCreates}
	problem := func(format string, args ...any) {
		if len(r.Problems) < 12 {
			r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
		}
	}
	type coord struct {
		p int
		o int64
	}
	dl := map[coord][]*dlq.Entry{}
	for _, e := range entries {
		dl[coord{e.OriginalPartition, e.OriginalOffset}] = append(dl[coord{e.OriginalPartition, e.OriginalOffset}], e)
	}
	known := map[coord]bool{}
	// Count each account's groups by name once.
	byName := map[string]map[string]int{}
	for acct, gs := range groups {
		m := map[string]int{}
		for _, g := range gs {
			m[g.Name]++
		}
		byName[acct] = m
	}
	groupOf := func(acct, name string) *imsim.Group {
		for i := range groups[acct] {
			if groups[acct][i].Name == name {
				return &groups[acct][i]
			}
		}
		return nil
	}
	for _, p := range plans {
		c := coord{p.Partition, p.Offset}
		known[c] = true
		es := dl[c]
		if len(es) > 1 {
			r.DLQDuplicates += len(es) - 1
		}
		for _, e := range es {
			if e.OriginalTopic != topic {
				problem("%d/%d: dlq-original-topic %q, want %q", p.Partition, p.Offset, e.OriginalTopic, topic)
			}
		}
		switch p.Kind {
		case kindValid, kindDuplicate:
			n := byName[p.Account][p.Group]
			switch {
			case len(es) > 0 && n > 0:
				r.AppliedAndDLQ++
				problem("%d/%d %s %s: applied and dead-lettered (%s %d)", p.Partition, p.Offset, p.Kind, p.EventID, es[0].Reason, es[0].Code)
			case len(es) > 0:
				r.WrongOutcome++
				problem("%d/%d %s %s: dead-lettered (%s %d: %s)", p.Partition, p.Offset, p.Kind, p.EventID, es[0].Reason, es[0].Code, es[0].Info)
			case n > 1:
				if p.Kind == kindValid {
					r.AppliedTwice++
					problem("%d/%d %s: group %s/%s created %d times", p.Partition, p.Offset, p.EventID, p.Account, p.Group, n)
				} else {
					r.Dropped++
				}
			case n == 1:
				if p.Kind == kindDuplicate {
					r.Dropped++
					break
				}
				r.Applied++
				if g := groupOf(p.Account, p.Group); g != nil && !sameContacts(g.Contacts, p.Contacts) {
					r.WrongOutcome++
					problem("%d/%d %s: group %s has contacts %v, want %v", p.Partition, p.Offset, p.EventID, p.Group, g.Contacts, p.Contacts)
				}
			default:
				if p.Kind == kindDuplicate {
					// Its original is not applied yet either: the duplicate is not ended.
					r.Pending++
				} else {
					r.Pending++
					problem("%d/%d %s: not applied", p.Partition, p.Offset, p.EventID)
				}
			}
		case kindInvalid, kindRejected:
			want := dlq.ReasonInvalid
			if p.Kind == kindRejected {
				want = dlq.ReasonRejected
			}
			switch {
			case len(es) == 0:
				r.Pending++
				problem("%d/%d %s %s: not dead-lettered", p.Partition, p.Offset, p.Kind, p.EventID)
			case es[0].Reason != want:
				r.WrongOutcome++
				problem("%d/%d %s: dead-lettered as %s, want %s", p.Partition, p.Offset, p.EventID, es[0].Reason, want)
			case !bytes.Equal(es[0].Value, p.Value) || !bytes.Equal(es[0].Key, p.Key):
				r.WrongOutcome++
				problem("%d/%d %s: DLQ key/value differ from the original", p.Partition, p.Offset, p.EventID)
			default:
				r.DeadLettered++
			}
			if p.Group != "" && byName[p.Account][p.Group] > 0 {
				r.AppliedAndDLQ++
				problem("%d/%d %s: a %s record created group %s", p.Partition, p.Offset, p.EventID, p.Kind, p.Group)
			}
		}
	}
	for c, es := range dl {
		if !known[c] {
			r.DLQStrays += len(es)
			problem("DLQ record for %d/%d matches no produced record", c.p, c.o)
		}
	}
	return r
}

func sameContacts(got, want []im.ContactItem) bool {
	key := func(cs []im.ContactItem) []string {
		out := make([]string, len(cs))
		for i, c := range cs {
			out[i] = c.Key()
		}
		sort.Strings(out)
		return out
	}
	return slices.Equal(key(got), key(want))
}

// consumer is one `chatgroupd run` process.
type consumer struct {
	name        string
	cmd         *exec.Cmd
	logPath     string
	metricsAddr string
	done        chan struct{}
	err         error // valid after done is closed
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startConsumer starts `chatgroupd run` for the scenario. extra flags come last and win.
func (s *scenario) startConsumer(name string, extra ...string) *consumer {
	s.t.Helper()
	bin := chatgroupd(s.t)
	c := &consumer{name: name, metricsAddr: freeAddr(s.t), done: make(chan struct{})}
	c.logPath = filepath.Join(s.dir, name+".log")
	logf, err := os.Create(c.logPath)
	if err != nil {
		s.t.Fatal(err)
	}
	args := []string{"run",
		"--brokers", strings.Join(s.c.Brokers, ","),
		"--topic", s.topic, "--group", s.group, "--dlq-topic", s.dlqTopic,
		"--im-endpoint", s.sim.URL, "--sdkappid", strconv.Itoa(simAppID),
		"--rate-limit", strconv.Itoa(s.rateLimit),
		"--metrics-addr", c.metricsAddr,
		"--log-format", "json", "--log-level", "info",
		"--shutdown-timeout", "10s",
	}
	args = append(args, extra...)
	c.cmd = exec.Command(bin, args...)
	c.cmd.Env = append(cleanEnv(), "CHATGROUPD_SECRET_KEY="+simKey)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	if err := c.cmd.Start(); err != nil {
		logf.Close()
		s.t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		c.err = c.cmd.Wait()
		logf.Close()
		close(c.done)
	}()
	s.procs = append(s.procs, c)
	return c
}

// cleanEnv is the test's environment without CHATGROUPD_* variables, which would otherwise act as
// flag defaults of the child.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CHATGROUPD_") {
			out = append(out, kv)
		}
	}
	return out
}

// waitReady polls /readyz until it answers 200.
func (c *consumer) waitReady(t *testing.T, ctx context.Context) {
	t.Helper()
	for {
		select {
		case <-c.done:
			t.Fatalf("%s exited before ready: %v\n%s", c.name, c.err, tail(c.logPath, 30))
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.metricsAddr+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s not ready: %v\n%s", c.name, ctx.Err(), tail(c.logPath, 30))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *consumer) kill() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Kill()
	<-c.done
}

// stop sends SIGTERM and fails the test unless the process exits 0 within timeout.
func (c *consumer) stop(t *testing.T, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		if c.err != nil {
			t.Errorf("%s exited with %v after SIGTERM\n%s", c.name, c.err, tail(c.logPath, 30))
		}
	case <-time.After(timeout):
		t.Errorf("%s still running %v after SIGTERM", c.name, timeout)
		c.kill()
	}
	return time.Since(start)
}

// usersigRe finds a UserSig in a request URL that reached a log line.
var usersigRe = regexp.MustCompile(`(?i)usersig=([^&\s"\\]+)`)

// secretsIn reports a log that carries the IM secret key or an unredacted UserSig (docs/operations.md).
func secretsIn(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if bytes.Contains(b, []byte(simKey)) {
		return errors.New("contains the IM secret key")
	}
	for _, m := range usersigRe.FindAllSubmatch(b, -1) {
		if string(m[1]) != "REDACTED" {
			return fmt.Errorf("contains a UserSig: %.40s…", m[0])
		}
	}
	return nil
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// kafkaLocal runs scripts/kafka-local.sh (as test-kafka.sh exported it) with args, skipping the
// test when the broker is not one this suite may stop.
func kafkaLocal(t *testing.T, ctx context.Context, args ...string) {
	t.Helper()
	script := os.Getenv("CHATGROUPD_KAFKA_LOCAL")
	if script == "" {
		t.Skip("CHATGROUPD_KAFKA_LOCAL not set: the broker is not ours to restart (run via scripts/test-kafka.sh)")
	}
	cmd := exec.CommandContext(ctx, script, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kafka-local.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("kafka-local.sh %s: %s", strings.Join(args, " "), strings.TrimSpace(string(out)))
}
