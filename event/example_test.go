package event_test

import (
	"fmt"
	"time"

	"github.com/chatgroupd/chatgroupd/event"
)

// A producer builds an event, validates and marshals it, and keys the record by account.
func Example() {
	e := event.Event{
		EventID:     "6f1c2a9e-0c55-4a1e-9b7e-2f3f8c1d4e77",
		EventType:   event.TypeContactGroupCreated,
		FromAccount: "user15",
		Seq:         42,
		OccurredAt:  time.Date(2026, 11, 29, 8, 30, 0, 0, time.UTC),
		GroupName:   "work",
		Contacts: []event.Contact{
			{Type: event.ContactC2C, ToAccount: "user0"},
			{Type: event.ContactGroup, ToGroupID: "@TGS#2C5SZEAEF"},
		},
	}
	value, err := e.Marshal()
	if err != nil {
		fmt.Println("invalid:", err)
		return
	}
	fmt.Printf("key=%s\nvalue=%s\n", e.Key(), value)

	_, err = event.Parse([]byte(`{"event_id":"x","event_type":"contact_group.created","from_account":"user15","group_name":"` +
		"this name is longer than 32 bytes" + `","contacts":[{"type":1,"to_account":"user0"}]}`))
	fmt.Println(err)
	// Output:
	// key=user15
	// value={"event_id":"6f1c2a9e-0c55-4a1e-9b7e-2f3f8c1d4e77","event_type":"contact_group.created","from_account":"user15","seq":42,"occurred_at":"2026-11-29T08:30:00Z","group_name":"work","contacts":[{"type":1,"to_account":"user0"},{"type":2,"to_group_id":"@TGS#2C5SZEAEF"}]}
	// invalid event: group_name: 33 bytes, at most 32 allowed
}
