package consumer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	fetchapi "github.com/segmentio/kafka-go/protocol/fetch"
)

// fetcher reads one partition with read-committed isolation. kafka-go's Reader sends the
// isolation level but hands back every record of the batches the broker returns, including the
// records of aborted transactions and the commit/abort markers; this one works on the raw fetch
// response instead, which carries each batch's producer id and the aborted transactions of the
// fetched range, and leaves out what read-committed must not see. Offsets left out count as
// skipped (ended) for the tracker, like compacted ones.
type fetcher struct {
	rt       kafka.RoundTripper
	addr     net.Addr
	topic    string
	part     int
	next     int64 // the offset to fetch from
	maxWait  time.Duration
	maxBytes int
}

// errFetch wraps a partition-level error code of a fetch response.
var errFetch = errors.New("fetch")

// fetch returns the next records at or after f.next (none when the wait ran out) and advances
// f.next past everything it looked at, delivered or left out.
func (f *fetcher) fetch(ctx context.Context) ([]kafka.Message, error) {
	req := &fetchapi.Request{
		ReplicaID: -1, MaxWaitTime: int32(f.maxWait / time.Millisecond), MinBytes: 1, MaxBytes: int32(f.maxBytes),
		IsolationLevel: int8(kafka.ReadCommitted), SessionID: -1, SessionEpoch: -1,
		Topics: []fetchapi.RequestTopic{{Topic: f.topic, Partitions: []fetchapi.RequestPartition{{
			Partition: int32(f.part), CurrentLeaderEpoch: -1, FetchOffset: f.next, LogStartOffset: -1,
			PartitionMaxBytes: int32(f.maxBytes),
		}}}},
	}
	rctx, cancel := context.WithTimeout(ctx, f.maxWait+10*time.Second)
	defer cancel()
	m, err := f.rt.RoundTrip(rctx, f.addr, req)
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	res, ok := m.(*fetchapi.Response)
	if !ok {
		return nil, fmt.Errorf("fetch: unexpected response %T", m)
	}
	if res.ErrorCode != 0 {
		return nil, fmt.Errorf("%w: %w", errFetch, kafka.Error(res.ErrorCode))
	}
	if len(res.Topics) != 1 || len(res.Topics[0].Partitions) != 1 {
		return nil, fmt.Errorf("%w: response without the partition", errFetch)
	}
	p := &res.Topics[0].Partitions[0]
	if p.ErrorCode != 0 {
		return nil, fmt.Errorf("%w: %w", errFetch, kafka.Error(p.ErrorCode))
	}
	return f.records(p)
}

// records walks the batches of one partition's answer: a batch of a transaction the answer lists
// as aborted is left out until that producer's abort marker, and markers are always left out.
// This is the rule of the Kafka consumer: a producer's transaction counts as aborted from the
// first batch at or after the aborted transaction's first offset.
func (f *fetcher) records(p *fetchapi.ResponsePartition) ([]kafka.Message, error) {
	if p.RecordSet.Records == nil {
		return nil, nil
	}
	aborts := slices.Clone(p.AbortedTransactions)
	slices.SortFunc(aborts, func(a, b fetchapi.ResponseTransaction) int { return cmp.Compare(a.FirstOffset, b.FirstOffset) })
	abortedPIDs := map[int64]bool{}
	batches := []protocol.RecordReader{p.RecordSet.Records}
	if s, ok := p.RecordSet.Records.(*protocol.RecordStream); ok {
		batches = s.Records
	}
	var out []kafka.Message
	for _, b := range batches {
		switch b := b.(type) {
		case *protocol.ControlBatch:
			last := int64(-1)
			abort := false
			for {
				cr, err := b.ReadControlRecord()
				if err != nil {
					if errors.Is(err, io.EOF) {
						break
					}
					return out, fmt.Errorf("fetch: control record: %w", err)
				}
				last = max(last, cr.Offset)
				abort = abort || cr.Type == 0
			}
			f.reachAborts(&aborts, abortedPIDs, last)
			if abort {
				delete(abortedPIDs, b.ProducerID)
			}
			f.next = max(f.next, last+1)
		default:
			msgs, last, err := f.read(b, p.HighWatermark)
			if err != nil {
				return out, err
			}
			f.reachAborts(&aborts, abortedPIDs, last)
			rb, isBatch := b.(*protocol.RecordBatch)
			if !(isBatch && rb.Attributes.Transactional() && abortedPIDs[rb.ProducerID]) {
				for _, m := range msgs {
					if m.Offset >= f.next {
						out = append(out, m)
					}
				}
			}
			f.next = max(f.next, last+1)
		}
	}
	return out, nil
}

// reachAborts marks aborted the producers whose aborted transaction begins at or before last.
func (f *fetcher) reachAborts(aborts *[]fetchapi.ResponseTransaction, pids map[int64]bool, last int64) {
	for len(*aborts) > 0 && (*aborts)[0].FirstOffset <= last {
		pids[(*aborts)[0].ProducerID] = true
		*aborts = (*aborts)[1:]
	}
}

// read copies one batch's records out of the response buffers.
func (f *fetcher) read(b protocol.RecordReader, hwm int64) ([]kafka.Message, int64, error) {
	var out []kafka.Message
	last := int64(-1)
	for {
		r, err := b.ReadRecord()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, last, nil
			}
			return out, last, fmt.Errorf("fetch: record: %w", err)
		}
		key, err := readBytes(r.Key)
		if err != nil {
			return out, last, err
		}
		val, err := readBytes(r.Value)
		if err != nil {
			return out, last, err
		}
		var hs []kafka.Header
		for _, h := range r.Headers {
			hs = append(hs, kafka.Header{Key: h.Key, Value: slices.Clone(h.Value)})
		}
		last = max(last, r.Offset)
		out = append(out, kafka.Message{Topic: f.topic, Partition: f.part, Offset: r.Offset, HighWaterMark: hwm,
			Key: key, Value: val, Headers: hs, Time: r.Time})
	}
}

func readBytes(b protocol.Bytes) ([]byte, error) {
	if b == nil {
		return nil, nil
	}
	defer b.Close()
	v, err := protocol.ReadAll(b)
	if err != nil {
		return nil, fmt.Errorf("fetch: record bytes: %w", err)
	}
	return v, nil
}
