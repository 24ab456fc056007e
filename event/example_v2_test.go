package event_test

import (
	"fmt"
	"time"

	"github.com/chatgroupd/chatgroupd/event"
)

// The life of one group, as a producer writes it: every event of the account carries the next
// seq, and names the group as it is before the event.

// A user creates a group with two conversations.
func ExampleNewCreated() {
	e := event.NewCreated("ev-101", "user15", "work", event.ToAccount("user0"), event.ToGroup("@TGS#2C5SZEAEF"))
	e.Seq = 1
	e.OccurredAt = time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	m, err := e.Message()
	if err != nil {
		fmt.Println("invalid:", err)
		return
	}
	fmt.Printf("key=%s\nvalue=%s\n", m.Key, m.Value)
	// Output:
	// key=user15
	// value={"event_id":"ev-101","event_type":"contact_group.created","from_account":"user15","seq":1,"occurred_at":"2026-11-30T09:00:00Z","group_name":"work","contacts":[{"type":1,"to_account":"user0"},{"type":2,"to_group_id":"@TGS#2C5SZEAEF"}]}
}

// The user renames it; the new name must differ from the old.
func ExampleNewRenamed() {
	e := event.NewRenamed("ev-102", "user15", "work", "office")
	e.Seq = 2
	v, err := e.Marshal()
	fmt.Printf("%s %v\n", v, err)
	_, err = event.NewRenamed("ev-103", "user15", "office", "office").Marshal()
	fmt.Println(err)
	// Output:
	// {"event_id":"ev-102","event_type":"contact_group.renamed","from_account":"user15","seq":2,"group_name":"work","new_group_name":"office"} <nil>
	// invalid event: new_group_name: equals group_name "office"; a rename must change the name
}

// The user moves a conversation into the (renamed) group.
func ExampleNewContactsAdded() {
	e := event.NewContactsAdded("ev-104", "user15", "office", event.ToAccount("user7"))
	e.Seq = 3
	v, err := e.Marshal()
	fmt.Printf("%s %v\n", v, err)
	// Output:
	// {"event_id":"ev-104","event_type":"contact_group.contacts_added","from_account":"user15","seq":3,"group_name":"office","contacts":[{"type":1,"to_account":"user7"}]} <nil>
}

// The user takes a conversation out again.
func ExampleNewContactsRemoved() {
	e := event.NewContactsRemoved("ev-105", "user15", "office", event.ToAccount("user0"))
	e.Seq = 4
	v, err := e.Marshal()
	fmt.Printf("%s %v\n", v, err)
	// Output:
	// {"event_id":"ev-105","event_type":"contact_group.contacts_removed","from_account":"user15","seq":4,"group_name":"office","contacts":[{"type":1,"to_account":"user0"}]} <nil>
}

// The user deletes the group. A deleted event lists no contacts: one that does is invalid, since
// its producer may have meant contacts_removed.
func ExampleNewDeleted() {
	e := event.NewDeleted("ev-106", "user15", "office")
	e.Seq = 5
	v, err := e.Marshal()
	fmt.Printf("%s %v\n", v, err)
	_, err = event.Parse([]byte(`{"event_id":"ev-107","event_type":"contact_group.deleted","from_account":"user15",` +
		`"group_name":"office","contacts":[{"type":1,"to_account":"user7"}]}`))
	fmt.Println(err)
	// Output:
	// {"event_id":"ev-106","event_type":"contact_group.deleted","from_account":"user15","seq":5,"group_name":"office"} <nil>
	// invalid event: contacts: must be absent or empty for contact_group.deleted, which deletes the whole group (to take conversations out of a group, send contact_group.contacts_removed)
}

// chatgroupd applies each type with its own IM call.
func ExampleType_Call() {
	for _, t := range event.Types() {
		c, _ := t.Call()
		fmt.Printf("%-31s %s %d %d\n", t, c.API, c.UpdateGroupType, c.ContactOptType)
	}
	// Output:
	// contact_group.created           create_contact_group 0 0
	// contact_group.renamed           update_contact_group 1 0
	// contact_group.contacts_added    update_contact_group 2 1
	// contact_group.contacts_removed  update_contact_group 2 2
	// contact_group.deleted           del_contact_group 0 0
}
