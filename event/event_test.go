package event

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
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

// invalidCases is every way the event contract (docs/events.md) can be broken, with the field and words the reason must
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
	{"unknown type", `{"event_id":"e","event_type":"contact_group.archived","from_account":"a","group_name":"g","contacts":[{"type":1,"to_account":"b"}]}`, "event_type", "unknown type"},
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
	// encoding/json matches keys case-insensitively (Unicode simple folding) and the last wins.
	{"case-variant key overrides", `{"event_id":"e","event_type":"contact_group.created","from_account":"alice","group_name":"g","contacts":[{"type":1,"to_account":"b"}],"FROM_ACCOUNT":"mallory"}`, "from_account", "only in case"},
	{"case-variant key alone", `{"event_id":"e","event_type":"contact_group.created","From_Account":"alice","group_name":"g","contacts":[{"type":1,"to_account":"b"}]}`, "from_account", "only in case"},
	{"long-s variant of seq", `{"event_id":"e","event_type":"contact_group.created","from_account":"a","ſeq":2,"group_name":"g","contacts":[{"type":1,"to_account":"b"}]}`, "seq", "only in case"},
	{"case-variant contact key", `{"event_id":"e","event_type":"contact_group.created","from_account":"a","group_name":"g","contacts":[{"type":1,"to_account":"b","TO_ACCOUNT":"admin"}]}`, "contacts[0].to_account", "only in case"},
	{"duplicate key", `{"event_id":"e","event_type":"contact_group.created","from_account":"alice","group_name":"g","contacts":[{"type":1,"to_account":"b"}],"from_account":"mallory"}`, "from_account", "duplicate"},
	{"duplicate key escaped", `{"event_id":"e","event_type":"contact_group.created","from_account":"alice","group_name":"g","contacts":[{"type":1,"to_account":"b"}],"from\u005faccount":"mallory"}`, "from_account", "duplicate"},
	{"duplicate contact key", `{"event_id":"e","event_type":"contact_group.created","from_account":"a","group_name":"g","contacts":[{"type":1,"to_account":"b"},{"type":1,"to_account":"b","to_account":"c"}]}`, "contacts[1].to_account", "duplicate"},
	{"NUL in account", `{"event_id":"e","event_type":"contact_group.created","from_account":"al\u0000ice","group_name":"g","contacts":[{"type":1,"to_account":"b"}]}`, "from_account", "U+0000"},
	{"CRLF in name", `{"event_id":"e","event_type":"contact_group.created","from_account":"a","group_name":"g\r\nX-Evil: 1","contacts":[{"type":1,"to_account":"b"}]}`, "group_name", "U+000D"},
	{"BEL in to_account", `{"event_id":"e","event_type":"contact_group.created","from_account":"a","group_name":"g","contacts":[{"type":1,"to_account":"b\u0007"}]}`, "contacts[0].to_account", "U+0007"},
	{"C1 NEL in account", `{"event_id":"e","event_type":"contact_group.created","from_account":"a\u0085","group_name":"g","contacts":[{"type":1,"to_account":"b"}]}`, "from_account", "U+0085"},
	{"RLO in name", `{"event_id":"e","event_type":"contact_group.created","from_account":"a","group_name":"\u202etxt.exe","contacts":[{"type":1,"to_account":"b"}]}`, "group_name", "U+202E"},
	{"LRI in to_group_id", `{"event_id":"e","event_type":"contact_group.created","from_account":"a","group_name":"g","contacts":[{"type":2,"to_group_id":"@TGS\u2066#1"}]}`, "contacts[0].to_group_id", "U+2066"},
	{"RLM in account", `{"event_id":"e","event_type":"contact_group.created","from_account":"a\u200f","group_name":"g","contacts":[{"type":1,"to_account":"b"}]}`, "from_account", "U+200F"},
	{"line separator in name", `{"event_id":"e","event_type":"contact_group.created","from_account":"a","group_name":"a\u2028b","contacts":[{"type":1,"to_account":"b"}]}`, "group_name", "U+2028"},
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

// TestParseValidNamesWithFormatCharacters: the zero-width joiner of emoji sequences and other
// non-bidi format characters are legitimate in names.
func TestParseValidNamesWithFormatCharacters(t *testing.T) {
	v := `{"event_id":"e","event_type":"contact_group.created","from_account":"a","group_name":"fam \u200d x","contacts":[{"type":1,"to_account":"b"}]}`
	e, err := Parse([]byte(v))
	if err != nil {
		t.Fatal(err)
	}
	if e.GroupName != "fam \u200d x" {
		t.Fatalf("group name %q", e.GroupName)
	}
}

// TestParseErrorEchoBounded: every place a raw value is echoed into the reason quotes and bounds
// it, so a 700 KB value can't make a 700 KB dlq-error-info, and control characters can't reach a
// log or a header raw.
func TestParseErrorEchoBounded(t *testing.T) {
	huge := strings.Repeat(`A\u0007\u202e`, 50000) // JSON escapes: valid JSON
	digits := strings.Repeat("9", 300000)
	base := func(field, raw string) string {
		return `{"event_id":"e","event_type":"contact_group.created","from_account":"a","group_name":"g",` +
			`"contacts":[{"type":1,"to_account":"b"}],` + `"` + field + `":` + raw + `}`
	}
	for name, v := range map[string]string{
		"string seq":     base("seq", `"`+huge+`"`),
		"long seq":       base("seq", digits),
		"occurred_at":    base("occurred_at", `"`+huge+`"`),
		"event_type":     strings.Replace(base("x", "1"), `"contact_group.created"`, `"`+huge+`"`, 1),
		"contact type":   strings.Replace(base("x", "1"), `{"type":1,`, `{"type":"`+huge+`",`, 1),
		"number account": strings.Replace(base("x", "1"), `"from_account":"a"`, `"from_account":`+digits, 1),
		"raw BEL in key": base(strings.Repeat("\u0007", 1000)+"SEQ", "1"),
		"bad json":       `{"event_id":"` + huge + `"` + "\u0001",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(v))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v", err)
			}
			msg := err.Error()
			if len(msg) > MaxReasonBytes+64 {
				t.Errorf("error is %d bytes: %.200s", len(msg), msg)
			}
			for _, r := range msg {
				if forbiddenRune(r) {
					t.Errorf("error carries raw %U: %.200q", r, msg)
					break
				}
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
	for _, g := range goodV2 {
		f.Add([]byte(g.value))
	}
	for _, tc := range invalidV2Cases {
		f.Add([]byte(tc.value))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			if n := len(err.Error()); n > MaxReasonBytes+64 {
				t.Fatalf("error is %d bytes", n)
			}
			return
		}
		// Whatever parses must validate and survive a round trip.
		// Its fields are what an exact-key JSON reader sees: no case-variant or duplicate key
		// slipped a different value past the parser.
		var exact map[string]json.RawMessage
		if err := json.Unmarshal(b, &exact); err != nil {
			t.Fatalf("parsed but not a JSON object: %v", err)
		}
		for field, got := range map[string]string{"from_account": e.FromAccount, "event_type": string(e.EventType), "group_name": e.GroupName} {
			var s string
			if err := json.Unmarshal(exact[field], &s); err != nil || s != got {
				t.Fatalf("%s %q, an exact-key reader sees %s", field, got, exact[field])
			}
		}
		if _, ok := e.EventType.Call(); !ok {
			t.Fatalf("parsed an event of unknown type %q", e.EventType)
		}
		if e.EventType == TypeContactGroupRenamed {
			var s string
			if err := json.Unmarshal(exact["new_group_name"], &s); err != nil || s != e.NewGroupName {
				t.Fatalf("new_group_name %q, an exact-key reader sees %s", e.NewGroupName, exact["new_group_name"])
			}
			if e.NewGroupName == e.GroupName {
				t.Fatalf("rename to the same name %q passed", e.GroupName)
			}
		} else if e.NewGroupName != "" {
			t.Fatalf("%s carries new_group_name %q", e.EventType, e.NewGroupName)
		}
		if e.EventType.UsesContacts() != (len(e.Contacts) > 0) {
			t.Fatalf("%s with %d contacts", e.EventType, len(e.Contacts))
		}
		for _, s := range []string{e.FromAccount, e.GroupName, e.NewGroupName} {
			if strings.ContainsFunc(s, forbiddenRune) {
				t.Fatalf("forbidden character passed in %q", s)
			}
		}
		v, err := e.Marshal()
		if err != nil {
			t.Fatalf("parsed event fails Marshal: %v", err)
		}
		back, err := Parse(v)
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if !cmp.Equal(e, back) {
			t.Fatalf("round trip changed the event: %s", cmp.Diff(e, back))
		}
	})
}

// FuzzValidateAgreesWithParse: for events a producer builds with the constructors, Validate (what
// Marshal checks) and Parse of the same event's JSON give the same verdict, and an accepted event
// comes back unchanged. A producer whose Marshal succeeds never has its event dead-lettered as
// invalid, and one whose Marshal fails learns it before producing.
func FuzzValidateAgreesWithParse(f *testing.F) {
	f.Add(uint8(0), "e1", "alice", "work", "office", "bob", int64(1))
	f.Add(uint8(1), "e2", "alice", "work", "work", "", int64(2))
	f.Add(uint8(1), "e3", "alice", "work", strings.Repeat("组", 11), "", int64(3))
	f.Add(uint8(2), "e4", "alice", "w\u202e", "", "@TGS#1", int64(0))
	f.Add(uint8(3), "", "alice", "work", "", "bob", int64(-1))
	f.Add(uint8(4), "e6", strings.Repeat("a", 33), "work", "", "", int64(5))
	f.Add(uint8(5), "e7", "alice", "work", "", "", int64(6))
	f.Fuzz(func(t *testing.T, kind uint8, id, acct, name, newName, peer string, seq int64) {
		for _, s := range []string{id, acct, name, newName, peer} {
			if !utf8.ValidString(s) {
				return // json.Marshal would replace the bad bytes: not the same event any more
			}
		}
		var c []Contact
		if peer != "" {
			c = []Contact{ToAccount(peer)}
			if strings.HasPrefix(peer, "@") {
				c = []Contact{ToGroup(peer)}
			}
		}
		var e *Event
		switch kind % 6 {
		case 0:
			e = NewCreated(id, acct, name, c...)
		case 1:
			e = NewRenamed(id, acct, name, newName)
		case 2:
			e = NewContactsAdded(id, acct, name, c...)
		case 3:
			e = NewContactsRemoved(id, acct, name, c...)
		case 4:
			e = NewDeleted(id, acct, name)
		default:
			e = &Event{EventID: id, EventType: Type(newName), FromAccount: acct, GroupName: name, Contacts: c}
		}
		e.Seq = seq
		verr := e.Validate()
		raw, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		back, perr := Parse(raw)
		if seq < 0 {
			// A negative seq can't be sent (Marshal refuses it) and Parse rejects it: both invalid.
			if verr == nil || perr == nil {
				t.Fatalf("seq %d: Validate %v, Parse %v", seq, verr, perr)
			}
			return
		}
		if (verr == nil) != (perr == nil) {
			t.Fatalf("Validate %v but Parse %v for %s", verr, perr, raw)
		}
		if verr != nil {
			// Both invalid. They may name different fields: Parse reports a missing field
			// before the rules of the fields that are present.
			return
		}
		if !cmp.Equal(e, back) {
			t.Fatalf("round trip changed the event: %s", cmp.Diff(e, back))
		}
	})
}
