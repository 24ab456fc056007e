package dlq

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/chatgroupd/chatgroupd/event"
)

// Filter selects DLQ records. Zero fields match everything; a record must match every set field.
type Filter struct {
	Codes   []int    // dlq-error-code is one of these
	Reasons []string // dlq-reason is one of these (each must be a known reason)
	Account string   // the record's account (dlq-from-account, else the key)
	Group   string   // dlq-consumer-group
	Since   time.Time
	Until   time.Time // dlq-failed-at in [Since, Until)
	// EventTypes: the original value's event_type is one of these (each must be known).
	EventTypes []event.Type
}

// ErrUnknownEventType is returned (wrapped) for a Filter event type that is not one of
// event.Types().
var ErrUnknownEventType = errors.New("unknown event type")

// ErrUnknownReason is returned (wrapped) for a Filter reason that is not one of Reasons.
var ErrUnknownReason = errors.New("unknown reason")

// Validate rejects unknown reasons and an empty time range.
func (f Filter) Validate() error {
	for _, r := range f.Reasons {
		if !ValidReason(r) {
			return fmt.Errorf("dlq filter: %w %q (want one of %v)", ErrUnknownReason, r, Reasons())
		}
	}
	for _, t := range f.EventTypes {
		if !t.Known() {
			return fmt.Errorf("dlq filter: %w %q (want one of %v)", ErrUnknownEventType, t, event.Types())
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return fmt.Errorf("dlq filter: since %s is not before until %s",
			f.Since.Format(time.RFC3339), f.Until.Format(time.RFC3339))
	}
	return nil
}

// Match reports whether e passes the filter.
func (f Filter) Match(e *Entry) bool {
	if len(f.Codes) > 0 && !slices.Contains(f.Codes, e.Code) {
		return false
	}
	if len(f.Reasons) > 0 && !slices.Contains(f.Reasons, e.Reason) {
		return false
	}
	if len(f.EventTypes) > 0 && !slices.Contains(f.EventTypes, e.EventType) {
		return false
	}
	if f.Account != "" && e.Account() != f.Account {
		return false
	}
	if f.Group != "" && e.ConsumerGroup != f.Group {
		return false
	}
	if !f.Since.IsZero() && e.FailedAt.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && !e.FailedAt.Before(f.Until) {
		return false
	}
	return true
}
