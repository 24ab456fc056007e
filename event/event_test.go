package event

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const good = `{"event_id":"e1","event_type":"contact_group.created","from_account":"alice","seq":3,
"occurred_at":"2026-11-29T10:00:00Z","group_name":"friends",
"contacts":[{"type":1,"to_account":"bob"},{"type":2,"to_group_id":"@TGS#1"}],"future_field":{"x":1}}`

func TestParseValid(t *testing.T) {
	e, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	want := Event{EventID: "e1", EventType: TypeContactGroupCreated, FromAccount: "alice", Seq: 3,
		OccurredAt: time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC), GroupName: "friends",
		Contacts: []Contact{{Type: 1, ToAccount: "bob"}, {Type: 2, ToGroupID: "@TGS#1"}}}
	if e.EventID != want.EventID || e.FromAccount != want.FromAccount || e.Seq != want.Seq ||
		!e.OccurredAt.Equal(want.OccurredAt) || e.GroupName != want.GroupName || len(e.Contacts) != 2 ||
		e.Contacts[0] != want.Contacts[0] || e.Contacts[1] != want.Contacts[1] {
		t.Fatalf("got %+v, want %+v", e, want)
	}
	if string(e.Key()) != "alice" {
		t.Fatalf("key %q", e.Key())
	}
}

// invalidCases is every way CONTRACT §1 can be broken, with the field and words the reason must
// carry. The schema test reuses it.
var invalidCases = []struct {
	name, value, field, reason string
}{
	{"bad json", `{"event_id":`, "", "bad JSON"},
	{"not an object", `[1,2]`, "", "not a JSON object"},
	{"empty", ``, "", "not a JSON object"},
	{"invalid utf8", "{\"event_id\":\"\xff\"}", "", "not valid UTF-8"},
	{"missing event_id", `{"event_type":"contact_group.created","from_account":"a","group_name":"g","contacts":[{"type":1,"to_account":"b"}]}`, "event_id", "missing"},
	{"empty event_id", `{"event_id":"","event_type":"contact_group.created","from_account":"a","group_name":"g","contacts":[{"type":1,"to_account":"b"}]}`, "event_id", "required"},
	{"long event_id", `{"event_id":"` + strings.Repeat("x", 129) + `","event_type":"contact_group.created","from_account":"a","group_name":"g","contacts":[{"type":1,"to_account":"b"}]}`, "event_id", "129 bytes"},
	{"missing event_type", `{"event_id":"e","from_account":"a","group_name":"g","contacts":[{"type":1,"to_account":"b"}]}`, "event_type", "missing"},
	{"unknown type", `{"event_id":"e","event_type":"contact_group.deleted","from_account":"a","group_name":"g","contacts":[{"type":1,"to_account":"b"}]}`, "event_type", "unknown type"},
	{"missing account", `{"event_id":"e","event_type":"contact_group.created","group_name":"g","contacts":[{"type":1,"to_account":"b"}]}`, "from_account", "missing"},
	{"long account", `{"event_id":"e","event_type":"contact_group.created","from_account":"` + strings.Repeat("a", 33) + `","group_name":"g","contacts":[{"type":1,"to_account":"b"}]}`, "from_account", "33 bytes"},
	{"account wrong type", `{"event_id":"e","event_type":"contact_group.created","from_account":7,"group_name":"g","contacts":[{"type":1,"to_account":"b"}]}`, "from_account", "wrong JSON type"},
	{"missing name", `{"event_id":"e","event_type":"contact_group.created","from_account":"a","contacts":[{"type":1,"to_account":"b"}]}`, "group_name", "missing"},
	{"33-byte name", `{"event_id":"e","event_type":"contact_group.created","from_account":"a","group_name":"` + strings.Repeat("n", 33) + `","contacts":[{"type":1,"to_account":"b"}]}`, "group_name", "33 bytes"},
	{"11 CJK chars is 33 bytes", `{"event_id":"e","event_type":"contact_group.created","from_account":"a","group_name":"` + strings.Repeat("组", 11) + `","contacts":[{"type":1,"to_account":"b"}]}`, "group_name", "33 bytes"},
	{"zero seq", `{"event_id":"e","event_type":"contact_group.created","from_account":"a","seq":0,"group_name":"g","contacts":[{"type":1,"to_account":"b"}]}`, "seq", ">= 1"},
	{"fractional seq", `{"event_id":"e","event_type":"contact_group.created","from_account":"a","seq":1.5,"group_name":"g","contacts":[{"type":1,"to_account":"b"}]}`, "seq", ">= 1"},
	{"string seq", `{"event_id":"e","event_type":"contact_group.created","from_account":"a","seq":"1","group_name":"g","contacts":[{"type":1,"to_account":"b"}]}`, "seq", ">= 1"},
	{"bad time", `{"event_id":"e","event_type":"contact_group.created","from_account":"a","occurred_at":"yesterday","group_name":"g","contacts":[{"type":1,"to_account":"b"}]}`, "occurred_at", "RFC 3339"},
	{"missing contacts", `{"event_id":"e","event_type":"contact_group.created","from_account":"a","group_name":"g"}`, "contacts", "missing"},
	{"empty contacts", `{"event_id":"e","event_type":"contact_group.created","from_account":"a","group_name":"g","contacts":[]}`, "contacts", "got 0"},
	{"101 contacts", `{"event_id":"e","event_type":"contact_group.created","from_account":"a","group_name":"g","contacts":[` + strings.Repeat(`{"type":1,"to_account":"b"},`, 100) + `{"type":1,"to_account":"b"}]}`, "contacts", "got 101"},
	{"contact type 3", `{"event_id":"e","event_type":"contact_group.created","from_account":"a","group_name":"g","contacts":[{"type":3,"to_account":"b"}]}`, "contacts[0].type", "got 3"},
	{"contact type missing", `{"event_id":"e","event_type":"contact_group.created","from_account":"a","group_name":"g","contacts":[{"to_account":"b"}]}`, "contacts[0].type", "missing"},
	{"c2c without account", `{"event_id":"e","event_type":"contact_group.created","from_account":"a","group_name":"g","contacts":[{"type":1,"to_group_id":"x"}]}`, "contacts[0].to_group_id", "not allowed"},
	{"group without id", `{"event_id":"e","event_type":"contact_group.created","from_account":"a","group_name":"g","contacts":[{"type":1,"to_account":"b"},{"type":2}]}`, "contacts[1].to_group_id", "required"},
	{"group with account", `{"event_id":"e","event_type":"contact_group.created","from_account":"a","group_name":"g","contacts":[{"type":2,"to_group_id":"x","to_account":"b"}]}`, "contacts[0].to_account", "not allowed"},
}

func TestParseInvalid(t *testing.T) {
	for _, tc := range invalidCases {
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

func TestParseTooLarge(t *testing.T) {
	v := []byte(`{"event_id":"` + strings.Repeat("x", MaxValueBytes) + `"}`)
	if _, err := Parse(v); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("err = %v", err)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	e := Event{EventID: "e", EventType: TypeContactGroupCreated, FromAccount: "a", GroupName: "g",
		Contacts: []Contact{{Type: ContactC2C, ToAccount: "b"}}}
	v, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(v)
	if err != nil {
		t.Fatalf("Parse(Marshal()) = %v for %s", err, v)
	}
	if back.EventID != "e" || back.Seq != 0 || !back.OccurredAt.IsZero() {
		t.Fatalf("round trip changed the event: %+v", back)
	}
	e.GroupName = ""
	if _, err := e.Marshal(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Marshal of an invalid event: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	for _, tc := range invalidCases {
		f.Add([]byte(tc.value))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			return
		}
		// Whatever parses must validate and survive a round trip.
		v, err := e.Marshal()
		if err != nil {
			t.Fatalf("parsed event fails Marshal: %v", err)
		}
		if _, err := Parse(v); err != nil {
			t.Fatalf("re-parse: %v", err)
		}
	})
}
