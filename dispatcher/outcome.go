package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/chatgroupd/chatgroupd/event"
)

// Task is one validated event to apply.
type Task struct {
	Event *event.Event
	// ReplayCount is the record's replay-count header (0 for an original event).
	ReplayCount int
	// Uncertain is set by the consumer for a record that may already have been applied: it sat
	// above the committed watermark, not known complete, when its partition was (re)assigned.
	// The dispatcher then looks the group up before creating it. Replays are always checked.
	Uncertain bool
	// RecordTime is the Kafka record timestamp, used for end-to-end latency when the event has no
	// occurred_at.
	RecordTime time.Time
	// Drain, when set, ends when the caller's claim on the event ends (its consumer generation is
	// over): from then on Dispatch starts no new API call. A call waiting for a rate-limit grant,
	// a pause to lift or a retry backoff gives up at once and Dispatch returns an error wrapping
	// ErrDrained; a request already on its way runs to its answer under ctx, and an answer that
	// ends the event is still returned. A successor may own the account a moment later, so
	// nothing not yet sent may be sent.
	Drain context.Context
	// StallLimit, when positive, ends the event as Stalled (not dead-lettered: the consumer
	// moves it to its retry lane) once it has been failing transiently for that long, counted
	// like the retry budget. Rate limits, pauses and permanent answers never stall an event:
	// they are not the account's fault or end it anyway.
	StallLimit time.Duration
	// RetryStart, when set and earlier than now, is when the event's retrying began in an
	// earlier Dispatch (another process, before a restart or rebalance): the retry budget counts
	// from it, so moving an event to the retry lane never restarts its budget.
	RetryStart time.Time
	// ParkNow, when it ends, asks for Stalled at once (with a StallLimit or not) if the event is
	// failing transiently: the consumer's metadata budget can't hold its partition's other
	// accounts' progress much longer. A backoff sleep ends early for it.
	ParkNow context.Context
	// Lease, when set, is asked right before each request is sent (after its rate-limit grant).
	// While it reports false the caller can't be sure it still owns the event's account — its
	// group membership went unconfirmed for too long, as after the process was paused — and the
	// request waits unsent until Lease reports true again, or Drain or ctx ends.
	Lease func() bool
}

// ErrDrained is the cause Dispatch reports when Task.Drain ended before the event did.
var ErrDrained = errors.New("dispatch drained: generation ended")

// Result says how an event ended.
type Result int

const (
	// Applied: the group exists with every conversation of the event.
	Applied Result = iota
	// Rejected: a permanent API error; no group was created. Dead-letter with reason "rejected".
	Rejected
	// Partial: the group exists but some conversations failed. Dead-letter with reason "partial".
	Partial
	// Exhausted: transient failures past the retry budget. Dead-letter with reason "exhausted".
	Exhausted
	// Stalled: transient failures for longer than Task.StallLimit with budget left. The event
	// did not end: the consumer parks its account and retries it from the retry lane, passing
	// Outcome.RetryStart back as Task.RetryStart. Only returned when StallLimit is set.
	Stalled
)

func (r Result) String() string {
	switch r {
	case Applied:
		return "applied"
	case Rejected:
		return "rejected"
	case Partial:
		return "partial"
	case Exhausted:
		return "exhausted"
	case Stalled:
		return "stalled"
	}
	return "unknown"
}

// Outcome is the final word on a Task. Every Outcome but Applied is dead-lettered by the consumer.
type Outcome struct {
	Result   Result
	Code     int    // IM code: top-level ErrorCode or the first non-zero ResultCode; 0 when applied
	Info     string // human-readable cause, never containing a UserSig
	Attempts int    // API calls made for this event (creates, gets and updates)
	// Detail is the dlq-result JSON for partial/rejected outcomes: the group when created and the
	// failed conversations with their codes. Nil for applied.
	Detail json.RawMessage
	// RetryStart is when the event's retrying began (its budget's start); set for Stalled.
	RetryStart time.Time
}

// ResultDetail is the dlq-result JSON of a partial or rejected outcome (CONTRACT §3).
type ResultDetail struct {
	GroupName string `json:"GroupName"`
	// GroupID is set when the group exists (partial outcomes).
	GroupID int64           `json:"GroupId,omitempty"`
	Failed  []FailedContact `json:"Failed"`
}

// FailedContact is one conversation that is not in the group, with the code that kept it out.
type FailedContact struct {
	Type       int    `json:"Type"`
	ToAccount  string `json:"To_Account,omitempty"`
	ToGroupID  string `json:"ToGroupId,omitempty"`
	ResultCode int    `json:"ResultCode"`
	ResultInfo string `json:"ResultInfo"`
}
