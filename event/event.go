// Package event defines the contact-group events the product app writes to Kafka (contract v2:
// created, renamed, contacts added, contacts removed, deleted) and their validation rules
// (docs/events.md). Producers use it to build (NewCreated, NewRenamed, …), validate, key and
// marshal events; chatgroupd uses Parse to turn a record value into an Event or a precise reason it
// is invalid, and Event.Call to know which IM call applies it.
package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits of the event contract. They mirror what the IM API accepts, so that an event that passes
// Validate is never rejected by the API for its shape.
const (
	MaxValueBytes     = 1 << 20
	MaxEventIDBytes   = 128
	MaxAccountBytes   = 32
	MaxGroupNameBytes = 32
	MaxContacts       = 100
	MaxContactIDBytes = 128
	// MaxReasonBytes bounds a ValidationError's reason. Raw values are echoed only as quoted
	// prefixes of at most 64 bytes, so this is a safety net, not the usual length.
	MaxReasonBytes = 512
)

// Contact types, as the IM API numbers them.
const (
	ContactC2C   = 1 // one-to-one conversation, To_Account required
	ContactGroup = 2 // group conversation, to_group_id required
)

// Record headers chatgroupd reads from the event topic.
const (
	// HeaderReplayCount is how many times an operator replayed this event from the DLQ ("0" or absent
	// for the original). Dedupe keys on (event_id, replay-count).
	HeaderReplayCount = "replay-count"
	// HeaderReplayOf names the DLQ record a replay came from: "<dlq-topic>/<partition>/<offset>".
	HeaderReplayOf = "replay-of"
)

// Contact is one conversation to put in the group.
type Contact struct {
	Type      int    `json:"type"`
	ToAccount string `json:"to_account,omitempty"`
	ToGroupID string `json:"to_group_id,omitempty"`
}

// Event is one fact about a user's conversation group: it was created, renamed, had contacts
// added or removed, or was deleted (EventType). GroupName names the group as it is before the
// event. NewGroupName is set only for TypeContactGroupRenamed, Contacts only for the types whose
// UsesContacts is true; Validate rejects them elsewhere.
type Event struct {
	EventID      string    `json:"event_id"`
	EventType    Type      `json:"event_type"`
	FromAccount  string    `json:"from_account"`
	Seq          int64     `json:"seq,omitempty"`
	OccurredAt   time.Time `json:"occurred_at,omitzero"`
	GroupName    string    `json:"group_name"`
	NewGroupName string    `json:"new_group_name,omitempty"`
	Contacts     []Contact `json:"contacts,omitempty"`
}

// Key returns the Kafka record key producers must use: the account, so that all of one account's
// events land in one partition and keep their order.
func (e *Event) Key() []byte { return []byte(e.FromAccount) }

// Marshal validates e and returns the record value.
func (e *Event) Marshal() ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(e)
}

// ErrInvalid is matched (errors.Is) by every error Parse and Validate return.
var ErrInvalid = errors.New("invalid event")

// ValidationError says which field is wrong and why. Field is a JSON path such as
// "contacts[3].to_account", or "" when the value as a whole is unusable.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return "invalid event: " + e.Reason
	}
	return "invalid event: " + e.Field + ": " + e.Reason
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// invalid builds a *ValidationError. A format that echoes raw input must bound and quote it
// (%.64q), so that neither a huge value nor control characters reach dlq-error-info or a log; the
// reason is cut to MaxReasonBytes in any case.
func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: truncate(fmt.Sprintf(format, args...), MaxReasonBytes)}
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Validate checks every rule of the event contract (docs/events.md) that can be checked on a
// typed Event: the common fields, then those of its type.
func (e *Event) Validate() error {
	if err := checkString("event_id", e.EventID, MaxEventIDBytes); err != nil {
		return err
	}
	if !e.EventType.Known() {
		return invalid("event_type", "unknown type %.64q (known: %s)", string(e.EventType), typeList())
	}
	if err := checkName("from_account", e.FromAccount, MaxAccountBytes); err != nil {
		return err
	}
	if e.Seq < 0 {
		return invalid("seq", "must be >= 1, got %d", e.Seq)
	}
	if err := checkName("group_name", e.GroupName, MaxGroupNameBytes); err != nil {
		return err
	}
	switch e.EventType {
	case TypeContactGroupRenamed:
		if len(e.Contacts) > 0 {
			return invalid("contacts", "not used by %s: a rename keeps the group's conversations", e.EventType)
		}
		if err := checkName("new_group_name", e.NewGroupName, MaxGroupNameBytes); err != nil {
			return err
		}
		if e.NewGroupName == e.GroupName {
			return invalid("new_group_name", "equals group_name %.64q; a rename must change the name", e.GroupName)
		}
		return nil
	case TypeContactGroupDeleted:
		if len(e.Contacts) > 0 {
			return invalid("contacts", deletedWithContacts)
		}
	default:
		if err := checkContacts(e.Contacts); err != nil {
			return err
		}
	}
	if e.NewGroupName != "" {
		return invalid("new_group_name", "only %s has a new name, not %s", TypeContactGroupRenamed, e.EventType)
	}
	return nil
}

// deletedWithContacts is why a deleted event may not list contacts: a producer that sends them
// may have meant contacts_removed, and deleting the whole group instead can't be undone.
const deletedWithContacts = "must be absent or empty for contact_group.deleted, which deletes the whole group " +
	"(to take conversations out of a group, send contact_group.contacts_removed)"

// checkContacts checks the contacts of a created, contacts_added or contacts_removed event.
func checkContacts(cs []Contact) error {
	if len(cs) == 0 {
		return invalid("contacts", "must have 1-%d items, got 0", MaxContacts)
	}
	if len(cs) > MaxContacts {
		return invalid("contacts", "must have 1-%d items, got %d", MaxContacts, len(cs))
	}
	for i, c := range cs {
		f := "contacts[" + strconv.Itoa(i) + "]"
		switch c.Type {
		case ContactC2C:
			if c.ToGroupID != "" {
				return invalid(f+".to_group_id", "not allowed for type 1 (one-to-one)")
			}
			if err := checkName(f+".to_account", c.ToAccount, MaxAccountBytes); err != nil {
				return err
			}
		case ContactGroup:
			if c.ToAccount != "" {
				return invalid(f+".to_account", "not allowed for type 2 (group)")
			}
			if err := checkName(f+".to_group_id", c.ToGroupID, MaxContactIDBytes); err != nil {
				return err
			}
		default:
			return invalid(f+".type", "must be 1 (one-to-one) or 2 (group), got %d", c.Type)
		}
	}
	return nil
}

func checkString(field, s string, max int) error {
	switch {
	case s == "":
		return invalid(field, "required, must be 1-%d bytes", max)
	case len(s) > max:
		return invalid(field, "%d bytes, at most %d allowed", len(s), max)
	case !utf8.ValidString(s):
		return invalid(field, "not valid UTF-8")
	}
	return nil
}

// checkName is checkString for the strings sent to the API as names and accounts: they must also
// be free of control characters (NUL, CR, LF, BEL, …, C1) and of the invisible characters that
// reorder or break text when displayed (bidi marks, embeddings, overrides and isolates; line and
// paragraph separators), which would let a group name or account pass for another.
func checkName(field, s string, max int) error {
	if err := checkString(field, s, max); err != nil {
		return err
	}
	for i, r := range s {
		if forbiddenRune(r) {
			return invalid(field, "forbidden character %U at byte %d (control, line-break or bidi formatting characters are not allowed)", r, i)
		}
	}
	return nil
}

// forbiddenRune reports whether r may not appear in a name or account. Other format characters
// (zero-width joiner in emoji sequences, for one) are legitimate and pass. schema.json's "name"
// pattern lists the same ranges.
func forbiddenRune(r rune) bool {
	switch {
	case unicode.IsControl(r): // C0, DEL and C1
		return true
	case r == 0x061C, r == 0x200E, r == 0x200F: // arabic letter mark, LRM, RLM
		return true
	case r >= 0x2028 && r <= 0x202E: // line/paragraph separators, LRE RLE PDF LRO RLO
		return true
	case r >= 0x2066 && r <= 0x2069: // LRI RLI FSI PDI
		return true
	}
	return false
}

// wireBase mirrors the fields every event has, with pointers and raw fields so Parse can tell
// "missing" from "zero" and report a wrong JSON type precisely. Each type decodes into a struct
// that embeds it and adds only the fields that type uses, so a field the type ignores can't fail
// the decode.
type wireBase struct {
	EventID     *string         `json:"event_id"`
	EventType   *string         `json:"event_type"`
	FromAccount *string         `json:"from_account"`
	Seq         json.RawMessage `json:"seq"`
	OccurredAt  *string         `json:"occurred_at"`
	GroupName   *string         `json:"group_name"`
}

// wireContacts is the shape of created, contacts_added and contacts_removed events.
type wireContacts struct {
	wireBase
	Contacts []wireContact `json:"contacts"`
}

type wireRenamed struct {
	wireBase
	NewGroupName *string `json:"new_group_name"`
}

// wireDeleted keeps contacts raw: it may be absent, null or [] (see deletedWithContacts).
type wireDeleted struct {
	wireBase
	Contacts json.RawMessage `json:"contacts"`
}

type wireContact struct {
	Type      json.RawMessage `json:"type"`
	ToAccount *string         `json:"to_account"`
	ToGroupID *string         `json:"to_group_id"`
}

// Parse decodes and validates a record value. Every failure is a *ValidationError.
// Unknown fields are ignored, as the contract promises forward compatibility, and so are the
// fields of other types (contacts on a rename, new_group_name on a create), with one exception:
// a deleted event with contacts is invalid (see docs/events.md). Parse is stricter than
// encoding/json, which matches keys case-insensitively and lets the last duplicate win: a field
// of the event's type given twice, or under another case ("FROM_ACCOUNT"), is invalid, so the
// event chatgroupd acts on is the one every other JSON reader sees.
func Parse(value []byte) (*Event, error) {
	if len(value) > MaxValueBytes {
		return nil, invalid("", "value is %d bytes, at most %d allowed", len(value), MaxValueBytes)
	}
	if !utf8.Valid(value) {
		return nil, invalid("", "value is not valid UTF-8")
	}
	trimmed := bytes.TrimSpace(value)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, invalid("", "value is not a JSON object")
	}
	typ, err := checkKeys(trimmed)
	if err != nil {
		return nil, err
	}
	e, err := decode(trimmed, typ)
	if err != nil {
		return nil, err
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return e, nil
}

// decode unmarshals value into the wire shape of typ and converts it to an Event, checking what
// Validate can't see on a typed Event: presence and JSON types.
func decode(value []byte, typ Type) (*Event, error) {
	switch typ {
	case TypeContactGroupRenamed:
		var w wireRenamed
		if err := unmarshal(value, &w); err != nil {
			return nil, err
		}
		e, err := w.event()
		if err != nil {
			return nil, err
		}
		if w.NewGroupName == nil {
			return nil, invalid("new_group_name", "required field missing")
		}
		e.NewGroupName = *w.NewGroupName
		return e, nil
	case TypeContactGroupDeleted:
		var w wireDeleted
		if err := unmarshal(value, &w); err != nil {
			return nil, err
		}
		e, err := w.event()
		if err != nil {
			return nil, err
		}
		return e, checkDeletedContacts(w.Contacts)
	case TypeContactGroupCreated, TypeContactGroupContactsAdded, TypeContactGroupContactsRemoved:
		var w wireContacts
		if err := unmarshal(value, &w); err != nil {
			return nil, err
		}
		e, err := w.event()
		if err != nil {
			return nil, err
		}
		e.Contacts, err = w.contacts()
		return e, err
	}
	// An unknown type: its fields are unknown too, so only the common ones are decoded and
	// Validate names the type as the problem.
	var w wireBase
	if err := unmarshal(value, &w); err != nil {
		return nil, err
	}
	return w.event()
}

// unmarshal is json.Unmarshal with its errors made *ValidationError.
func unmarshal(value []byte, w any) error {
	err := json.Unmarshal(value, w)
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		// te.Value may hold the raw literal ("number 1111…"): bound it. encoding/json names a
		// field of the embedded wireBase "wireBase.<key>"; the producer knows it as <key>.
		return invalid(strings.TrimPrefix(te.Field, "wireBase."), "wrong JSON type %.64q, want %s", te.Value, te.Type)
	}
	return invalid("", "bad JSON: %.128q", err.Error())
}

// event converts the common fields, checking those Validate can't see on a typed Event: presence,
// and the JSON forms of seq and occurred_at.
func (w *wireBase) event() (*Event, error) {
	req := func(field string, p *string) (string, error) {
		if p == nil {
			return "", invalid(field, "required field missing")
		}
		return *p, nil
	}
	var e Event
	var err error
	if e.EventID, err = req("event_id", w.EventID); err != nil {
		return nil, err
	}
	var typ string
	if typ, err = req("event_type", w.EventType); err != nil {
		return nil, err
	}
	e.EventType = Type(typ)
	if e.FromAccount, err = req("from_account", w.FromAccount); err != nil {
		return nil, err
	}
	if e.GroupName, err = req("group_name", w.GroupName); err != nil {
		return nil, err
	}
	if len(w.Seq) > 0 && string(w.Seq) != "null" {
		seq, err := strconv.ParseInt(string(w.Seq), 10, 64)
		if err != nil || seq < 1 {
			return nil, invalid("seq", "must be an integer >= 1, got %.64q", w.Seq)
		}
		e.Seq = seq
	}
	if w.OccurredAt != nil {
		t, err := time.Parse(time.RFC3339Nano, *w.OccurredAt)
		if err != nil {
			return nil, invalid("occurred_at", "not an RFC 3339 time: %.64q", *w.OccurredAt)
		}
		e.OccurredAt = t
	}
	return &e, nil
}

// contacts converts the contacts array; Validate checks the items' rules.
func (w *wireContacts) contacts() ([]Contact, error) {
	if w.Contacts == nil {
		return nil, invalid("contacts", "required field missing")
	}
	cs := make([]Contact, len(w.Contacts))
	for i, wc := range w.Contacts {
		f := "contacts[" + strconv.Itoa(i) + "]"
		t, err := strconv.Atoi(string(wc.Type))
		if err != nil {
			if len(wc.Type) == 0 {
				return nil, invalid(f+".type", "required field missing")
			}
			return nil, invalid(f+".type", "must be 1 or 2, got %.64q", wc.Type)
		}
		cs[i].Type = t
		if wc.ToAccount != nil {
			cs[i].ToAccount = *wc.ToAccount
		}
		if wc.ToGroupID != nil {
			cs[i].ToGroupID = *wc.ToGroupID
		}
	}
	return cs, nil
}

// checkDeletedContacts accepts a deleted event's contacts only when absent, null or [].
func checkDeletedContacts(raw json.RawMessage) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil || len(items) > 0 {
		return invalid("contacts", deletedWithContacts)
	}
	return nil
}

// Known field names, by the object they belong to. A key is checked for case variants and
// duplicates only when it is a field of the event's own type (fieldsOf); other keys are ignored
// like unknown ones.
var (
	commonFields  = []string{"event_id", "event_type", "from_account", "seq", "occurred_at", "group_name"}
	allFields     = append(slices.Clip(commonFields), "contacts", "new_group_name")
	contactFields = []string{"type", "to_account", "to_group_id"}
)

// fieldsOf reports whether name is a top-level field of events of type t. An unknown type has
// only the common fields.
func fieldsOf(t Type, name string) bool {
	switch name {
	case "contacts":
		return t.Known() && t != TypeContactGroupRenamed
	case "new_group_name":
		return t == TypeContactGroupRenamed
	}
	return slices.Contains(commonFields, name)
}

// keyProblem is a case-variant or duplicate key, under the top-level field it concerns.
type keyProblem struct {
	field string
	err   error
}

// checkKeys rejects, in the top-level object and in each contacts item, a key that is a known
// field's name in another case (encoding/json would match it; Unicode simple folding, as it does,
// so "ſeq" is a variant of "seq") and a known field given more than once. Keys are compared after
// JSON unescaping, so "from\u005faccount" is from_account. It walks the whole value, then reports
// the first problem with a field of the event's type, which it returns too ("" when event_type is
// not a plain string under its exact key). A syntax error is left to json.Unmarshal to report.
func checkKeys(value []byte) (Type, error) {
	d := json.NewDecoder(bytes.NewReader(value))
	d.UseNumber()
	var (
		problems []keyProblem
		typ      Type
	)
	report := func(top string) func(string, error) {
		return func(field string, err error) {
			if top != "" {
				field = top
			}
			problems = append(problems, keyProblem{field, err})
		}
	}
	// A syntax error ends the walk: json.Unmarshal says it better. Problems seen before it stand.
	_ = walkObject(d, "", allFields, func(key string) error {
		switch key {
		case "event_type":
			t, err := d.Token()
			if err != nil {
				return err
			}
			if s, ok := t.(string); ok {
				typ = Type(s)
			}
			return skipRest(d, t)
		case "contacts":
			return walkContacts(d, report("contacts"))
		}
		return skipValue(d)
	}, report(""), true)
	for _, p := range problems {
		if fieldsOf(typ, p.field) {
			return typ, p.err
		}
	}
	return typ, nil
}

// walkContacts walks the contacts array (or whatever value stands there), checking each item's
// keys like walkObject.
func walkContacts(d *json.Decoder, problem func(string, error)) error {
	t, err := d.Token()
	if err != nil {
		return err
	}
	if t != json.Delim('[') {
		return skipRest(d, t) // not an array: Unmarshal reports the wrong type
	}
	for i := 0; d.More(); i++ {
		t, err := d.Token()
		if err != nil {
			return err
		}
		if t != json.Delim('{') {
			if err := skipRest(d, t); err != nil {
				return err
			}
			continue
		}
		f := "contacts[" + strconv.Itoa(i) + "]"
		if err := walkObject(d, f+".", contactFields, func(string) error { return skipValue(d) }, problem, false); err != nil {
			return err
		}
	}
	_, err = d.Token() // ]
	return err
}

// walkObject reads the keys of one object (its '{' already consumed unless open is true) and
// calls value for each known key with the decoder positioned at its value; unknown keys' values
// are skipped. A known field's name in another case, or a known field given again, goes to
// problem (with the field's name) and its value is skipped.
func walkObject(d *json.Decoder, prefix string, known []string, value func(key string) error,
	problem func(field string, err error), open bool) error {
	if open {
		t, err := d.Token()
		if err != nil {
			return err
		}
		if t != json.Delim('{') {
			return errors.New("not an object")
		}
	}
	seen := make(map[string]bool, len(known))
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return err
		}
		key, _ := t.(string)
		name, exact := knownField(key, known)
		switch {
		case name == "":
		case !exact:
			problem(name, invalid(prefix+name, "key %.64q differs from %q only in case; keys are case-sensitive", key, name))
		case seen[name]:
			problem(name, invalid(prefix+name, "duplicate key"))
		default:
			seen[name] = true
			if err := value(name); err != nil {
				return err
			}
			continue
		}
		if err := skipValue(d); err != nil {
			return err
		}
	}
	_, err := d.Token() // }
	return err
}

// knownField returns the known field key names, and whether key spells it exactly.
func knownField(key string, known []string) (string, bool) {
	for _, k := range known {
		if key == k {
			return k, true
		}
	}
	for _, k := range known {
		if strings.EqualFold(key, k) {
			return k, false
		}
	}
	return "", false
}

// skipValue consumes the next value, however nested.
func skipValue(d *json.Decoder) error {
	t, err := d.Token()
	if err != nil {
		return err
	}
	return skipRest(d, t)
}

// skipRest consumes the rest of a value whose first token t was already read.
func skipRest(d *json.Decoder, t json.Token) error {
	delim, ok := t.(json.Delim)
	if !ok || delim == '}' || delim == ']' {
		return nil
	}
	for depth := 1; depth > 0; {
		t, err := d.Token()
		if err == io.EOF {
			return io.ErrUnexpectedEOF
		}
		if err != nil {
			return err
		}
		if dl, ok := t.(json.Delim); ok {
			if dl == '{' || dl == '[' {
				depth++
			} else {
				depth--
			}
		}
	}
	return nil
}
