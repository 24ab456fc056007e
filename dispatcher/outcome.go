package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/chatgroupd/chatgroupd/dlq"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
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
	// Admit, when set, is called before the event's first call asks for its rate-limit grant,
	// and asked again after each grant, before Lease is asked and before any byte of the request
	// is written; it blocks until the request may be written and returns an error only when ctx
	// ends first (the call then asks again, or the dispatch ends drained). Once it admitted an
	// event it admits it again at once. At most Config.AdmitAhead admitted events wait for their
	// first grant; the others wait to be asked. The consumer waits there until one of its
	// commits that lists the event's record as possibly written was accepted, so whoever takes
	// the account over after a crash knows which records the dead owner can have written.
	Admit func(ctx context.Context) error
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

// ResultDetail is the dlq-result JSON of a partial or rejected outcome (docs/dlq.md).
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

func (r *run) applied() *Outcome { return &Outcome{Result: Applied, Attempts: r.attempts} }

// rejected is the outcome of a permanent failure: no group was created.
func (r *run) rejected(e *im.Error) Outcome {
	det := ResultDetail{GroupName: r.ev.GroupName, Failed: failedResults(e.Results)}
	if e.Group != nil && e.Group.GroupID != 0 {
		det.GroupID = e.Group.GroupID
	}
	if len(det.Failed) == 0 {
		// Every conversation of the event is out (none for a rename or a delete).
		det.Failed = []FailedContact{}
		for _, c := range contactItems(r.ev.Contacts) {
			det.Failed = append(det.Failed, failedContact(c, errCode(e), e.Info))
		}
	}
	return Outcome{Result: Rejected, Code: errCode(e), Info: e.Error(), Attempts: r.attempts, Detail: mustJSON(det)}
}

// duplicate is the outcome under DuplicateReject of an event naming group, which its user
// already has without the missing conversations.
func (r *run) duplicate(group *im.GroupItem, missing []im.ContactItem) Outcome {
	code := r.d.cfg.DuplicateCode
	info := fmt.Sprintf("group %q already exists for %q without %d of the event's conversations (duplicate names: reject)",
		r.ev.GroupName, r.ev.FromAccount, len(missing))
	det := ResultDetail{GroupName: r.ev.GroupName, GroupID: group.GroupID}
	for _, c := range missing {
		det.Failed = append(det.Failed, failedContact(c, code, "group name already exists"))
	}
	return Outcome{Result: Rejected, Code: code, Info: info, Attempts: r.attempts, Detail: mustJSON(det)}
}

// partial is the outcome of a group that exists without some of its conversations.
func (r *run) partial(e *im.Error) *Outcome {
	det := ResultDetail{GroupName: r.ev.GroupName, Failed: failedResults(e.Results)}
	if e.Group != nil {
		det.GroupID = e.Group.GroupID
		if e.Group.GroupName != "" {
			det.GroupName = e.Group.GroupName
		}
	}
	code, info := errCode(e), e.Info
	if len(det.Failed) > 0 {
		code, info = det.Failed[0].ResultCode, det.Failed[0].ResultInfo
	}
	return &Outcome{Result: Partial, Code: code, Attempts: r.attempts, Detail: mustJSON(det),
		Info: fmt.Sprintf("group %q exists but %d of %d conversations failed: first code %d: %s",
			det.GroupName, len(det.Failed), len(r.ev.Contacts), code, info)}
}

// exhausted is the outcome of transient failures past the retry budget.
func (r *run) exhausted(e *im.Error) Outcome {
	return Outcome{Result: Exhausted, Code: exhaustedCode(e), Attempts: r.attempts,
		Info: fmt.Sprintf("retry budget %v spent after %d attempts; last: %v", r.d.cfg.RetryBudget, r.attempts, e)}
}

// exhaustedCode is errCode, except that a last failure with no answer at all gets
// dlq.CodeTimeout or dlq.CodeNetwork: 0 is the code of invalid events.
func exhaustedCode(e *im.Error) int {
	if c := errCode(e); c != 0 {
		return c
	}
	var ne net.Error
	if errors.Is(e, context.DeadlineExceeded) || errors.As(e, &ne) && ne.Timeout() {
		return dlq.CodeTimeout
	}
	return dlq.CodeNetwork
}

// errCode is the IM code of e, or its HTTP status when there is none (0 for network failures).
func errCode(e *im.Error) int {
	switch {
	case e.Code != 0:
		return e.Code
	case e.HTTPStatus != 0 && e.HTTPStatus != http.StatusOK:
		return e.HTTPStatus
	}
	return 0
}

func asIMError(api string, err error) *im.Error {
	if err == nil {
		return nil
	}
	var e *im.Error
	if errors.As(err, &e) {
		return e
	}
	return &im.Error{API: api, Class: im.ClassTransient, Network: true, Err: err}
}

func failedResults(res []im.ContactResult) []FailedContact {
	var out []FailedContact
	for _, x := range res {
		if x.ResultCode != 0 {
			out = append(out, failedContact(x.ContactItem, x.ResultCode, x.ResultInfo))
		}
	}
	return out
}

func failedContact(c im.ContactItem, code int, info string) FailedContact {
	return FailedContact{Type: c.Type, ToAccount: c.ToAccount, ToGroupID: c.ToGroupID, ResultCode: code, ResultInfo: info}
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("dispatcher: marshal %T: %v", v, err)) // plain structs of strings and ints
	}
	return b
}
