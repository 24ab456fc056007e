package event

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// goodV2 holds one valid record of each contract-v2 type, and the Event Parse must make of it.
var goodV2 = []struct {
	value string
	want  Event
}{
	{`{"event_id":"e2","event_type":"contact_group.renamed","from_account":"alice","seq":4,"occurred_at":"2026-11-29T10:01:00Z",
"group_name":"friends","new_group_name":"best friends","future_field":true}`,
		Event{EventID: "e2", EventType: TypeContactGroupRenamed, FromAccount: "alice", Seq: 4,
			OccurredAt: time.Date(2026, 11, 29, 10, 1, 0, 0, time.UTC), GroupName: "friends", NewGroupName: "best friends"}},
	{`{"event_id":"e3","event_type":"contact_group.contacts_added","from_account":"alice","seq":5,"group_name":"best friends",
"contacts":[{"type":1,"to_account":"carol"},{"type":2,"to_group_id":"@TGS#2"}]}`,
		Event{EventID: "e3", EventType: TypeContactGroupContactsAdded, FromAccount: "alice", Seq: 5, GroupName: "best friends",
			Contacts: []Contact{{Type: 1, ToAccount: "carol"}, {Type: 2, ToGroupID: "@TGS#2"}}}},
	{`{"event_id":"e4","event_type":"contact_group.contacts_removed","from_account":"alice","seq":6,"group_name":"best friends",
"contacts":[{"type":1,"to_account":"bob"}]}`,
		Event{EventID: "e4", EventType: TypeContactGroupContactsRemoved, FromAccount: "alice", Seq: 6, GroupName: "best friends",
			Contacts: []Contact{{Type: 1, ToAccount: "bob"}}}},
	{`{"event_id":"e5","event_type":"contact_group.deleted","from_account":"alice","seq":7,"group_name":"best friends"}`,
		Event{EventID: "e5", EventType: TypeContactGroupDeleted, FromAccount: "alice", Seq: 7, GroupName: "best friends"}},
	// Fields a type doesn't use are ignored like unknown fields, whatever they hold or however
	// they are spelled.
	{`{"event_id":"e6","event_type":"contact_group.renamed","from_account":"a","group_name":"g","new_group_name":"h",
"contacts":7,"CONTACTS":[{"TYPE":1}]}`,
		Event{EventID: "e6", EventType: TypeContactGroupRenamed, FromAccount: "a", GroupName: "g", NewGroupName: "h"}},
	{`{"event_id":"e7","event_type":"contact_group.created","from_account":"a","group_name":"g","new_group_name":7,
"NEW_GROUP_NAME":"x","contacts":[{"type":1,"to_account":"b"}]}`,
		Event{EventID: "e7", EventType: TypeContactGroupCreated, FromAccount: "a", GroupName: "g", Contacts: []Contact{{Type: 1, ToAccount: "b"}}}},
	{`{"event_id":"e8","event_type":"contact_group.contacts_added","from_account":"a","group_name":"g","new_group_name":"x",
"contacts":[{"type":1,"to_account":"b"}]}`,
		Event{EventID: "e8", EventType: TypeContactGroupContactsAdded, FromAccount: "a", GroupName: "g", Contacts: []Contact{{Type: 1, ToAccount: "b"}}}},
	// A deleted event may carry contacts only as null or [] (what some serializers write for "none").
	{`{"event_id":"e9","event_type":"contact_group.deleted","from_account":"a","group_name":"g","contacts":null}`,
		Event{EventID: "e9", EventType: TypeContactGroupDeleted, FromAccount: "a", GroupName: "g"}},
	{`{"event_id":"e10","event_type":"contact_group.deleted","from_account":"a","group_name":"g","contacts":[ ],"new_group_name":5}`,
		Event{EventID: "e10", EventType: TypeContactGroupDeleted, FromAccount: "a", GroupName: "g"}},
	{`{"event_id":"e11","event_type":"contact_group.renamed","from_account":"a","group_name":"g","new_group_name":"` + strings.Repeat("n", 32) + `"}`,
		Event{EventID: "e11", EventType: TypeContactGroupRenamed, FromAccount: "a", GroupName: "g", NewGroupName: strings.Repeat("n", 32)}},
	// Names are compared byte for byte: a change of case is a rename.
	{`{"event_id":"e12","event_type":"contact_group.renamed","from_account":"a","group_name":"work","new_group_name":"Work"}`,
		Event{EventID: "e12", EventType: TypeContactGroupRenamed, FromAccount: "a", GroupName: "work", NewGroupName: "Work"}},
}

func TestParseV2Valid(t *testing.T) {
	for _, tc := range goodV2 {
		t.Run(tc.want.EventID, func(t *testing.T) {
			e, err := Parse([]byte(tc.value))
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(&tc.want, e); d != "" {
				t.Fatalf("Parse (-want +got):\n%s", d)
			}
		})
	}
}

// v2 builds a record of type typ with the common fields and rest (which starts with a comma).
func v2(typ, rest string) string {
	return `{"event_id":"e","event_type":"` + typ + `","from_account":"a","group_name":"g"` + rest + `}`
}

const (
	renamed = "contact_group.renamed"
	added   = "contact_group.contacts_added"
	removed = "contact_group.contacts_removed"
	deleted = "contact_group.deleted"
)

// invalidV2Cases is every way a contract-v2 event can break its type's rules. The schema test
// reuses it; names starting "schema can't:" are rules JSON Schema can't express.
var invalidV2Cases = []struct {
	name, value, field, reason string
}{
	{"renamed without new name", v2(renamed, ``), "new_group_name", "required field missing"},
	{"renamed with null new name", v2(renamed, `,"new_group_name":null`), "new_group_name", "required field missing"},
	{"renamed to empty", v2(renamed, `,"new_group_name":""`), "new_group_name", "required, must be 1-32 bytes"},
	{"renamed to 33 bytes", v2(renamed, `,"new_group_name":"`+strings.Repeat("n", 33)+`"`), "new_group_name", "33 bytes, at most 32 allowed"},
	{"renamed to a number", v2(renamed, `,"new_group_name":5`), "new_group_name", "wrong JSON type"},
	{"renamed to RLO", v2(renamed, `,"new_group_name":"\u202eexe"`), "new_group_name", "forbidden character U+202E"},
	{"renamed to newline", v2(renamed, `,"new_group_name":"a\nb"`), "new_group_name", "forbidden character U+000A"},
	{"schema can't: renamed to its own name", v2(renamed, `,"new_group_name":"g"`), "new_group_name", `equals group_name "g"`},
	{"renamed with case-variant new name", v2(renamed, `,"new_group_name":"h","New_Group_Name":"evil"`), "new_group_name", "only in case"},
	{"duplicate new name", v2(renamed, `,"new_group_name":"h","new_group_name":"i"`), "new_group_name", "duplicate key"},
	{"renamed without group_name", `{"event_id":"e","event_type":"contact_group.renamed","from_account":"a","new_group_name":"h"}`, "group_name", "required field missing"},
	{"renamed with bad seq", v2(renamed, `,"new_group_name":"h","seq":0`), "seq", ">= 1"},
	{"added without contacts", v2(added, ``), "contacts", "required field missing"},
	{"added with no contacts", v2(added, `,"contacts":[]`), "contacts", "must have 1-100 items, got 0"},
	{"added 101 contacts", v2(added, `,"contacts":[`+strings.Repeat(`{"type":1,"to_account":"b"},`, 100)+`{"type":1,"to_account":"b"}]`), "contacts", "got 101"},
	{"added contact without account", v2(added, `,"contacts":[{"type":1}]`), "contacts[0].to_account", "required"},
	{"added case-variant contacts", v2(added, `,"contacts":[{"type":1,"to_account":"b"}],"Contacts":[]`), "contacts", "only in case"},
	{"removed contact type 3", v2(removed, `,"contacts":[{"type":3,"to_account":"b"}]`), "contacts[0].type", "got 3"},
	{"removed contacts not an array", v2(removed, `,"contacts":{"type":1}`), "contacts", "wrong JSON type"},
	{"removed case-variant contact key", v2(removed, `,"contacts":[{"type":1,"to_account":"b","To_Account":"c"}]`), "contacts[0].to_account", "only in case"},
	{"duplicate removed contacts", v2(removed, `,"contacts":[{"type":1,"to_account":"b"}],"contacts":[{"type":1,"to_account":"c"}]`), "contacts", "duplicate key"},
	{"deleted with contacts", v2(deleted, `,"contacts":[{"type":1,"to_account":"b"}]`), "contacts", "must be absent or empty for contact_group.deleted"},
	{"deleted with contacts object", v2(deleted, `,"contacts":{}`), "contacts", "must be absent or empty"},
	{"deleted with contacts number", v2(deleted, `,"contacts":0`), "contacts", "must be absent or empty"},
	{"deleted with case-variant contacts", v2(deleted, `,"CONTACTS":[{"type":1,"to_account":"b"}]`), "contacts", "only in case"},
	{"deleted without group_name", `{"event_id":"e","event_type":"contact_group.deleted","from_account":"a"}`, "group_name", "required field missing"},
	{"deleted with NUL in account", `{"event_id":"e","event_type":"contact_group.deleted","from_account":"a\u0000","group_name":"g"}`, "from_account", "U+0000"},
	{"case-variant type", `{"event_id":"e","event_type":"Contact_Group.Deleted","from_account":"a","group_name":"g"}`, "event_type", "unknown type"},
}

func TestParseV2Invalid(t *testing.T) {
	for _, tc := range invalidV2Cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.value))
			var ve *ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want a *ValidationError", err)
			}
			if ve.Field != tc.field || !strings.Contains(ve.Reason, tc.reason) {
				t.Fatalf("got field %q reason %q, want field %q reason containing %q", ve.Field, ve.Reason, tc.field, tc.reason)
			}
		})
	}
}

// TestUnknownTypeNamesKnownOnes: the dead letter of a mistyped event_type tells the producer
// which values exist.
func TestUnknownTypeNamesKnownOnes(t *testing.T) {
	_, err := Parse([]byte(v2("contact_group.renames", `,"new_group_name":"h"`)))
	want := `invalid event: event_type: unknown type "contact_group.renames" (known: contact_group.created, ` +
		`contact_group.renamed, contact_group.contacts_added, contact_group.contacts_removed or contact_group.deleted)`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant  %s", err, want)
	}
}

// TestValidateTypedEvent: a producer that fills a field its type doesn't use hears about it from
// Validate (Marshal) instead of having it silently ignored by chatgroupd.
func TestValidateTypedEvent(t *testing.T) {
	c := []Contact{ToAccount("b")}
	for _, tc := range []struct {
		name         string
		e            *Event
		field, words string
	}{
		{"created with new name", &Event{EventID: "e", EventType: TypeContactGroupCreated, FromAccount: "a", GroupName: "g", Contacts: c, NewGroupName: "h"},
			"new_group_name", "only contact_group.renamed has a new name, not contact_group.created"},
		{"added with new name", func() *Event { e := NewContactsAdded("e", "a", "g", c...); e.NewGroupName = "h"; return e }(), "new_group_name", "not contact_group.contacts_added"},
		{"deleted with new name", func() *Event { e := NewDeleted("e", "a", "g"); e.NewGroupName = "h"; return e }(), "new_group_name", "not contact_group.deleted"},
		{"renamed with contacts", func() *Event { e := NewRenamed("e", "a", "g", "h"); e.Contacts = c; return e }(), "contacts", "a rename keeps the group's conversations"},
		{"deleted with contacts", func() *Event { e := NewDeleted("e", "a", "g"); e.Contacts = c; return e }(), "contacts", "send contact_group.contacts_removed"},
		{"removed without contacts", NewContactsRemoved("e", "a", "g"), "contacts", "got 0"},
		{"renamed to same", NewRenamed("e", "a", "g", "g"), "new_group_name", "equals group_name"},
		{"renamed without new name", NewRenamed("e", "a", "g", ""), "new_group_name", "required"},
		{"empty type", &Event{EventID: "e", FromAccount: "a", GroupName: "g"}, "event_type", `unknown type ""`},
		{"group contact with account", NewContactsAdded("e", "a", "g", Contact{Type: ContactGroup, ToAccount: "x", ToGroupID: "y"}), "contacts[0].to_account", "not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.e.Validate()
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Field != tc.field || !strings.Contains(ve.Reason, tc.words) {
				t.Fatalf("Validate = %v, want field %q reason containing %q", err, tc.field, tc.words)
			}
			if _, err := tc.e.Marshal(); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Marshal = %v, want ErrInvalid", err)
			}
			if _, err := tc.e.Message(); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Message = %v, want ErrInvalid", err)
			}
		})
	}
}

// TestConstructorsRoundTrip: what each constructor builds marshals to a value Parse turns back
// into the same event, keyed by the account, with the call the type maps to.
func TestConstructorsRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 30, 22, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		e    *Event
		call Call
	}{
		{NewCreated("c1", "alice", "work", ToAccount("bob"), ToGroup("@TGS#1")), Call{API: APICreate}},
		{NewRenamed("r1", "alice", "work", "office"), Call{API: APIUpdate, UpdateGroupType: 1}},
		{NewContactsAdded("a1", "alice", "office", ToAccount("carol")), Call{API: APIUpdate, UpdateGroupType: 2, ContactOptType: 1}},
		{NewContactsRemoved("d1", "alice", "office", ToAccount("bob")), Call{API: APIUpdate, UpdateGroupType: 2, ContactOptType: 2}},
		{NewDeleted("x1", "alice", "office"), Call{API: APIDelete}},
	} {
		t.Run(string(tc.e.EventType), func(t *testing.T) {
			tc.e.Seq, tc.e.OccurredAt = 9, at
			m, err := tc.e.Message()
			if err != nil {
				t.Fatal(err)
			}
			if string(m.Key) != "alice" {
				t.Fatalf("key %q", m.Key)
			}
			back, err := Parse(m.Value)
			if err != nil {
				t.Fatalf("Parse(%s) = %v", m.Value, err)
			}
			if d := cmp.Diff(tc.e, back); d != "" {
				t.Fatalf("round trip (-built +parsed):\n%s", d)
			}
			if back.Call() != tc.call {
				t.Fatalf("Call() = %+v, want %+v", back.Call(), tc.call)
			}
		})
	}
}

func TestTypes(t *testing.T) {
	ts := Types()
	if len(ts) != 5 || ts[0] != TypeContactGroupCreated {
		t.Fatalf("Types() = %v", ts)
	}
	seen := map[Call]bool{}
	for _, typ := range ts {
		c, ok := typ.Call()
		if !ok || !typ.Known() || seen[c] {
			t.Fatalf("%s: call %+v ok %v known %v (each type has its own call)", typ, c, ok, typ.Known())
		}
		seen[c] = true
		if typ.UsesContacts() != (c.API == APICreate || c.UpdateGroupType == UpdateGroupTypeContacts) {
			t.Fatalf("%s: UsesContacts %v disagrees with its call %+v", typ, typ.UsesContacts(), c)
		}
	}
	for _, typ := range []Type{"", "contact_group.archived", "CONTACT_GROUP.CREATED"} {
		if c, ok := typ.Call(); ok || typ.Known() || c != (Call{}) {
			t.Fatalf("%q: known %v call %+v", typ, typ.Known(), c)
		}
		if (&Event{EventType: typ}).Call() != (Call{}) {
			t.Fatalf("%q: Event.Call not zero", typ)
		}
	}
}
