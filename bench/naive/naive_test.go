package naive

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/bench/peer"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
)

// fakeAPI answers each create from a script keyed by group name; an exhausted script succeeds.
type fakeAPI struct {
	mu     sync.Mutex
	script map[string][]error
	calls  map[string]int
}

func (f *fakeAPI) CreateContactGroup(_ context.Context, req *im.CreateRequest) (*im.CreateResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	name := req.GroupContactItem[0].GroupName
	f.calls[name]++
	if s := f.script[name]; len(s) > 0 {
		f.script[name] = s[1:]
		return nil, s[0]
	}
	return &im.CreateResponse{}, nil
}

type fakeDLQ struct{ msgs []kafka.Message }

func (f *fakeDLQ) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	f.msgs = append(f.msgs, msgs...)
	return nil
}

// fakeReader hands out msgs, then calls drained and blocks until ctx ends.
type fakeReader struct {
	msgs      []kafka.Message
	committed []int64
	drained   func()
}

func (f *fakeReader) FetchMessage(ctx context.Context) (kafka.Message, error) {
	if len(f.msgs) == 0 {
		f.drained()
		<-ctx.Done()
		return kafka.Message{}, ctx.Err()
	}
	m := f.msgs[0]
	f.msgs = f.msgs[1:]
	return m, nil
}

func (f *fakeReader) CommitMessages(_ context.Context, msgs ...kafka.Message) error {
	for _, m := range msgs {
		f.committed = append(f.committed, m.Offset)
	}
	return nil
}

func record(t *testing.T, offset int64, group string) kafka.Message {
	t.Helper()
	ev := event.Event{EventID: "e-" + group, EventType: event.TypeContactGroupCreated, FromAccount: "alice",
		GroupName: group, Contacts: []event.Contact{{Type: event.ContactC2C, ToAccount: "bob"}}}
	v, err := ev.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return kafka.Message{Offset: offset, Key: ev.Key(), Value: v}
}

func TestWorkerRetriesDeadLettersAndCommitsInOrder(t *testing.T) {
	transient := &im.Error{Class: im.ClassTransient, Code: 70500}
	api := &fakeAPI{calls: map[string]int{}, script: map[string][]error{
		"flaky":    {transient, transient},                                             // applied on the 3rd attempt
		"rejected": {&im.Error{Class: im.ClassPermanent, Code: 50001}},                 // dead-lettered at once
		"hopeless": {transient, transient, transient, transient, transient, transient}, // past MaxRetries
	}}
	dlq := &fakeDLQ{}
	cfg := peer.Config{MaxRetries: 3, RateLimit: peer.Unlimited}
	cfg.Defaults()
	var slept []time.Duration
	w := &worker{cfg: cfg, api: api, dlq: dlq, lim: newLimiter(cfg.RateLimit), log: zap.NewNop(),
		sleep: func(_ context.Context, d time.Duration) error { slept = append(slept, d); return nil }}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r := &fakeReader{drained: cancel, msgs: []kafka.Message{
		record(t, 0, "ok"), record(t, 1, "flaky"), record(t, 2, "rejected"), record(t, 3, "hopeless"),
		{Offset: 4, Key: []byte("x"), Value: []byte("{not json")},
	}}
	if err := w.consume(ctx, r); err != nil {
		t.Fatalf("consume: %v", err)
	}
	if want := []int64{0, 1, 2, 3, 4}; len(r.committed) != 5 || r.committed[4] != 4 {
		t.Fatalf("committed %v, want %v", r.committed, want)
	}
	if api.calls["ok"] != 1 || api.calls["flaky"] != 3 || api.calls["rejected"] != 1 || api.calls["hopeless"] != 4 {
		t.Fatalf("calls %v", api.calls)
	}
	reasons := []string{}
	for _, m := range dlq.msgs {
		for _, h := range m.Headers {
			if h.Key == "dlq-reason" {
				reasons = append(reasons, string(h.Value))
			}
		}
	}
	if len(reasons) != 3 || reasons[0] != "rejected" || reasons[1] != "rejected" || reasons[2] != "invalid" {
		t.Fatalf("dead letters %v, want rejected, rejected (exhausted), invalid", reasons)
	}
	if len(slept) != 5 || slept[0] != 100*time.Millisecond || slept[1] != 200*time.Millisecond {
		t.Fatalf("backoffs %v, want 100ms, 200ms, then 100ms, 200ms, 400ms", slept)
	}
}

func TestConsumeReturnsFetchErrors(t *testing.T) {
	w := &worker{log: zap.NewNop()}
	boom := errors.New("boom")
	err := w.consume(context.Background(), errReader{boom})
	if !errors.Is(err, boom) {
		t.Fatalf("consume = %v, want %v", err, boom)
	}
}

type errReader struct{ err error }

func (e errReader) FetchMessage(context.Context) (kafka.Message, error) {
	return kafka.Message{}, e.err
}
func (e errReader) CommitMessages(context.Context, ...kafka.Message) error {
	return nil
}
