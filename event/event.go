// Package event defines the contact-group event the product app writes to Kafka and its
// validation rules (CONTRACT §1). Producers use it to build, validate, key and marshal events;
// chatgroupd uses Parse to turn a record value into an Event or a precise reason it is invalid.
package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
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

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Validate checks every rule of CONTRACT §1 that can be checked on a typed Event.
func (e *Event) Validate() error {
	if err := checkString("event_id", e.EventID, MaxEventIDBytes); err != nil {
		return err
	}
	if e.EventType != TypeContactGroupCreated {
		return invalid("event_type", "unknown type %q (v1 knows only %q)", e.EventType, TypeContactGroupCreated)
	}
	if err := checkString("from_account", e.FromAccount, MaxAccountBytes); err != nil {
		return err
	}
	if e.Seq < 0 {
		return invalid("seq", "must be >= 1, got %d", e.Seq)
	}
	if err := checkString("group_name", e.GroupName, MaxGroupNameBytes); err != nil {
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
			if err := checkString(f+".to_account", c.ToAccount, MaxAccountBytes); err != nil {
				return err
			}
		case ContactGroup:
			if c.ToAccount != "" {
				return invalid(f+".to_account", "not allowed for type 2 (group)")
			}
			if err := checkString(f+".to_group_id", c.ToGroupID, MaxContactIDBytes); err != nil {
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
// Unknown fields are ignored, as the contract promises forward compatibility.
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
	var w wire
	if err := json.Unmarshal(trimmed, &w); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, invalid(te.Field, "wrong JSON type %s, want %s", te.Value, te.Type)
		}
		return nil, invalid("", "bad JSON: %v", err)
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
			return nil, invalid("seq", "must be an integer >= 1, got %s", w.Seq)
		}
		e.Seq = seq
	}
	if w.OccurredAt != nil {
		t, err := time.Parse(time.RFC3339Nano, *w.OccurredAt)
		if err != nil {
			return nil, invalid("occurred_at", "not an RFC 3339 time: %q", *w.OccurredAt)
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
			return nil, invalid(f+".type", "must be 1 or 2, got %s", wc.Type)
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
