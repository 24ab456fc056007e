package watermillpeer

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/bench/peer"
	"github.com/chatgroupd/chatgroupd/bench/peer/peertest"
	"github.com/chatgroupd/chatgroupd/im"
)

func payload(t *testing.T, id, group string) []byte {
	t.Helper()
	ev := peertest.Event(id, group)
	v, err := ev.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestRouterRetriesDedupesAndPoisons(t *testing.T) {
	transient := &im.Error{Class: im.ClassTransient, Code: 70500}
	api := peertest.NewScriptedAPI(map[string][]error{
		"flaky":    {transient, transient},
		"rejected": {&im.Error{Class: im.ClassPermanent, Code: 50001}},
	})
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
	for api.Calls("flaky") < 3 && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if api.Calls("ok") != 1 || api.Calls("flaky") != 3 || api.Calls("rejected") != 1 {
		t.Fatalf("calls ok %d, flaky %d, rejected %d; want 1, 3, 1", api.Calls("ok"), api.Calls("flaky"), api.Calls("rejected"))
	}
}
