package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

// Parked is one account parked in the retry lane, as an operator sees it.
type Parked struct {
	Account   string `json:"account"`
	Partition int    `json:"partition"`
	// Events is how many of its events wait in the lane (not yet ended as far as the group's
	// committed lane position tells: some may have ended since the last commit).
	Events int `json:"events"`
	// Since is when its head event's retrying began (else the head record's time).
	Since time.Time `json:"since"`
	// Reason is why it was parked (stall: its head failed transiently past the stall limit).
	Reason   string `json:"reason"`
	Code     int    `json:"code,omitempty"`
	Info     string `json:"info,omitempty"`
	Attempts int    `json:"attempts,omitempty"`
	// HeadSourceOffset is the head event's offset in the event topic; HeadLaneOffset in the lane.
	HeadSourceOffset int64 `json:"head_source_offset"`
	HeadLaneOffset   int64 `json:"head_lane_offset"`
}

// LaneListConfig names the lane to read and how to reach it.
type LaneListConfig struct {
	Brokers   []string
	Transport kafka.RoundTripper // nil: kafka.DefaultTransport
	Topic     string             // the event topic
	LaneTopic string             // default Topic + ".retry"
	GroupID   string
}

// setDefaults fills the zero fields: the lane topic and the transport.
func (c *LaneListConfig) setDefaults() {
	c.LaneTopic = (&Config{Topic: c.Topic, LaneTopic: c.LaneTopic}).laneTopic()
	c.Transport = cmpRT(c.Transport)
}

// Validate reports every problem of c, defaults applied, one per line.
func (c LaneListConfig) Validate() error {
	c.setDefaults()
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("brokers: required"))
	}
	if c.Topic == "" {
		errs = append(errs, errors.New("topic: required"))
	}
	if c.GroupID == "" {
		errs = append(errs, errors.New("group id: required"))
	}
	if c.Topic != "" && c.LaneTopic == c.Topic {
		errs = append(errs, fmt.Errorf("lane topic: must differ from the topic %q", c.Topic))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lane list config: %w", err)
	}
	return nil
}

// ListParked reads every partition of the lane from the group's committed lane position to its
// end and returns the accounts parked there, the longest-parked first. It only reads: the same
// rule a new owner uses (records after the account's last unpark marker are waiting).
func ListParked(ctx context.Context, c LaneListConfig) ([]Parked, error) {
	c.setDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	lt := c.LaneTopic
	cl := &kafka.Client{Addr: kafka.TCP(c.Brokers...), Transport: c.Transport, Timeout: 10 * time.Second}
	starts, ends, err := laneListRange(ctx, cl, c)
	if err != nil {
		return nil, err
	}
	var out []Parked
	for _, b := range ends {
		f := &fetcher{rt: c.Transport, addr: kafka.TCP(c.Brokers...), topic: lt, part: b.Partition, next: starts[b.Partition],
			maxWait: 100 * time.Millisecond, maxBytes: 4 << 20}
		var msgs []kafka.Message
		for f.next < b.LastOffset {
			ms, err := f.fetch(ctx)
			if err != nil {
				return nil, fmt.Errorf("lane list: fetch %s/%d: %w", lt, b.Partition, err)
			}
			msgs = append(msgs, ms...)
		}
		out = append(out, parkedFrom(b.Partition, msgs)...)
	}
	slices.SortFunc(out, func(a, b Parked) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return a.Partition - b.Partition
	})
	return out, nil
}

// laneListRange returns, per lane partition, where ListParked reads from (the group's committed
// position, else the log start) and its bounds, whose LastOffset is where it stops.
func laneListRange(ctx context.Context, cl *kafka.Client, c LaneListConfig) (map[int]int64, []kafka.PartitionOffsets, error) {
	lt := c.LaneTopic
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{lt}})
	if err != nil {
		return nil, nil, fmt.Errorf("lane list: metadata: %w", err)
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil {
		return nil, nil, fmt.Errorf("lane list: topic %s missing", lt)
	}
	var ids []int
	for _, p := range md.Topics[0].Partitions {
		ids = append(ids, p.ID)
	}
	slices.Sort(ids)
	of, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: c.GroupID, Topics: map[string][]int{lt: ids}})
	if err == nil && of.Error != nil && !errors.Is(of.Error, kafka.GroupIdNotFound) {
		err = of.Error // no group yet: nothing committed, the lane is read from its start
	}
	if err != nil {
		return nil, nil, fmt.Errorf("lane list: offset fetch: %w", err)
	}
	committed := map[int]int64{}
	for _, p := range of.Topics[lt] {
		if p.Error == nil {
			committed[p.Partition] = p.CommittedOffset
		}
	}
	reqs := make([]kafka.OffsetRequest, 0, 2*len(ids))
	for _, id := range ids {
		reqs = append(reqs, kafka.FirstOffsetOf(id), kafka.LastOffsetOf(id))
	}
	lo, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{lt: reqs}})
	if err != nil {
		return nil, nil, fmt.Errorf("lane list: list offsets: %w", err)
	}
	starts := map[int]int64{}
	for _, b := range lo.Topics[lt] {
		if b.Error != nil {
			return nil, nil, fmt.Errorf("lane list: list offsets %s/%d: %w", lt, b.Partition, b.Error)
		}
		start := b.FirstOffset
		if c, ok := committed[b.Partition]; ok && c > start {
			start = min(c, b.LastOffset)
		}
		starts[b.Partition] = start
	}
	return starts, lo.Topics[lt], nil
}

// parkedFrom applies the load rule to one lane partition's records in order.
func parkedFrom(part int, msgs []kafka.Message) []Parked {
	type acc struct {
		p    Parked
		offs []int64
	}
	accts := map[string]*acc{}
	var order []string
	for _, m := range msgs {
		name := string(m.Key)
		if v, ok := hdr(m.Headers, laneHdrUnpark); ok {
			if a := accts[name]; a != nil {
				through := markerThrough(v, m.Offset)
				for len(a.offs) > 0 && a.offs[0] <= through {
					a.offs = a.offs[1:]
				}
				if len(a.offs) == 0 {
					delete(accts, name)
				}
			}
			continue
		}
		a := accts[name]
		if a == nil {
			a = &acc{p: Parked{Account: name, Partition: part, Reason: parkStall, Since: m.Time, HeadLaneOffset: m.Offset, HeadSourceOffset: -1}}
			if v, ok := hdr(m.Headers, laneHdrSrcOffset); ok {
				a.p.HeadSourceOffset, _ = strconv.ParseInt(v, 10, 64)
			}
			if v, ok := hdr(m.Headers, laneHdrRetryStart); ok {
				if n, err := strconv.ParseInt(v, 10, 64); err == nil {
					a.p.Since = time.Unix(0, n)
				}
			}
			if v, ok := hdr(m.Headers, laneHdrReason); ok && v != parkFollow {
				a.p.Reason = v
			}
			if v, ok := hdr(m.Headers, laneHdrCode); ok {
				a.p.Code, _ = strconv.Atoi(v)
			}
			if v, ok := hdr(m.Headers, laneHdrAttempts); ok {
				a.p.Attempts, _ = strconv.Atoi(v)
			}
			a.p.Info, _ = hdr(m.Headers, laneHdrInfo)
			accts[name] = a
			order = append(order, name)
		}
		a.offs = append(a.offs, m.Offset)
	}
	var out []Parked
	for _, name := range order {
		if a := accts[name]; a != nil && a.p.HeadLaneOffset >= 0 {
			a.p.Events = len(a.offs)
			out = append(out, a.p)
			delete(accts, name) // an account re-parked after a marker is listed once
		}
	}
	return out
}
