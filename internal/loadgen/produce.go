package loadgen

import (
	"context"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"golang.org/x/time/rate"
)

// Writer writes events the way producers must: keyed by account and partitioned like the Java
// client (murmur2), acknowledged by every in-sync replica. transport may be nil (kafka-go's
// default).
func Writer(brokers []string, topic string, transport kafka.RoundTripper) *kafka.Writer {
	return &kafka.Writer{
		Addr: kafka.TCP(brokers...), Topic: topic, Transport: transport,
		Balancer: &kafka.Murmur2Balancer{}, RequiredAcks: kafka.RequireAll,
		BatchTimeout: 2 * time.Millisecond, BatchSize: 500,
	}
}

// Produce writes gen's next count records to w (all of them until ctx ends when forever),
// perSec records a second (0: as fast as the broker takes them). After each acknowledged write it
// calls flushed, when set, with the records written so far, the expectation for exactly those,
// and the batch just acknowledged.
// An ended ctx stops it without error; it returns what was written.
func Produce(ctx context.Context, w *kafka.Writer, gen *Generator, count int, forever bool, perSec float64,
	flushed func(produced int, e Expect, batch []kafka.Message)) (int, Expect, error) {
	lim := rate.NewLimiter(rate.Inf, 0)
	if perSec > 0 {
		lim = rate.NewLimiter(rate.Limit(perSec), 1)
	}
	// Paced streams write record by record so each lands when it is made; a backlog goes in batches.
	batchSize := 500
	if perSec > 0 && perSec < 2000 {
		batchSize = 1
	}
	produced := 0
	var expect Expect
	batch := make([]kafka.Message, 0, batchSize)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := w.WriteMessages(ctx, batch...); err != nil {
			return fmt.Errorf("produce: %w", err)
		}
		produced += len(batch)
		expect = gen.Expect() // every record generated so far is in this batch or an earlier one
		if flushed != nil {
			flushed(produced, expect, batch)
		}
		batch = batch[:0]
		return nil
	}
	for forever || produced+len(batch) < count {
		if lim.Wait(ctx) != nil {
			return produced, expect, nil // interrupted; the unwritten batch is not counted
		}
		r := gen.Next()
		batch = append(batch, kafka.Message{Key: r.Key, Value: r.Value})
		if len(batch) == batchSize {
			if err := flush(); err != nil {
				return produced, expect, err
			}
		}
	}
	err := flush()
	return produced, expect, err
}
