package dlq

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

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
	bad := func(h, problem string) error {
		return &HeaderError{Partition: m.Partition, Offset: m.Offset, Header: h, Problem: problem}
	}
	str := func(h string) (string, error) {
		v, ok := ours[h]
		if !ok {
			return "", bad(h, "missing")
		}
		if !utf8.Valid(v) {
			return "", bad(h, "is not valid UTF-8")
		}
		return string(v), nil
	}
	integer := func(h string, min int64) (int64, error) {
		s, err := str(h)
		if err != nil {
			return 0, err
		}
		n, perr := strconv.ParseInt(s, 10, 64)
		if perr != nil || n < min {
			return 0, bad(h, fmt.Sprintf("is %.64q, want a decimal integer >= %d", s, min))
		}
		return n, nil
	}
	timestamp := func(h string) (time.Time, error) {
		s, err := str(h)
		if err != nil {
			return time.Time{}, err
		}
		t, perr := time.Parse(time.RFC3339Nano, s)
		if perr != nil {
			return time.Time{}, bad(h, fmt.Sprintf("is %.64q, want an RFC 3339 time", s))
		}
		return t, nil
	}

	e := &Entry{
		Partition: m.Partition, Offset: m.Offset, Time: m.Time,
		Key: m.Key, Value: m.Value, Headers: orig,
	}
	var err error
	var n int64
	if e.Reason, err = str(HeaderReason); err != nil {
		return nil, err
	}
	if !ValidReason(e.Reason) {
		return nil, bad(HeaderReason, fmt.Sprintf("is %.64q, want one of %v", e.Reason, Reasons()))
	}
	if e.OriginalTopic, err = str(HeaderOriginalTopic); err != nil {
		return nil, err
	}
	if n, err = integer(HeaderOriginalPartition, 0); err != nil {
		return nil, err
	}
	e.OriginalPartition = int(n)
	if e.OriginalOffset, err = integer(HeaderOriginalOffset, 0); err != nil {
		return nil, err
	}
	if e.OriginalTime, err = timestamp(HeaderOriginalTimestamp); err != nil {
		return nil, err
	}
	code, err := str(HeaderErrorCode)
	if err != nil {
		return nil, err
	}
	if e.Code, err = ParseCode(code); err != nil {
		return nil, bad(HeaderErrorCode, fmt.Sprintf("is %.32q, want a decimal integer, network or timeout", code))
	}
	if e.Info, err = str(HeaderErrorInfo); err != nil {
		return nil, err
	}
	if n, err = integer(HeaderAttempts, 0); err != nil {
		return nil, err
	}
	e.Attempts = int(n)
	if e.FailedAt, err = timestamp(HeaderFailedAt); err != nil {
		return nil, err
	}
	if e.ConsumerGroup, err = str(HeaderConsumerGroup); err != nil {
		return nil, err
	}
	if n, err = integer(HeaderReplayCount, 0); err != nil {
		return nil, err
	}
	e.ReplayCount = int(n)
	if _, ok := ours[HeaderEventID]; ok {
		if e.EventID, err = str(HeaderEventID); err != nil {
			return nil, err
		}
	}
	if _, ok := ours[HeaderFromAccount]; ok {
		if e.FromAccount, err = str(HeaderFromAccount); err != nil {
			return nil, err
		}
	}
	if _, ok := ours[HeaderTruncated]; ok {
		if e.Truncated, err = str(HeaderTruncated); err != nil {
			return nil, err
		}
	}
	if v, ok := ours[HeaderResult]; ok {
		if !json.Valid(v) {
			return nil, bad(HeaderResult, "is not valid JSON")
		}
		e.Result = json.RawMessage(v)
	}
	if _, ok := ours[HeaderOriginalPartitionCount]; ok {
		if n, err = integer(HeaderOriginalPartitionCount, 1); err != nil {
			return nil, err
		}
		e.OriginalPartitions = int(n)
	}
	return e, nil
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
