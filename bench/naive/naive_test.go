package naive

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/bench/peer"
	"github.com/chatgroupd/chatgroupd/bench/peer/peertest"
	"github.com/chatgroupd/chatgroupd/im"
)

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
	ev := peertest.Event("e-"+group, group)
	v, err := ev.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return kafka.Message{Offset: offset, Key: ev.Key(), Value: v}
}

func TestWorkerRetriesDeadLettersAndCommitsInOrder(t *testing.T) {
	transient := &im.Error{Class: im.ClassTransient, Code: 70500}
	api := peertest.NewScriptedAPI(map[string][]error{
		"flaky":    {transient, transient},                                             // applied on the 3rd attempt
		"rejected": {&im.Error{Class: im.ClassPermanent, Code: 50001}},                 // dead-lettered at once
		"hopeless": {transient, transient, transient, transient, transient, transient}, // past MaxRetries
	})
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
	if api.Calls("ok") != 1 || api.Calls("flaky") != 3 || api.Calls("rejected") != 1 || api.Calls("hopeless") != 4 {
		t.Fatalf("calls ok %d, flaky %d, rejected %d, hopeless %d; want 1, 3, 1, 4",
			api.Calls("ok"), api.Calls("flaky"), api.Calls("rejected"), api.Calls("hopeless"))
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
