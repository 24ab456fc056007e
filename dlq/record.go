package dlq

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/event"
)

// Reasons returns every dlq-reason value, in the order operators usually read them.
func Reasons() []string {
	return []string{ReasonInvalid, ReasonRejected, ReasonPartial, ReasonExhausted}
}

// ValidReason reports whether r is one of the four dlq-reason values.
func ValidReason(r string) bool {
	switch r {
	case ReasonInvalid, ReasonRejected, ReasonPartial, ReasonExhausted:
		return true
	}
	return false
}

// isOurHeader reports whether k is a header Record appends; Parse strips exactly these from the tail of
// a record to recover the original headers.
func isOurHeader(k string) bool {
	switch k {
	case HeaderOriginalPartitionCount:
		return true
	case HeaderOriginalTopic, HeaderOriginalPartition, HeaderOriginalOffset, HeaderOriginalTimestamp,
		HeaderReason, HeaderErrorCode, HeaderErrorInfo, HeaderAttempts, HeaderFailedAt, HeaderEventID,
		HeaderFromAccount, HeaderConsumerGroup, HeaderReplayCount, HeaderResult, HeaderTruncated:
		return true
	}
	return false
}

// ourHeaderCount is how many headers Record appends at most.
const ourHeaderCount = 15

// timeFormat is RFC 3339 with the sub-second digits Kafka timestamps carry (milliseconds), so the
// original timestamp survives the round trip.
const timeFormat = time.RFC3339Nano

// MaxReplayCount caps the replay-count header chatgroupd trusts; dlq replay refuses to go past
// --max-replays long before.
const MaxReplayCount = 1000

// ReplayCount is the replay-count of an event-topic record, the one value both the consumer's
// dedupe and Record's dlq-replay-count use. It is trusted only as dlq replay writes it: exactly one
// replay-count header, a decimal in 1..MaxReplayCount, alongside exactly one replay-of header
// naming a DLQ record ("<topic>/<partition>/<offset>"). Anything else (a producer's own
// replay-count, two of them, a huge number) counts as an original record: 0, so it can neither
// dodge dedupe nor --max-replays.
func ReplayCount(hs []kafka.Header) int {
	var count, of []byte
	nc, no := 0, 0
	for _, h := range hs {
		switch h.Key {
		case event.HeaderReplayCount:
			count, nc = h.Value, nc+1
		case event.HeaderReplayOf:
			of, no = h.Value, no+1
		}
	}
	if nc != 1 || no != 1 || len(count) > 4 || !validCoordinate(string(of)) {
		return 0
	}
	n, err := strconv.Atoi(string(count))
	if err != nil || n < 1 || n > MaxReplayCount || strconv.Itoa(n) != string(count) {
		return 0
	}
	return n
}

// validCoordinate reports whether s has the form Coordinate writes.
func validCoordinate(s string) bool {
	rest, off, ok := cutLast(s)
	if !ok {
		return false
	}
	topic, part, ok := cutLast(rest)
	if !ok || topic == "" || len(topic) > 249 {
		return false
	}
	p, err1 := strconv.ParseInt(part, 10, 32)
	o, err2 := strconv.ParseInt(off, 10, 64)
	return err1 == nil && err2 == nil && p >= 0 && o >= 0
}

func cutLast(s string) (before, after string, ok bool) {
	i := strings.LastIndexByte(s, '/')
	if i < 0 {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

// FormatCode is the dlq-error-code header value of code: "network" and "timeout" for
// CodeNetwork and CodeTimeout, else the decimal number.
func FormatCode(code int) string {
	switch code {
	case CodeNetwork:
		return "network"
	case CodeTimeout:
		return "timeout"
	}
	return strconv.Itoa(code)
}

// ParseCode reads a dlq-error-code value (or a --code filter item) back: FormatCode's names or a
// decimal integer.
func ParseCode(s string) (int, error) {
	switch s {
	case "network":
		return CodeNetwork, nil
	case "timeout":
		return CodeTimeout, nil
	}
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("code %.32q: want an integer, network or timeout", s)
	}
	return int(n), nil
}

// Record builds the dead-letter record for orig: key, value and headers copied byte for byte, then
// the dlq-* headers of docs/dlq.md, each bounded (dlq-error-info to MaxInfoBytes, dlq-result to
// MaxResultBytes), so the letter is at most MaxAddedBytes larger than orig. dlq-replay-count is
// ReplayCount(orig.Headers) when that trusts one, else l.ReplayCount. The returned message has
// no Topic: the writer that sends it names the DLQ topic.
func Record(orig kafka.Message, l Letter, group string, failedAt time.Time) kafka.Message {
	return record(orig, l, group, failedAt, keepAll)
}

// What a letter keeps of the original record.
type keep int

const (
	keepAll   keep = iota // the whole record
	dropValue             // the value left out
	dropAll               // value, headers, dlq-result and a key over maxIDBytes left out
)

func record(orig kafka.Message, l Letter, group string, failedAt time.Time, k keep) kafka.Message {
	replayCount := ReplayCount(orig.Headers)
	if replayCount == 0 {
		replayCount = min(max(l.ReplayCount, 0), MaxReplayCount)
	}
	key, value := cloneBytes(orig.Key), cloneBytes(orig.Value)
	result := boundResult(l.Result)
	var origHeaders []kafka.Header
	var dropped []string
	if k >= dropValue && orig.Value != nil {
		value = nil
		dropped = append(dropped, "value "+strconv.Itoa(len(orig.Value))+" bytes")
	}
	if k == dropAll {
		if len(orig.Headers) > 0 {
			n := 0
			for _, h := range orig.Headers {
				n += len(h.Key) + len(h.Value)
			}
			dropped = append(dropped, "headers "+strconv.Itoa(len(orig.Headers))+" ("+strconv.Itoa(n)+" bytes)")
		}
		if len(key) > maxIDBytes {
			dropped = append(dropped, "key "+strconv.Itoa(len(key))+" bytes")
			key = nil
		}
		if len(result) > 0 {
			dropped = append(dropped, "dlq-result "+strconv.Itoa(len(result))+" bytes")
			result = nil
		}
	} else {
		origHeaders = orig.Headers
	}
	hs := make([]kafka.Header, 0, len(origHeaders)+ourHeaderCount)
	for _, h := range origHeaders {
		hs = append(hs, kafka.Header{Key: h.Key, Value: cloneBytes(h.Value)})
	}
	add := func(k, v string) { hs = append(hs, kafka.Header{Key: k, Value: []byte(v)}) }
	add(HeaderOriginalTopic, bound(orig.Topic, maxIDBytes))
	add(HeaderOriginalPartition, strconv.Itoa(orig.Partition))
	if l.OriginalPartitions > 0 {
		add(HeaderOriginalPartitionCount, strconv.Itoa(l.OriginalPartitions))
	}
	add(HeaderOriginalOffset, strconv.FormatInt(orig.Offset, 10))
	add(HeaderOriginalTimestamp, bound(orig.Time.UTC().Format(timeFormat), maxTimeBytes))
	add(HeaderReason, bound(l.Reason, 16))
	add(HeaderErrorCode, FormatCode(l.Code))
	add(HeaderErrorInfo, bound(l.Info, MaxInfoBytes))
	add(HeaderAttempts, strconv.Itoa(max(l.Attempts, 0)))
	add(HeaderFailedAt, bound(failedAt.UTC().Format(timeFormat), maxTimeBytes))
	if l.EventID != "" {
		add(HeaderEventID, bound(l.EventID, maxIDBytes))
	}
	if l.FromAccount != "" {
		add(HeaderFromAccount, bound(l.FromAccount, maxIDBytes))
	}
	add(HeaderConsumerGroup, bound(group, maxIDBytes))
	add(HeaderReplayCount, strconv.Itoa(replayCount))
	if len(result) > 0 {
		hs = append(hs, kafka.Header{Key: HeaderResult, Value: result})
	}
	if len(dropped) > 0 {
		add(HeaderTruncated, "the DLQ topic refused the full letter as too large; left out: "+strings.Join(dropped, ", "))
	}
	return kafka.Message{Key: key, Value: value, Headers: hs}
}

// bound cuts s to at most n bytes on a rune boundary, ending a cut string with "…".
func bound(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// boundResult keeps dlq-result valid JSON within MaxResultBytes: first every string in it (the
// API's ResultInfo texts, ids) is cut to 64 bytes; if that is not enough, a small object says
// how large it was.
func boundResult(r []byte) []byte {
	if len(r) <= MaxResultBytes {
		return cloneBytes(r)
	}
	var v any
	if json.Unmarshal(r, &v) == nil {
		if b, err := json.Marshal(shortenStrings(v, 64)); err == nil && len(b) <= MaxResultBytes {
			return b
		}
	}
	b, _ := json.Marshal(map[string]any{"dlq_result_dropped": "over the " + strconv.Itoa(MaxResultBytes) + "-byte bound", "bytes": len(r)})
	return b
}

func shortenStrings(v any, n int) any {
	switch x := v.(type) {
	case string:
		return bound(x, n)
	case []any:
		for i := range x {
			x[i] = shortenStrings(x[i], n)
		}
	case map[string]any:
		for k, e := range x {
			x[k] = shortenStrings(e, n)
		}
	}
	return v
}

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

// Coordinate names the DLQ record as "<dlq-topic>/<partition>/<offset>", the form of the
// replay-of header and the replay ledger key.
func Coordinate(dlqTopic string, partition int, offset int64) string {
	return dlqTopic + "/" + strconv.Itoa(partition) + "/" + strconv.FormatInt(offset, 10)
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

// ReplayMessage is the record Replay produces to the main topic for e: the original key, value and
// headers, with replay-count set to e.ReplayCount+1 and replay-of naming the DLQ record.
func ReplayMessage(e *Entry, dlqTopic string) kafka.Message {
	hs := make([]kafka.Header, 0, len(e.Headers)+2)
	for _, h := range e.Headers {
		if h.Key == event.HeaderReplayCount || h.Key == event.HeaderReplayOf {
			continue
		}
		hs = append(hs, kafka.Header{Key: h.Key, Value: cloneBytes(h.Value)})
	}
	hs = append(hs,
		kafka.Header{Key: event.HeaderReplayCount, Value: []byte(strconv.Itoa(e.ReplayCount + 1))},
		kafka.Header{Key: event.HeaderReplayOf, Value: []byte(Coordinate(dlqTopic, e.Partition, e.Offset))},
	)
	return kafka.Message{Key: cloneBytes(e.Key), Value: cloneBytes(e.Value), Headers: hs}
}

func lastHeader(hs []kafka.Header, key string) ([]byte, bool) {
	for i := len(hs) - 1; i >= 0; i-- {
		if hs[i].Key == key {
			return hs[i].Value, true
		}
	}
	return nil, false
}

// cloneBytes copies b, keeping nil distinct from empty: Kafka tells a null key from an empty one.
func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}
