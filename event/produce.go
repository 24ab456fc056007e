package event

import "github.com/segmentio/kafka-go"

// The constructors below are the producer's side of the contract: one per type, taking exactly
// that type's fields. Set Seq (the account's next sequence number) and OccurredAt on the result
// when the producer has them; Marshal or Message validates.

// NewCreated returns the event for "account created the group name with contacts".
func NewCreated(eventID, account, name string, contacts ...Contact) *Event {
	return &Event{EventID: eventID, EventType: TypeContactGroupCreated, FromAccount: account, GroupName: name, Contacts: contacts}
}

// NewRenamed returns the event for "account renamed its group oldName to newName".
func NewRenamed(eventID, account, oldName, newName string) *Event {
	return &Event{EventID: eventID, EventType: TypeContactGroupRenamed, FromAccount: account, GroupName: oldName, NewGroupName: newName}
}

// NewContactsAdded returns the event for "account moved contacts into its group name".
func NewContactsAdded(eventID, account, name string, contacts ...Contact) *Event {
	return &Event{EventID: eventID, EventType: TypeContactGroupContactsAdded, FromAccount: account, GroupName: name, Contacts: contacts}
}

// NewContactsRemoved returns the event for "account took contacts out of its group name".
func NewContactsRemoved(eventID, account, name string, contacts ...Contact) *Event {
	return &Event{EventID: eventID, EventType: TypeContactGroupContactsRemoved, FromAccount: account, GroupName: name, Contacts: contacts}
}

// NewDeleted returns the event for "account deleted its group name".
func NewDeleted(eventID, account, name string) *Event {
	return &Event{EventID: eventID, EventType: TypeContactGroupDeleted, FromAccount: account, GroupName: name}
}

// ToAccount is the one-to-one conversation with account.
func ToAccount(account string) Contact { return Contact{Type: ContactC2C, ToAccount: account} }

// ToGroup is the group conversation groupID ("@TGS#…").
func ToGroup(groupID string) Contact { return Contact{Type: ContactGroup, ToGroupID: groupID} }

// Message validates e and returns the Kafka record to produce: keyed by account (Key), the
// marshalled event as value. Write it with a writer from NewWriter.
func (e *Event) Message() (kafka.Message, error) {
	v, err := e.Marshal()
	if err != nil {
		return kafka.Message{}, err
	}
	return kafka.Message{Key: e.Key(), Value: v}, nil
}
