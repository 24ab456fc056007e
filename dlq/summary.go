package dlq

import (
	"fmt"
	"slices"
	"strings"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// Summary reports what Replay did (or, with DryRun, would do). Before the writes (the Plan
// callback) Replayed counts the records to replay.
type Summary struct {
	DryRun bool `json:"dry_run"`
	// Source is the DLQ topic read; Target the topic replays go to.
	Source           string `json:"dlq_topic"`
	Target           string `json:"topic"`
	TargetPartitions int    `json:"topic_partitions"`
	Partitioner      string `json:"partitioner"`

	Scanned         int `json:"scanned"`          // DLQ records read
	Malformed       int `json:"malformed"`        // skipped: not a chatgroupd DLQ record
	Duplicates      int `json:"duplicates"`       // skipped: another letter for an original record already counted
	LedgerMalformed int `json:"ledger_malformed"` // unreadable replay-ledger records skipped
	FilteredOut     int `json:"filtered_out"`     // did not match the filter
	Matched         int `json:"matched"`          // matched the filter
	// OtherTopic counts matching letters whose dlq-original-topic is not Target, by topic.
	OtherTopic      int            `json:"other_topic"`
	OtherTopics     map[string]int `json:"other_topics,omitempty"`
	Replayed        int            `json:"replayed"`         // produced to the main topic and acknowledged (dry run, plan: would be)
	AlreadyReplayed int            `json:"already_replayed"` // skipped: in the ledger (use Again)
	OverMax         int            `json:"over_max"`         // skipped: dlq-replay-count >= MaxReplays
	OverLimit       int            `json:"over_limit"`       // skipped: past Limit
	// Truncated counts letters skipped because they lack the event (dlq-truncated); the event is
	// at TruncatedRecords' dlq-original-* coordinates while the event topic still holds it.
	Truncated        int      `json:"truncated"`
	TruncatedRecords []string `json:"truncated_records,omitempty"`
	// ToOriginalPartition counts replays (planned) to their dlq-original-partition; ByPartitioner
	// those placed by Partitioner instead, FallbackReasons saying why (reason → count).
	ToOriginalPartition int            `json:"to_original_partition"`
	ByPartitioner       int            `json:"by_partitioner"`
	FallbackReasons     map[string]int `json:"fallback_reasons,omitempty"`
	// ByEventType counts the replays (planned) by the event's event_type ("unknown" when the
	// value has none that is known: an invalid event).
	ByEventType    map[string]int `json:"by_event_type,omitempty"`
	OverMaxRecords []string       `json:"over_max_records,omitempty"`
	// ReplayedRecords names the DLQ records replayed (or that would be, in a dry run).
	ReplayedRecords []string `json:"replayed_records,omitempty"`
}

func (s *Summary) count(r route) {
	if s.ByEventType == nil {
		s.ByEventType = map[string]int{}
	}
	s.ByEventType[eventTypeLabel(r.e.EventType)]++
	if r.fallback == "" {
		s.ToOriginalPartition++
		return
	}
	s.ByPartitioner++
	if s.FallbackReasons == nil {
		s.FallbackReasons = map[string]int{}
	}
	s.FallbackReasons[r.fallback]++
}

// eventTypeLabel is the event_type of an event of type t in dlq_records_total and
// Summary.ByEventType.
func eventTypeLabel(t event.Type) string {
	if t.Known() {
		return string(t)
	}
	return metrics.EventTypeUnknown
}

// OtherTopicsText renders OtherTopics as `"a" (3), "b" (1)`, sorted by topic: the refusal's
// error and the printed plan name them the same way.
func (s Summary) OtherTopicsText() string {
	topics := make([]string, 0, len(s.OtherTopics))
	for k := range s.OtherTopics {
		topics = append(topics, k)
	}
	slices.Sort(topics)
	parts := make([]string, len(topics))
	for i, k := range topics {
		parts[i] = fmt.Sprintf("%q (%d)", k, s.OtherTopics[k])
	}
	return strings.Join(parts, ", ")
}
