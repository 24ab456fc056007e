package consumer

import (
	"context"

	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/dispatcher"
	"github.com/chatgroupd/chatgroupd/dlq"
)

// Dispatcher applies one validated event to the IM API. It blocks while the API can't be used
// (config/auth failure, outage) and returns an error only when the event did not end — ctx was
// cancelled by shutdown or revoke — in which case the record stays uncommitted.
//
// Its API requests must be made over net/http under ctx (as the dispatcher package's are): the
// consumer follows them through the net/http/httptrace hooks it puts on ctx (written, answered)
// to state in its final commit when its calls end, which shortens the successor's hold, and which
// records it never sent (no connection taken), which the successor then does not check. A
// Dispatcher whose requests the hooks can't see must run with Config.HandoverSkew < 0.
type Dispatcher interface {
	Dispatch(ctx context.Context, t dispatcher.Task) (dispatcher.Outcome, error)
}

// DeadLetterer writes one dead-letter record for rec and returns nil only once Kafka acknowledged
// it with acks=all. Until then the record is not ended and its offset is not committed.
type DeadLetterer interface {
	DeadLetter(ctx context.Context, rec kafka.Message, l dlq.Letter) error
}

// ShareSetter learns, on every rebalance, which of the topic's total partitions this member owns,
// so the dispatcher can take its share of the group's rate budget. Ids rather than a count let
// the shares of all members be whole numbers of calls that still add up to the budget.
//
// It is called with the generation's partitions once they are set up (none if it got none), and
// with none the moment the generation ends (before its drain).
type ShareSetter interface {
	SetPartitions(ids []int, total int)
}

// ShareStopper is what Config.Share may also implement to learn, just before the generation's
// SetPartitions(nil), that the generation ends because this member stops (Run's context ended)
// rather than for a rebalance: a fleet-budget dispatcher holds its demand for budget across a
// rebalance, but a member that leaves must not hold it: its demand follows its use, so the others
// grow into its share while it drains.
type ShareStopper interface {
	Stopping()
}
