package consumer

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/segmentio/kafka-go"
)

// stickyProtocol is the name the group's members agree on for the sticky assignment. Members
// also offer "range" (kafka-go's ConsumerGroup default) so a rolling upgrade from a release that
// used kafka.ConsumerGroup finds a protocol every member supports; once all run this one, the
// coordinator picks sticky.
const stickyProtocol = "chatgroupd-sticky"

// ownedVersion tags the user data layout: version byte, uvarint count, uvarint partitions.
const ownedVersion = 1

// errOwnedData: a member's user data is not an owned-partitions list of ours.
var errOwnedData = errors.New("owned partitions: malformed user data")

// encodeOwned is the JoinGroup user data of a member that owns parts of the topic.
func encodeOwned(parts []int) []byte {
	b := []byte{ownedVersion}
	b = binary.AppendUvarint(b, uint64(len(parts)))
	for _, p := range parts {
		b = binary.AppendUvarint(b, uint64(p))
	}
	return b
}

// decodeOwned parses encodeOwned's output. Empty data (a member that owns nothing, or one that
// predates the user data) is no partitions.
func decodeOwned(b []byte) ([]int, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if b[0] != ownedVersion {
		return nil, fmt.Errorf("%w: version %d", errOwnedData, b[0])
	}
	b = b[1:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) { // every partition takes at least one byte
		return nil, fmt.Errorf("%w: bad count", errOwnedData)
	}
	b = b[k:]
	out := make([]int, 0, n)
	for range n {
		p, k := binary.Uvarint(b)
		if k <= 0 || p > 1<<31-1 {
			return nil, fmt.Errorf("%w: bad partition", errOwnedData)
		}
		out = append(out, int(p))
		b = b[k:]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", errOwnedData, len(b))
	}
	return out, nil
}

// stickyBalancer is the leader's assignor (a kafka.GroupBalancer): each member's user data
// carries the partitions it owns, and a rebalance moves only the partitions it must.
type stickyBalancer struct {
	// owned is what this member owns now, sent as its user data.
	owned []int
}

var _ kafka.GroupBalancer = stickyBalancer{}

// ProtocolName implements kafka.GroupBalancer.
func (stickyBalancer) ProtocolName() string { return stickyProtocol }

// UserData implements kafka.GroupBalancer: the partitions this member owns.
func (b stickyBalancer) UserData() ([]byte, error) { return encodeOwned(b.owned), nil }

// AssignGroups implements kafka.GroupBalancer for one or more topics: each topic is assigned on
// its own by assignSticky. A member whose user data can't be read is taken to own nothing.
func (stickyBalancer) AssignGroups(members []kafka.GroupMember, partitions []kafka.Partition) kafka.GroupMemberAssignments {
	out := kafka.GroupMemberAssignments{}
	byTopic := map[string][]int{}
	for _, p := range partitions {
		byTopic[p.Topic] = append(byTopic[p.Topic], p.ID)
	}
	owned := make(map[string][]int, len(members))
	for _, m := range members {
		out[m.ID] = map[string][]int{}
		if o, err := decodeOwned(m.UserData); err == nil {
			owned[m.ID] = o
		}
	}
	for topic, parts := range byTopic {
		prev := map[string][]int{}
		for _, m := range members {
			if slices.Contains(m.Topics, topic) {
				prev[m.ID] = owned[m.ID]
			}
		}
		for id, ps := range assignSticky(prev, parts) {
			if len(ps) > 0 {
				out[id][topic] = ps
			}
		}
	}
	return out
}

// assignSticky assigns parts to the members of prev (member id → partitions it owned before) so
// that:
//   - every partition goes to exactly one member, and counts differ by at most one (balanced);
//   - as many partitions as balance allows stay where they were: a member keeps its owned
//     partitions up to its quota, and the members that own the most get the quotas of one extra;
//   - the rest (new partitions, those of departed members, a member's surplus) go to the least
//     loaded members.
//
// Owned partitions that no longer exist, or that another member claims too (only one can have
// it; the member earlier in id order keeps it), are ignored. The result is deterministic: every
// member's list is sorted, and ties are broken by member id.
func assignSticky(prev map[string][]int, parts []int) map[string][]int {
	ids := make([]string, 0, len(prev))
	for id := range prev {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := make(map[string][]int, len(ids))
	if len(ids) == 0 {
		return out
	}
	exists := make(map[int]bool, len(parts))
	for _, p := range parts {
		exists[p] = true
	}
	valid := validOwned(ids, prev, exists)
	base, extra := len(exists)/len(ids), len(exists)%len(ids)
	// The quotas of base+1 go to the members that own the most (ties by id): that keeps the
	// most partitions in place.
	order := slices.Clone(ids)
	slices.SortStableFunc(order, func(a, b string) int { return cmp.Compare(len(valid[b]), len(valid[a])) })
	quota := make(map[string]int, len(ids))
	for i, id := range order {
		quota[id] = base
		if i < extra && len(valid[id]) > base {
			quota[id] = base + 1
		}
	}
	taken := map[int]bool{}
	for _, id := range ids {
		keep := valid[id][:min(len(valid[id]), quota[id])]
		out[id] = slices.Clone(keep)
		for _, p := range keep {
			taken[p] = true
		}
	}
	spread(out, ids, exists, taken)
	return out
}

// validOwned is each member's previously owned partitions that still exist, each claimed by
// the first member (by id) that names it.
func validOwned(ids []string, prev map[string][]int, exists map[int]bool) map[string][]int {
	claimed := map[int]bool{}
	valid := make(map[string][]int, len(ids))
	for _, id := range ids {
		own := slices.Clone(prev[id])
		slices.Sort(own)
		for _, p := range slices.Compact(own) {
			if exists[p] && !claimed[p] {
				claimed[p] = true
				valid[id] = append(valid[id], p)
			}
		}
	}
	return valid
}

// spread gives every partition not taken, lowest first, to the least loaded member (ties by
// id); counts never pass base+1, so the result is balanced.
func spread(out map[string][]int, ids []string, exists, taken map[int]bool) {
	pool := make([]int, 0, len(exists))
	for p := range exists {
		if !taken[p] {
			pool = append(pool, p)
		}
	}
	slices.Sort(pool)
	for _, p := range pool {
		best := ids[0]
		for _, id := range ids[1:] {
			if len(out[id]) < len(out[best]) {
				best = id
			}
		}
		out[best] = append(out[best], p)
	}
	for _, id := range ids {
		slices.Sort(out[id])
	}
}
