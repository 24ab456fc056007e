// Package dlq writes dead-letter records (docs/dlq.md) and reads, filters and replays them for
// operators (docs/dlq.md, "Operator runbook"). Records are byte-for-byte copies of the original plus dlq-* headers, and
// replay state lives in a compacted Kafka ledger topic so a replay is done once from any machine.
package dlq

import (
	"fmt"
	"strconv"
)

// Reasons an event is dead-lettered.
const (
	ReasonInvalid   = "invalid"   // never sent to the API
	ReasonRejected  = "rejected"  // permanent API error, no group
	ReasonPartial   = "partial"   // group created, some conversations failed
	ReasonExhausted = "exhausted" // transient failures past the retry budget
)

// Header names added to every dead-letter record.
const (
	HeaderOriginalTopic     = "dlq-original-topic"
	HeaderOriginalPartition = "dlq-original-partition"
	HeaderOriginalOffset    = "dlq-original-offset"
	HeaderOriginalTimestamp = "dlq-original-timestamp"
	HeaderReason            = "dlq-reason"
	HeaderErrorCode         = "dlq-error-code"
	HeaderErrorInfo         = "dlq-error-info"
	HeaderAttempts          = "dlq-attempts"
	HeaderFailedAt          = "dlq-failed-at"
	HeaderEventID           = "dlq-event-id"
	HeaderFromAccount       = "dlq-from-account"
	HeaderConsumerGroup     = "dlq-consumer-group"
	HeaderReplayCount       = "dlq-replay-count"
	HeaderResult            = "dlq-result"
	// HeaderOriginalPartitionCount is how many partitions the original topic had when the letter
	// was written. Replay puts the event back in dlq-original-partition only while the topic still
	// has that many: with another count, the account's live events hash elsewhere.
	HeaderOriginalPartitionCount = "dlq-original-partition-count"
	// HeaderTruncated is present only on a letter the DLQ topic refused at full size: it says
	// what was left out (the value; if that was not enough, also the original key and headers
	// and dlq-result) and how many bytes each had. The dlq-original-* coordinates still name the
	// record, which stays readable in the event topic until its retention ends.
	HeaderTruncated = "dlq-truncated"
)

// Bounds of the dlq-* header values Record writes, so that a letter is never larger than its
// record plus MaxAddedBytes (see docs/dlq.md, "DLQ sizing").
const (
	MaxInfoBytes   = 1024     // dlq-error-info
	MaxResultBytes = 16 << 10 // dlq-result
	maxIDBytes     = 255      // dlq-event-id, dlq-from-account, dlq-consumer-group, dlq-original-topic
	maxTimeBytes   = 35       // RFC 3339 with nanoseconds and a zone offset
	// MaxAddedBytes bounds how many bytes Record adds to a record's size in a Kafka record batch:
	// the dlq-* headers at their bounds plus the growth of the record's length and header-count
	// varints. TestRecordOverheadBound computes the exact worst case and checks it stays below.
	MaxAddedBytes = 20 << 10
)

// Values of dlq-error-code that are not IM codes or HTTP statuses: an exhausted letter whose
// last failure got no usable answer from the API. The header and the code label of
// chatgroupd_dlq_records_total carry their names, "network" and "timeout" (as
// chatgroupd_api_requests_total names such calls "network"); Entry.Code the numbers.
const (
	CodeNetwork = -1 // connection refused or reset, TLS failure, unreadable or malformed answer
	CodeTimeout = -2 // no answer within the IM client's timeout
)

// Letter is why a record is dead-lettered. The consumer fills it; Record turns it and the original
// record into the DLQ record.
type Letter struct {
	Reason      string
	Code        int
	Info        string
	Attempts    int
	EventID     string // when known
	FromAccount string // when known
	ReplayCount int
	Result      []byte // dlq-result JSON for partial/rejected, else nil
	// OriginalPartitions is the original topic's partition count; 0 (unknown) omits
	// dlq-original-partition-count. The Writer fills it when zero.
	OriginalPartitions int
}

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
