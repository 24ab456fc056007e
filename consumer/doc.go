// Package consumer reads the event topic as a Kafka consumer group and drives each record to an
// end — applied, dead-lettered or dropped as a duplicate — keeping one account's events in order
// while many accounts proceed at once. It commits per-partition watermarks with the set of
// completed offsets above them in the commit metadata, so restarts and rebalances lose nothing and
// repeat nothing that is known done.
//
// # Reading order
//
// The files follow one record from the group to its commit; read them in this order:
//
//   - config.go, interfaces.go: what the consumer is given (Config, Dispatcher, DeadLetterer).
//   - consumer.go: Consumer, New and Run: join a generation, run it, leave; the timing bounds.
//   - group.go, rawgroup.go, assign.go, progress.go: group membership, heartbeats, the sticky
//     assignment, the leader's watch over partitions that make no progress.
//   - generation.go: one generation, in phases: start, stop the intake, drain, finish.
//   - engine.go: the engine's state (one mutex) and the types a record passes through: part,
//     horizon, account, rec.
//   - setup.go, partinit.go: partition set-up: committed positions and log bounds, then what the
//     previous owner left (watermark, horizon, completed ranges, hand-over).
//   - fetch.go, fetcher.go: the fetch of one partition: read-back below the watermark, then live.
//   - ingest.go (guard.go, route.go, window.go, tracker.go): a live record enters the engine:
//     dedupe, completed ranges, key check, buffer bound.
//   - schedule.go: per-account scheduling: seq order, reorder window, the horizon and metadata
//     pressure, runners.
//   - stated.go: an account's next record waits until a commit states its previous one ended.
//   - dispatch.go: a runner drives records to the Dispatcher.
//   - end.go, outcomes.go: a record ends: applied, dead-lettered, duplicates with it;
//     back-pressure released; the outcome counters by event type.
//   - lane.go, laneread.go, lanework.go, lanelist.go: the retry lane, when an account's head
//     stalls: park, read, work, unpark; the operator's list.
//   - commit.go: the commit: snapshot, encode, send, adopt; lag gauges.
//   - meta.go, metaencode.go, metadecode.go, metaverify.go, metabudget.go: the commit metadata
//     format, its encoder and decoder, the round-trip check before a commit, the size bound.
//   - handover.go: the final commit's statement of calls still running, and the uncertain hold.
//
// DESIGN.md explains why it works this way.
package consumer
