package event

import (
	"slices"
	"strings"
)

// Type is an event_type value: what the user did to a conversation group.
type Type string

// The event types. Contract v1 has only TypeContactGroupCreated; v2 adds the other four, which
// name the group by its name before the event (group_name) and are applied in the same per-account
// order as creates.
const (
	// TypeContactGroupCreated: the user created a group with contacts.
	TypeContactGroupCreated Type = "contact_group.created"
	// TypeContactGroupRenamed: the user renamed group_name to new_group_name.
	TypeContactGroupRenamed Type = "contact_group.renamed"
	// TypeContactGroupContactsAdded: the user moved contacts into the group.
	TypeContactGroupContactsAdded Type = "contact_group.contacts_added"
	// TypeContactGroupContactsRemoved: the user took contacts out of the group.
	TypeContactGroupContactsRemoved Type = "contact_group.contacts_removed"
	// TypeContactGroupDeleted: the user deleted the group.
	TypeContactGroupDeleted Type = "contact_group.deleted"
)

// Types returns the known event types, v1's first. Metrics that count events by type use exactly
// these label values.
func Types() []Type {
	return []Type{TypeContactGroupCreated, TypeContactGroupRenamed, TypeContactGroupContactsAdded,
		TypeContactGroupContactsRemoved, TypeContactGroupDeleted}
}

// Known reports whether t is one of Types.
func (t Type) Known() bool { return slices.Contains(Types(), t) }

// String returns the event_type value.
func (t Type) String() string { return string(t) }

// UsesContacts reports whether events of type t carry contacts (1–100).
func (t Type) UsesContacts() bool {
	return t == TypeContactGroupCreated || t == TypeContactGroupContactsAdded || t == TypeContactGroupContactsRemoved
}

// API names of the IM REST calls the event types map to; the same strings as the im package's
// API constants and the api label of chatgroupd's metrics.
const (
	APICreate = "create_contact_group"
	APIUpdate = "update_contact_group"
	APIDelete = "del_contact_group"
)

// Values of the update_contact_group request fields a Call sets.
const (
	UpdateGroupTypeRename   = 1 // UpdateGroupType: OldGroupName → NewGroupName
	UpdateGroupTypeContacts = 2 // UpdateGroupType: add or remove conversations
	ContactOptAdd           = 1 // ContactOptType of each ContactUpdateItem
	ContactOptRemove        = 2
)

// Call is the IM REST call an event type maps to, with the request fields that select the
// operation. The dispatcher builds the request from it and the event's fields.
type Call struct {
	// API is APICreate, APIUpdate or APIDelete.
	API string
	// UpdateGroupType is UpdateGroupTypeRename or UpdateGroupTypeContacts for APIUpdate, else 0.
	UpdateGroupType int
	// ContactOptType is ContactOptAdd or ContactOptRemove for UpdateGroupTypeContacts, else 0.
	ContactOptType int
}

// Call returns the call events of type t map to; ok is false for an unknown type.
func (t Type) Call() (c Call, ok bool) {
	switch t {
	case TypeContactGroupCreated:
		return Call{API: APICreate}, true
	case TypeContactGroupRenamed:
		return Call{API: APIUpdate, UpdateGroupType: UpdateGroupTypeRename}, true
	case TypeContactGroupContactsAdded:
		return Call{API: APIUpdate, UpdateGroupType: UpdateGroupTypeContacts, ContactOptType: ContactOptAdd}, true
	case TypeContactGroupContactsRemoved:
		return Call{API: APIUpdate, UpdateGroupType: UpdateGroupTypeContacts, ContactOptType: ContactOptRemove}, true
	case TypeContactGroupDeleted:
		return Call{API: APIDelete}, true
	}
	return Call{}, false
}

// Call returns the call e maps to. e must be valid (Parse returns only valid events): an unknown
// type gives the zero Call.
func (e *Event) Call() Call {
	c, _ := e.EventType.Call()
	return c
}

// typeList is the known types for messages: "a, b, c, d or e".
func typeList() string {
	ts := Types()
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = string(t)
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}
