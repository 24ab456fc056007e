package event_test

import (
	"context"
	"log"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/event"
)

// A Go producer writes with event.NewWriter: keyed by account and partitioned with murmur2 like
// the Java client, so chatgroupd's replays and its misrouting check agree with it. (Compiled, not
// run: it needs a broker.)
func ExampleNewWriter() {
	w := event.NewWriter("chat.contact-groups", "kafka-0:9092", "kafka-1:9092")
	defer w.Close()
	e := event.Event{EventID: "e-1", EventType: event.TypeContactGroupCreated, FromAccount: "user15",
		GroupName: "work", Contacts: []event.Contact{{Type: event.ContactC2C, ToAccount: "user0"}}}
	value, err := e.Marshal()
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, kafka.Message{Key: e.Key(), Value: value}); err != nil {
		log.Fatal(err)
	}
}
