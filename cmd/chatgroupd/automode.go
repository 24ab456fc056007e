package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/metrics"
)

// --retry-lane and --fleet-budget default to auto: the guarantee each gives ("a stuck account
// never holds up its partition", "one budget for the fleet") holds whenever its topic exists or
// can be created, and a deployment whose credentials may not create topics keeps running the
// old mode, loudly (an error log naming the topic to create, chatgroupd_mode_fallback, an
// alert). Every replica decides from the same broker state, so a fleet ends up in one mode; a
// replica that fell back watches for the topic and restarts itself once it is there, so a fleet
// never keeps two modes for longer than one check interval (see modeWatch).

// Values of --retry-lane; auto is also a value of --fleet-budget.
const (
	laneOff  = "off"
	laneOn   = "on"
	modeAuto = "auto"
)

// Features as chatgroupd_mode_fallback names them.
const (
	featureLane   = "retry_lane"
	featureBudget = "fleet_budget"
)

// Reasons of a fallback (chatgroupd_mode_fallback's reason label).
const (
	reasonCreateRefused = "create_refused" // missing, and the broker refused to create it
	reasonNoAccess      = "no_access"      // exists or not: we may not describe it
	reasonPartitions    = "partitions"     // the lane topic has fewer partitions than the event topic
)

// topicAdmin is what choosing an auto mode needs of Kafka; *kafka.Client has it.
type topicAdmin interface {
	Metadata(context.Context, *kafka.MetadataRequest) (*kafka.MetadataResponse, error)
	CreateTopics(context.Context, *kafka.CreateTopicsRequest) (*kafka.CreateTopicsResponse, error)
	ListOffsets(context.Context, *kafka.ListOffsetsRequest) (*kafka.ListOffsetsResponse, error)
}

// topicNeed is the topic one feature runs on.
type topicNeed struct {
	feature string // featureLane or featureBudget
	flag    string // "--retry-lane=auto", for messages
	topic   string
	// samePartitions: at least the event topic's partitions (the lane); else exactly one is
	// created and any count is accepted (the budget uses partition 0).
	samePartitions bool
	configs        []kafka.ConfigEntry
}

// unusable says why a feature's topic can't be used. It is what auto falls back on, and what
// a required mode (on, kafka) fails to start with.
type unusable struct {
	need   topicNeed
	reason string
	detail string // what was found, e.g. the broker's refusal
	fix    string // what an operator runs
}

func (u *unusable) Error() string {
	return fmt.Sprintf("%s: topic %s unusable (%s): %s; %s", u.need.flag, u.need.topic, u.reason, u.detail, u.fix)
}

// errLaneInUse: the lane topic has too few partitions but holds records — they may be parked
// events, and running without the lane would apply their accounts' later events before them.
var errLaneInUse = errors.New("retry lane topic has too few partitions and holds records")

// errModeChange ends a replica that fell back once the topic it lacked is usable: its restart
// runs the full mode, like the rest of the fleet.
var errModeChange = errors.New("mode change")

// checkTopic tells whether need's topic is usable, creating it when missing and create is set.
// It returns (nil, nil) when usable, an *unusable when the broker's answer is definite (no ACL,
// policy, too few partitions), and an error otherwise (unreachable, no controller yet, the event
// topic missing): the caller retries those, since falling back on a passing fault could leave
// this replica in another mode than the fleet.
func checkTopic(ctx context.Context, adm topicAdmin, eventTopic string, need topicNeed, create bool) (*unusable, error) {
	md, err := adm.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{eventTopic, need.topic}})
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	var ev, nt *kafka.Topic
	for i := range md.Topics {
		switch md.Topics[i].Name {
		case eventTopic:
			ev = &md.Topics[i]
		case need.topic:
			nt = &md.Topics[i]
		}
	}
	if ev == nil || ev.Error != nil || len(ev.Partitions) == 0 {
		var terr error = kafka.UnknownTopicOrPartition
		if ev != nil && ev.Error != nil {
			terr = ev.Error
		}
		return nil, fmt.Errorf("event topic %s: %w", eventTopic, terr)
	}
	want := 1
	if need.samePartitions {
		want = len(ev.Partitions)
	}
	switch {
	case nt != nil && nt.Error == nil && len(nt.Partitions) >= want:
		return nil, nil
	case nt != nil && nt.Error == nil && len(nt.Partitions) > 0:
		return laneTooSmall(ctx, adm, need, len(nt.Partitions), want)
	case nt != nil && nt.Error != nil && !errors.Is(nt.Error, kafka.UnknownTopicOrPartition):
		if isDefinite(nt.Error) {
			return &unusable{need: need, reason: reasonNoAccess, detail: fmt.Sprintf("describing it: %v", nt.Error),
				fix: fmt.Sprintf("grant this principal Describe, Read and Write on topic %s", need.topic)}, nil
		}
		return nil, fmt.Errorf("topic %s: %w", need.topic, nt.Error)
	}
	// Missing.
	fix := fmt.Sprintf("create it (kafka-topics.sh --create --topic %s --partitions %d --replication-factor %d) or grant this principal Create on it",
		need.topic, want, replicas(ev))
	if !create {
		return &unusable{need: need, reason: reasonCreateRefused, detail: "missing", fix: fix}, nil
	}
	res, err := adm.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: need.topic, NumPartitions: want, ReplicationFactor: replicas(ev), ConfigEntries: need.configs,
	}}})
	if err == nil {
		err = res.Errors[need.topic]
	}
	switch {
	case err == nil:
		return nil, nil
	case errors.Is(err, kafka.TopicAlreadyExists):
		// Another replica was first; check its partitions on the next round.
		return nil, fmt.Errorf("topic %s: created meanwhile: %w", need.topic, err)
	case isDefinite(err):
		return &unusable{need: need, reason: reasonCreateRefused, detail: fmt.Sprintf("missing, and creating it failed: %v", err), fix: fix}, nil
	}
	return nil, fmt.Errorf("create topic %s: %w", need.topic, err)
}

// laneTooSmall decides about a lane topic with fewer partitions than the event topic: unusable
// if it is empty (nobody parked anything in it), an error if it holds records.
func laneTooSmall(ctx context.Context, adm topicAdmin, need topicNeed, have, want int) (*unusable, error) {
	reqs := make([]kafka.OffsetRequest, 0, 2*have)
	for p := range have {
		reqs = append(reqs, kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	res, err := adm.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{need.topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s: %w", need.topic, err)
	}
	got := res.Topics[need.topic]
	if len(got) < have {
		return nil, fmt.Errorf("list offsets of %s: %d of %d partitions answered", need.topic, len(got), have)
	}
	for _, p := range got {
		if p.Error != nil {
			return nil, fmt.Errorf("list offsets of %s/%d: %w", need.topic, p.Partition, p.Error)
		}
		if p.LastOffset > p.FirstOffset {
			return nil, fmt.Errorf("%w: %s has %d partitions, the event topic %d, and partition %d holds offsets %d..%d; add partitions (kafka-topics.sh --alter --topic %s --partitions %d)",
				errLaneInUse, need.topic, have, want, p.Partition, p.FirstOffset, p.LastOffset, need.topic, want)
		}
	}
	return &unusable{need: need, reason: reasonPartitions,
		detail: fmt.Sprintf("it has %d partitions, the event topic %d (partition p's stuck accounts go to lane partition p)", have, want),
		fix:    fmt.Sprintf("add partitions (kafka-topics.sh --alter --topic %s --partitions %d)", need.topic, want)}, nil
}

// isDefinite: the broker answered and will answer the same until an operator acts.
func isDefinite(err error) bool {
	var ke kafka.Error
	return errors.As(err, &ke) && !ke.Temporary()
}

// replicas is the event topic's replication factor, which the created topic gets.
func replicas(t *kafka.Topic) int {
	n := 0
	for _, p := range t.Partitions {
		n = max(n, len(p.Replicas))
	}
	return max(n, 1)
}

// budgetTopicConfigs are the budget topic's settings when auto creates it, the ones the budget
// runner itself would create it with: its records matter for a few seconds only.
var budgetTopicConfigs = []kafka.ConfigEntry{
	{ConfigName: "cleanup.policy", ConfigValue: "delete"},
	{ConfigName: "retention.ms", ConfigValue: "600000"},
	{ConfigName: "segment.ms", ConfigValue: "150000"},
}

// modeResolver picks the modes of the auto flags at start and watches a fallback.
type modeResolver struct {
	adm        topicAdmin
	eventTopic string
	log        *zap.Logger
	metrics    *metrics.Metrics
	// minBackoff, maxBackoff pace retries of indefinite answers.
	minBackoff, maxBackoff time.Duration
	// onRetry, when set, is told each indefinite answer (readiness shows it).
	onRetry func(error)
}

// resolve returns the mode for one feature: "full" when its topic is usable, "old" when mode is
// auto and it isn't (logging the error once and setting chatgroupd_mode_fallback), an error
// when mode is required and it isn't, or ctx ended. mode is auto or required (on, kafka).
func (r *modeResolver) resolve(ctx context.Context, need topicNeed, mode, full, old string) (string, *unusable, error) {
	backoff := r.minBackoff
	for {
		u, err := checkTopic(ctx, r.adm, r.eventTopic, need, true)
		if err == nil && u == nil {
			return full, nil, nil
		}
		if err == nil {
			if mode != modeAuto {
				return "", nil, fmt.Errorf("--%s=%s: %w", flagOf(need), mode, u)
			}
			r.log.Error("auto mode fell back to "+old+": the guarantee it gives is off until the topic is usable and this replica restarts (it restarts by itself then)",
				zap.String("flag", need.flag), zap.String("topic", need.topic), zap.String("reason", u.reason),
				zap.String("found", u.detail), zap.String("fix", u.fix))
			r.metrics.ModeFallback.WithLabelValues(need.feature, u.reason).Set(1)
			return old, u, nil
		}
		if errors.Is(err, errLaneInUse) {
			return "", nil, fmt.Errorf("%s: %w", need.flag, err)
		}
		if r.onRetry != nil {
			r.onRetry(fmt.Errorf("%s: %w", need.flag, err))
		}
		r.log.Warn("choosing the mode: Kafka's answer is not definite yet; retrying",
			zap.String("flag", need.flag), zap.String("topic", need.topic), zap.Duration("backoff", backoff), zap.Error(err))
		select {
		case <-ctx.Done():
			return "", nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, r.maxBackoff)
	}
}

func flagOf(need topicNeed) string {
	if need.feature == featureLane {
		return "retry-lane"
	}
	return "fleet-budget"
}

// watch checks the fallen-back features' topics every interval (never creating them) and
// returns errModeChange once one is usable: this replica then stops like at a SIGTERM (drain,
// commit, leave) and its restart runs the full mode. Indefinite answers are retried at the
// next tick. The interval is below --account-stall-limit, so no replica with the lane on can
// park an account that this one, still without it, would then dispatch around.
func (r *modeResolver) watch(ctx context.Context, fallbacks []*unusable, interval time.Duration) error {
	if len(fallbacks) == 0 {
		return nil
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		for _, u := range fallbacks {
			again, err := checkTopic(ctx, r.adm, r.eventTopic, u.need, false)
			if err != nil || again != nil {
				continue
			}
			r.log.Warn("the topic auto mode lacked is usable now; stopping so that the restart runs the full mode",
				zap.String("flag", u.need.flag), zap.String("topic", u.need.topic))
			return fmt.Errorf("%w: %s: topic %s is usable now; restart to use it", errModeChange, u.need.flag, u.need.topic)
		}
	}
}

// watchInterval is how often a fallen-back replica looks for its topic: at most 30s, and a
// quarter of the stall limit (see watch).
func watchInterval(stallLimit time.Duration) time.Duration {
	return min(max(stallLimit/4, 250*time.Millisecond), 30*time.Second)
}
