package dlq

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/segmentio/kafka-go"
)

// Entry is one dead-letter record read back from the DLQ topic.
type Entry struct {
	// Where the DLQ record itself sits.
	Partition int       `json:"partition"`
	Offset    int64     `json:"offset"`
	Time      time.Time `json:"time"` // the DLQ record's timestamp

	// The original record: key, value and headers as they were (dlq-* headers removed).
	Key     []byte         `json:"-"`
	Value   []byte         `json:"-"`
	Headers []kafka.Header `json:"-"`

	OriginalTopic     string    `json:"original_topic"`
	OriginalPartition int       `json:"original_partition"`
	OriginalOffset    int64     `json:"original_offset"`
	OriginalTime      time.Time `json:"original_time"`
	// OriginalPartitions is dlq-original-partition-count: the original topic's partition count
	// when the letter was written, 0 when the letter does not say.
	OriginalPartitions int `json:"original_partitions,omitempty"`

	Reason        string          `json:"reason"`
	Code          int             `json:"code"`
	Info          string          `json:"info"`
	Attempts      int             `json:"attempts"`
	FailedAt      time.Time       `json:"failed_at"`
	EventID       string          `json:"event_id,omitempty"`
	FromAccount   string          `json:"from_account,omitempty"`
	ConsumerGroup string          `json:"consumer_group"`
	ReplayCount   int             `json:"replay_count"`
	Result        json.RawMessage `json:"result,omitempty"`
	// EventType is the original value's event_type as written, whether or not it is a known
	// type ("" when the value has none or the letter was truncated without it).
	EventType event.Type `json:"event_type,omitempty"`
	// Truncated is dlq-truncated: what the letter left out because the DLQ topic refused it at
	// full size ("" for a complete letter). Such a letter can't be replayed from the DLQ.
	Truncated string `json:"truncated,omitempty"`

	// Replayed is true when the replay ledger records a replay of this DLQ record.
	Replayed   bool      `json:"replayed"`
	ReplayedAt time.Time `json:"replayed_at,omitzero"`
	// Duplicates counts further letters for the same original record (a retried DLQ write),
	// which List and Replay collapse into this one.
	Duplicates int `json:"duplicates,omitempty"`
}

// Account is the account the record belongs to: dlq-from-account, or the record key when the
// event was too broken to name one.
func (e *Entry) Account() string {
	if e.FromAccount != "" {
		return e.FromAccount
	}
	return string(e.Key)
}

// ErrNotDLQRecord is matched (errors.Is) by every error Parse returns: the record lacks our
// headers or carries malformed ones, so it was not written by chatgroupd.
var ErrNotDLQRecord = errors.New("not a chatgroupd DLQ record")

// HeaderError says which dlq-* header of which record is missing or malformed.
type HeaderError struct {
	Partition int
	Offset    int64
	Header    string
	Problem   string
}

// Error names the record, the header and the problem.
func (e *HeaderError) Error() string {
	return fmt.Sprintf("record at partition %d offset %d is %v: header %s %s",
		e.Partition, e.Offset, ErrNotDLQRecord, e.Header, e.Problem)
}

// Is makes errors.Is(err, ErrNotDLQRecord) true.
func (e *HeaderError) Is(target error) bool { return target == ErrNotDLQRecord }

// Parse reads a DLQ record back: the dlq-* headers into typed fields and the original key, value
// and headers. Every failure is a *HeaderError.
func Parse(m kafka.Message) (*Entry, error) {
	orig, ours := splitHeaders(m.Headers)
	r := &headerReader{m: m, ours: ours}
	e := &Entry{
		Partition: m.Partition, Offset: m.Offset, Time: m.Time,
		Key: m.Key, Value: m.Value, Headers: orig,
	}
	e.Reason = r.str(HeaderReason)
	if r.err == nil && !ValidReason(e.Reason) {
		r.fail(HeaderReason, fmt.Sprintf("is %.64q, want one of %v", e.Reason, Reasons()))
	}
	e.OriginalTopic = r.str(HeaderOriginalTopic)
	e.OriginalPartition = int(r.integer(HeaderOriginalPartition, 0))
	e.OriginalOffset = r.integer(HeaderOriginalOffset, 0)
	e.OriginalTime = r.timestamp(HeaderOriginalTimestamp)
	e.Code = r.code(HeaderErrorCode)
	e.Info = r.str(HeaderErrorInfo)
	e.Attempts = int(r.integer(HeaderAttempts, 0))
	e.FailedAt = r.timestamp(HeaderFailedAt)
	e.ConsumerGroup = r.str(HeaderConsumerGroup)
	e.ReplayCount = int(r.integer(HeaderReplayCount, 0))
	e.EventID = r.optional(HeaderEventID)
	e.FromAccount = r.optional(HeaderFromAccount)
	e.Truncated = r.optional(HeaderTruncated)
	e.EventType = event.PeekType(m.Value)
	e.Result = r.json(HeaderResult)
	if r.has(HeaderOriginalPartitionCount) {
		e.OriginalPartitions = int(r.integer(HeaderOriginalPartitionCount, 1))
	}
	if r.err != nil {
		return nil, r.err
	}
	return e, nil
}

// headerReader reads the dlq-* headers of one record into typed values. It keeps the first
// problem; once there is one, every later read returns the zero value, so Parse reports the
// headers in the order it reads them.
type headerReader struct {
	m    kafka.Message
	ours map[string][]byte
	err  error
}

func (r *headerReader) fail(h, problem string) {
	if r.err == nil {
		r.err = &HeaderError{Partition: r.m.Partition, Offset: r.m.Offset, Header: h, Problem: problem}
	}
}

func (r *headerReader) has(h string) bool {
	_, ok := r.ours[h]
	return ok
}

// str is a required header's UTF-8 value.
func (r *headerReader) str(h string) string {
	if r.err != nil {
		return ""
	}
	v, ok := r.ours[h]
	if !ok {
		r.fail(h, "missing")
		return ""
	}
	if !utf8.Valid(v) {
		r.fail(h, "is not valid UTF-8")
		return ""
	}
	return string(v)
}

// optional is str for a header a letter may leave out ("" then).
func (r *headerReader) optional(h string) string {
	if !r.has(h) {
		return ""
	}
	return r.str(h)
}

// integer is a required decimal header of at least min.
func (r *headerReader) integer(h string, min int64) int64 {
	s := r.str(h)
	if r.err != nil {
		return 0
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < min {
		r.fail(h, fmt.Sprintf("is %.64q, want a decimal integer >= %d", s, min))
		return 0
	}
	return n
}

// timestamp is a required RFC 3339 header.
func (r *headerReader) timestamp(h string) time.Time {
	s := r.str(h)
	if r.err != nil {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		r.fail(h, fmt.Sprintf("is %.64q, want an RFC 3339 time", s))
		return time.Time{}
	}
	return t
}

// code is a required dlq-error-code header, as FormatCode writes it.
func (r *headerReader) code(h string) int {
	s := r.str(h)
	if r.err != nil {
		return 0
	}
	n, err := ParseCode(s)
	if err != nil {
		r.fail(h, fmt.Sprintf("is %.32q, want a decimal integer, network or timeout", s))
		return 0
	}
	return n
}

// json is an optional header holding JSON (nil when absent).
func (r *headerReader) json(h string) json.RawMessage {
	v, ok := r.ours[h]
	if !ok || r.err != nil {
		return nil
	}
	if !json.Valid(v) {
		r.fail(h, "is not valid JSON")
		return nil
	}
	return json.RawMessage(v)
}

// splitHeaders separates the block of dlq-* headers Record appended (the tail of the list, each
// name at most once, starting with dlq-original-topic) from the original headers before it. An original header that happens to
// share a dlq-* name therefore survives a replay.
func splitHeaders(hs []kafka.Header) (orig []kafka.Header, ours map[string][]byte) {
	ours = map[string][]byte{}
	i := len(hs)
	for i > 0 {
		h := hs[i-1]
		if !isOurHeader(h.Key) {
			break
		}
		if _, dup := ours[h.Key]; dup {
			break
		}
		ours[h.Key] = h.Value
		i--
		if h.Key == HeaderOriginalTopic { // Record writes it first: the block ends here
			break
		}
	}
	return hs[:i:i], ours
}
