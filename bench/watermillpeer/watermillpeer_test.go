package watermillpeer

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/bench/peer"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
)

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

func (f *fakeAPI) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[name]
}

func payload(t *testing.T, id, group string) []byte {
	t.Helper()
	ev := event.Event{EventID: id, EventType: event.TypeContactGroupCreated, FromAccount: "alice",
		GroupName: group, Contacts: []event.Contact{{Type: event.ContactC2C, ToAccount: "bob"}}}
	v, err := ev.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestRouterRetriesDedupesAndPoisons(t *testing.T) {
	transient := &im.Error{Class: im.ClassTransient, Code: 70500}
	api := &fakeAPI{calls: map[string]int{}, script: map[string][]error{
		"flaky":    {transient, transient},
		"rejected": {&im.Error{Class: im.ClassPermanent, Code: 50001}},
	}}
	ps := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, watermill.NopLogger{})
	defer ps.Close()
	cfg := peer.Config{Topic: "events", Backoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, RateLimit: 1000}
	cfg.Defaults()
	r, err := NewRouter(cfg, api, ps, ps, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	poisoned, err := ps.Subscribe(context.Background(), cfg.DLQTopic)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*message.Message{
		message.NewMessage("1", payload(t, "e1", "ok")),
		message.NewMessage("2", payload(t, "e1", "ok")), // same event id: dropped
		message.NewMessage("3", payload(t, "e2", "flaky")),
		message.NewMessage("4", payload(t, "e3", "rejected")),
		message.NewMessage("5", []byte("{not json")),
	} {
		if err := ps.Publish(cfg.Topic, m); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var bad []string
	for len(bad) < 2 {
		select {
		case m := <-poisoned:
			bad = append(bad, string(m.Payload))
			m.Ack()
		case <-ctx.Done():
			t.Fatalf("poison queue got %d messages, want 2", len(bad))
		}
	}
	for api.count("flaky") < 3 && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if api.count("ok") != 1 || api.count("flaky") != 3 || api.count("rejected") != 1 {
		t.Fatalf("calls %v, want ok 1, flaky 3, rejected 1", api.calls)
	}
}
