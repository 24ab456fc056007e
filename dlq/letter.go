// Package dlq writes dead-letter records (CONTRACT §3) and reads, filters and replays them for
// operators (CONTRACT §4). Records are byte-for-byte copies of the original plus dlq-* headers, and
// replay state lives in a compacted Kafka ledger topic so a replay is done once from any machine.
package dlq

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
