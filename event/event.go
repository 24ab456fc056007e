// Package event defines the contact-group event the product app writes to Kafka and its
// validation rules (docs/events.md). Producers use it to build, validate, key and marshal events;
// chatgroupd uses Parse to turn a record value into an Event or a precise reason it is invalid.
package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// TypeContactGroupCreated is the only event type of schema v1.
const TypeContactGroupCreated = "contact_group.created"

// Limits of schema v1. They mirror what the IM API accepts, so that an event that passes
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

// Event is one "the user created a conversation group" fact.
type Event struct {
	EventID     string    `json:"event_id"`
	EventType   string    `json:"event_type"`
	FromAccount string    `json:"from_account"`
	Seq         int64     `json:"seq,omitempty"`
	OccurredAt  time.Time `json:"occurred_at,omitzero"`
	GroupName   string    `json:"group_name"`
	Contacts    []Contact `json:"contacts"`
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

// Validate checks every rule of the event contract (docs/events.md) that can be checked on a typed Event.
func (e *Event) Validate() error {
	if err := checkString("event_id", e.EventID, MaxEventIDBytes); err != nil {
		return err
	}
	if e.EventType != TypeContactGroupCreated {
		return invalid("event_type", "unknown type %.64q (v1 knows only %q)", e.EventType, TypeContactGroupCreated)
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
	if len(e.Contacts) == 0 {
		return invalid("contacts", "must have 1-%d items, got 0", MaxContacts)
	}
	if len(e.Contacts) > MaxContacts {
		return invalid("contacts", "must have 1-%d items, got %d", MaxContacts, len(e.Contacts))
	}
	for i, c := range e.Contacts {
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

// wire mirrors Event with pointers and raw fields so Parse can tell "missing" from "zero" and
// report a wrong JSON type precisely.
type wire struct {
	EventID     *string         `json:"event_id"`
	EventType   *string         `json:"event_type"`
	FromAccount *string         `json:"from_account"`
	Seq         json.RawMessage `json:"seq"`
	OccurredAt  *string         `json:"occurred_at"`
	GroupName   *string         `json:"group_name"`
	Contacts    []wireContact   `json:"contacts"`
}

type wireContact struct {
	Type      json.RawMessage `json:"type"`
	ToAccount *string         `json:"to_account"`
	ToGroupID *string         `json:"to_group_id"`
}

// Parse decodes and validates a record value. Every failure is a *ValidationError.
// Unknown fields are ignored, as the contract promises forward compatibility. Parse is stricter
// than encoding/json, which matches keys case-insensitively and lets the last duplicate win: a
// known field given twice, or under another case ("FROM_ACCOUNT"), is invalid, so the event
// chatgroupd acts on is the one every other JSON reader sees.
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
	if err := checkKeys(trimmed); err != nil {
		return nil, err
	}
	var w wire
	if err := json.Unmarshal(trimmed, &w); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			// te.Value may hold the raw literal ("number 1111…"): bound it.
			return nil, invalid(te.Field, "wrong JSON type %.64q, want %s", te.Value, te.Type)
		}
		return nil, invalid("", "bad JSON: %.128q", err.Error())
	}
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
	if e.EventType, err = req("event_type", w.EventType); err != nil {
		return nil, err
	}
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
	if w.Contacts == nil {
		return nil, invalid("contacts", "required field missing")
	}
	e.Contacts = make([]Contact, len(w.Contacts))
	for i, wc := range w.Contacts {
		f := "contacts[" + strconv.Itoa(i) + "]"
		t, err := strconv.Atoi(string(wc.Type))
		if err != nil {
			if len(wc.Type) == 0 {
				return nil, invalid(f+".type", "required field missing")
			}
			return nil, invalid(f+".type", "must be 1 or 2, got %.64q", wc.Type)
		}
		e.Contacts[i].Type = t
		if wc.ToAccount != nil {
			e.Contacts[i].ToAccount = *wc.ToAccount
		}
		if wc.ToGroupID != nil {
			e.Contacts[i].ToGroupID = *wc.ToGroupID
		}
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return &e, nil
}

// Known field names, by the object they belong to.
var (
	eventFields   = []string{"event_id", "event_type", "from_account", "seq", "occurred_at", "group_name", "contacts"}
	contactFields = []string{"type", "to_account", "to_group_id"}
)

// checkKeys rejects, in the top-level object and in each contacts item, a key that is a known
// field's name in another case (encoding/json would match it; Unicode simple folding, as it does,
// so "ſeq" is a variant of "seq") and a known field given more than once. Keys are compared after
// JSON unescaping, so "from\u005faccount" is from_account. A syntax error is left to
// json.Unmarshal to report.
func checkKeys(value []byte) error {
	d := json.NewDecoder(bytes.NewReader(value))
	d.UseNumber()
	err := walkObject(d, "", eventFields, func(key string) error {
		if key != "contacts" {
			return skipValue(d)
		}
		t, err := d.Token()
		if err != nil {
			return err
		}
		if t != json.Delim('[') {
			return nil // a scalar: Unmarshal reports the wrong type
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
			if err := walkObject(d, f+".", contactFields, func(string) error { return skipValue(d) }, false); err != nil {
				return err
			}
		}
		_, err = d.Token() // ]
		return err
	}, true)
	var ve *ValidationError
	if errors.As(err, &ve) {
		return err
	}
	return nil // syntax errors: json.Unmarshal says it better
}

// walkObject reads the keys of one object (its '{' already consumed unless open is true) and
// calls value for each known key with the decoder positioned at its value; unknown keys' values
// are skipped.
func walkObject(d *json.Decoder, prefix string, known []string, value func(key string) error, open bool) error {
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
			if err := skipValue(d); err != nil {
				return err
			}
			continue
		case !exact:
			return invalid(prefix+name, "key %.64q differs from %q only in case; keys are case-sensitive", key, name)
		case seen[name]:
			return invalid(prefix+name, "duplicate key")
		}
		seen[name] = true
		if err := value(name); err != nil {
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
