// Package metrics defines every Prometheus metric chatgroupd exports (docs/operations.md) on an injected
// registerer. Components receive the *Metrics they update; nothing touches the global registry.
package metrics

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Namespace prefixes every metric name.
const Namespace = "chatgroupd"

// Label names that readers of the collectors (the demo's summary) look values up by.
const (
	LabelOutcome = "outcome"
	LabelAPI     = "api"
	LabelCode    = "code"
	LabelReason  = "reason"
	// LabelEventType is the event_type label of the metrics that count events: one of the
	// event.Types() values, or EventTypeUnknown.
	LabelEventType = "event_type"
)

// EventTypeUnknown is the event_type label of a record whose type can't be read or is not one
// of event.Types(): only invalid records have it. (metrics does not import event, so that the
// chart's tests, which read these definitions, stay free of the Kafka client.)
const EventTypeUnknown = "unknown"

// EventTypes returns the event_type label values of known events: event.Types(), which
// TestEventTypesAreEvents holds this list to.
func EventTypes() []string {
	return []string{"contact_group.created", "contact_group.renamed", "contact_group.contacts_added",
		"contact_group.contacts_removed", "contact_group.deleted"}
}

// Outcomes returns every outcome label value of EventsProcessed.
func Outcomes() []string {
	return []string{OutcomeApplied, OutcomeDuplicate, OutcomeInvalid, OutcomeRejected, OutcomePartial, OutcomeExhausted}
}

// Outcome label values of EventsProcessed.
const (
	OutcomeApplied   = "applied"
	OutcomeDuplicate = "duplicate"
	OutcomeInvalid   = "invalid"
	OutcomeRejected  = "rejected"
	OutcomePartial   = "partial"
	OutcomeExhausted = "exhausted"
)

// Metrics holds the collectors. Label sets are bounded: no account or event ids ever.
type Metrics struct {
	EventsConsumed   prometheus.Counter
	EventsProcessed  *prometheus.CounterVec // outcome, event_type
	APIRequests      *prometheus.CounterVec // api, code
	APIDuration      *prometheus.HistogramVec
	DLQRecords       *prometheus.CounterVec // reason, code, event_type
	ConsumerLag      *prometheus.GaugeVec   // topic, partition
	OldestUnfinished *prometheus.GaugeVec   // topic, partition
	RateLimitWait    prometheus.Histogram
	RateLimitLimit   prometheus.Gauge
	Retries          *prometheus.CounterVec   // api, code
	EventE2E         *prometheus.HistogramVec // event_type
	BuildInfo        *prometheus.GaugeVec

	// Beyond the contract.
	HandoverHold  prometheus.Histogram // how long a new owner's uncertain accounts wait for the previous owner's calls
	AdmitWait     prometheus.Histogram // how long a granted call waits for a commit that lists its event
	SeqGaps       prometheus.Counter
	LateEvents    prometheus.Counter
	InFlight      prometheus.Gauge
	Ready         prometheus.Gauge
	Paused        *prometheus.GaugeVec // reason: config, outage
	Rebalances    prometheus.Counter
	AssignedParts prometheus.Gauge
	// AssignmentGaps counts partitions a group leader's assignment left unowned or gave twice.
	AssignmentGaps prometheus.Counter
	// StalledRejoins counts leader rejoins forced by partitions of other members without progress.
	StalledRejoins  prometheus.Counter
	Commits         *prometheus.CounterVec // result: ok, error
	DedupeEntries   prometheus.Gauge
	LimiterChanges  *prometheus.CounterVec // direction: down, up
	RateLimitHeld   *prometheus.CounterVec // api, reason: fresh_conn, late_arrival
	UncertainChecks *prometheus.CounterVec // found: true, false
	EventsMisrouted *prometheus.CounterVec // topic

	// Bad input and an unwritable DLQ.
	DLQWriteFailures *prometheus.CounterVec // reason: too_large, topic_missing, denied, timeout, other
	DLQTruncated     prometheus.Counter
	DLQBlockedParts  prometheus.Gauge
	KeyMismatches    prometheus.Counter
	// CommitMetaBytes is the size of the last commit metadata per partition, against the
	// consumer's MetadataMaxBytes; CommitMetaRefused counts encodings that failed their round trip.
	CommitMetaBytes   *prometheus.GaugeVec // topic, partition
	CommitMetaRefused prometheus.Counter
	OffsetResets      *prometheus.CounterVec // reason: no_commit, bad_metadata, moved_offset, beyond_log_end, below_log_start

	// Retry lane (consumer): accounts parked off their partition, keeping their order.
	LaneParked  *prometheus.GaugeVec   // topic, partition
	LaneDepth   *prometheus.GaugeVec   // topic, partition: lane records not yet ended
	LaneOldest  *prometheus.GaugeVec   // topic, partition: age of the oldest parked event (0 when none)
	LaneParks   *prometheus.CounterVec // reason: stall, budget
	LaneUnparks *prometheus.CounterVec // reason: drained

	// Fleet budget (package budget).
	FleetBudgetMode *prometheus.GaugeVec   // mode: static, kafka; 1 for the mode in use
	FleetPeers      prometheus.Gauge       // other replicas with a live entry in the budget topic
	FleetRecords    *prometheus.CounterVec // op: published, read, publish_error, read_error, invalid

	// Modes chosen at start (cmd/chatgroupd): --retry-lane and --fleet-budget=auto.
	RetryLaneMode *prometheus.GaugeVec // mode: on, off; 1 for the mode in use
	ModeFallback  *prometheus.GaugeVec // feature (retry_lane, fleet_budget), reason; 1 while auto runs the old mode
}

// Reasons of DLQWriteFailures.
const (
	DLQFailTooLarge     = "too_large"     // the DLQ topic refused the letter's size (it is retried truncated)
	DLQFailTopicMissing = "topic_missing" // the DLQ topic does not exist (deleted, never created)
	DLQFailDenied       = "denied"        // ACL or authentication refused the write
	DLQFailTimeout      = "timeout"       // no acknowledgement in time
	DLQFailOther        = "other"         // anything else: brokers unreachable, not enough replicas, …
)

// New registers every collector on reg (plus the Go runtime and process collectors when
// withRuntime) and returns them. version is reported by chatgroupd_build_info.
func New(reg prometheus.Registerer, version string, withRuntime bool) *Metrics {
	f := factory{reg}
	m := &Metrics{
		EventsConsumed: f.counter("events_consumed_total", "Records read from the event topic."),
		EventsProcessed: f.counterVec("events_processed_total",
			"Records that ended, by outcome (applied, duplicate, invalid, rejected, partial, exhausted) and event_type (unknown: an invalid record without a known type).", LabelOutcome, LabelEventType),
		APIRequests: f.counterVec("api_requests_total",
			"IM API calls by api and result code (IM code, http_<status> or network).", LabelAPI, LabelCode),
		APIDuration: f.histogramVec("api_request_duration_seconds", "IM API call latency.",
			prometheus.ExponentialBuckets(0.005, 2, 12), "api"),
		DLQRecords: f.counterVec("dlq_records_total", "Records written to the dead-letter topic, by reason, code and event_type.", LabelReason, LabelCode, LabelEventType),
		ConsumerLag: f.gaugeVec("consumer_lag",
			"Records between the committed offset and the end of the partition.", "topic", "partition"),
		OldestUnfinished: f.gaugeVec("oldest_unfinished_age_seconds",
			"Age of the oldest record fetched but not yet ended (0 when none).", "topic", "partition"),
		RateLimitWait: f.histogram("ratelimit_wait_seconds", "Time spent waiting for the rate limiter.",
			[]float64{0, .001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}),
		RateLimitLimit: f.gauge("ratelimit_limit", "This replica's current share of the create budget (calls/s)."),
		FleetBudgetMode: f.gaugeVec("fleet_budget_mode",
			"How the create budget is shared among replicas: 1 for the mode in use (static, kafka).", "mode"),
		FleetPeers: f.gauge("fleet_budget_peers", "Other replicas with a live entry in the budget topic (kafka mode)."),
		RetryLaneMode: f.gaugeVec("retry_lane_mode",
			"Whether stuck accounts are parked in the retry lane: 1 for the mode in use (on, off).", "mode"),
		ModeFallback: f.gaugeVec("mode_fallback",
			"1 while --retry-lane or --fleet-budget=auto runs the old mode because its topic is missing or unusable, by feature and reason.", "feature", "reason"),
		FleetRecords: f.counterVec("fleet_budget_records_total",
			"Budget topic records by op: published, read, publish_error, read_error, invalid.", "op"),
		Retries: f.counterVec("retries_total", "API calls retried, by api and the code that caused it.", "api", "code"),
		EventE2E: f.histogramVec("event_e2e_seconds", "From occurred_at (or the record time) to applied, by event_type.",
			prometheus.ExponentialBuckets(0.01, 2, 16), LabelEventType),
		BuildInfo: f.gaugeVec("build_info", "Build information; always 1.", "version", "goversion"),

		HandoverHold: f.histogram("handover_hold_seconds",
			"Per partition set up with uncertain records: how long their accounts wait for the previous owner's calls (0: its final commit said none ran any more).",
			[]float64{0, .1, .25, .5, 1, 2, 3, 4, 5, 6, 8, 12, 30}),
		AdmitWait: f.histogram("admit_wait_seconds",
			"Per event, from its first ask (before its first rate-limit grant) to the accepted commit that lists it as possibly sent, after which its call may be written.",
			[]float64{.001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 5}),
		SeqGaps:       f.counter("seq_gaps_total", "Events applied after the reorder window expired with a seq gap."),
		LateEvents:    f.counter("late_events_total", "Events whose seq was at or below the last applied for the account."),
		InFlight:      f.gauge("inflight_events", "Events dispatched and not yet ended."),
		Ready:         f.gauge("ready", "1 when in the group and the API accepts our credentials."),
		Paused:        f.gaugeVec("paused", "1 while taking no new work, by reason (config, outage).", "reason"),
		Rebalances:    f.counter("rebalances_total", "Consumer group generations joined."),
		AssignedParts: f.gauge("assigned_partitions", "Partitions this replica owns."),
		AssignmentGaps: f.counter("assignment_gaps_total",
			"Partitions this replica's assignment as group leader left without an owner or gave to two members (should stay 0)."),
		StalledRejoins: f.counter("stalled_partition_rejoins_total",
			"Rebalances this replica forced as group leader because partitions of other members made no progress with records waiting."),
		Commits:        f.counterVec("commits_total", "Offset commit requests by result.", "result"),
		DedupeEntries:  f.gauge("dedupe_entries", "Event ids remembered by the dedupe window."),
		LimiterChanges: f.counterVec("ratelimit_changes_total", "Adaptive limiter adjustments.", "direction"),
		RateLimitHeld: f.counterVec("ratelimit_held_seconds_total",
			"Time calls' slots were held in the limiter's window beyond their write, by api and reason (fresh_conn, late_arrival); while saturated its rate is about the share of the budget given up.",
			"api", "reason"),
		UncertainChecks: f.counterVec("uncertain_checks_total", "Existence checks before a create, by whether the group was found.", "found"),
		EventsMisrouted: f.counterVec("events_misrouted_total",
			"Records in another partition than the configured producer partitioner gives their key (a producer with another partitioner).", "topic"),

		DLQWriteFailures: f.counterVec("dlq_write_failures_total",
			"Dead-letter writes Kafka did not acknowledge, by reason (too_large, topic_missing, denied, timeout, other).", "reason"),
		DLQTruncated: f.counter("dlq_truncated_total",
			"Dead letters written without the original value (and maybe key and headers) because the DLQ topic refused them at full size."),
		DLQBlockedParts: f.gauge("dlq_blocked_partitions",
			"Partitions whose progress waits on a dead letter that could not be written (retrying)."),
		KeyMismatches: f.counter("key_mismatch_total",
			"Valid events whose record key is not their from_account (their order across partitions is not guaranteed)."),

		CommitMetaBytes: f.gaugeVec("commit_metadata_bytes",
			"Size of the last commit metadata (completed offsets above the watermark).", "topic", "partition"),
		CommitMetaRefused: f.counter("commit_metadata_refused_total",
			"Commit metadata that did not decode back to what was encoded; committed without completed ranges instead."),
		OffsetResets: f.counterVec("offset_resets_total",
			"Partitions taken over conservatively because the committed position could not be trusted, by reason (no_commit, bad_metadata, moved_offset, beyond_log_end, below_log_start).", "reason"),
		LaneParked: f.gaugeVec("lane_parked_accounts",
			"Accounts parked in the retry lane: their events wait there, in order, while the partition moves on.", "topic", "partition"),
		LaneDepth: f.gaugeVec("lane_depth",
			"Retry-lane records read and not yet ended.", "topic", "partition"),
		LaneOldest: f.gaugeVec("lane_oldest_parked_age_seconds",
			"Age of the oldest event waiting in the retry lane (since its retrying began; 0 when none).", "topic", "partition"),
		LaneParks: f.counterVec("lane_parks_total",
			"Accounts parked in the retry lane, by reason (stall: the head event failed transiently past --account-stall-limit; budget: earlier, because the events held back behind it would outgrow the commit metadata).", "reason"),
		LaneUnparks: f.counterVec("lane_unparks_total",
			"Accounts unparked, by reason (drained: the lane held nothing more of the account).", "reason"),
	}
	m.LaneParks.WithLabelValues("stall")
	m.LaneParks.WithLabelValues("budget")
	m.LaneUnparks.WithLabelValues("drained")
	for _, r := range []string{DLQFailTooLarge, DLQFailTopicMissing, DLQFailDenied, DLQFailTimeout, DLQFailOther} {
		m.DLQWriteFailures.WithLabelValues(r) // export zeros, so alerts see the series before the first failure
	}
	for _, r := range []string{"no_commit", "bad_metadata", "moved_offset", "beyond_log_end", "below_log_start"} {
		m.OffsetResets.WithLabelValues(r) // the same: "alert on any increase" needs the zero first
	}
	for _, o := range Outcomes() {
		for _, t := range EventTypes() {
			m.EventsProcessed.WithLabelValues(o, t) // the same: the rejected-lifecycle alert needs the zero first
		}
	}
	m.BuildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	if withRuntime {
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	return m
}

type factory struct{ reg prometheus.Registerer }

func (f factory) register(c prometheus.Collector) {
	if f.reg != nil {
		f.reg.MustRegister(c)
	}
}

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help})
	f.register(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, labels)
	f.register(c)
	return c
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help})
	f.register(g)
	return g
}

func (f factory) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}, labels)
	f.register(g)
	return g
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: name, Help: help, Buckets: buckets})
	f.register(h)
	return h
}

func (f factory) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: name, Help: help, Buckets: buckets}, labels)
	f.register(h)
	return h
}

// NewNop returns metrics registered nowhere, for tests and tools that don't export them.
func NewNop() *Metrics { return New(nil, "test", false) }
