package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/segmentio/kafka-go"
	"golang.org/x/time/rate"

	"github.com/chatgroupd/chatgroupd/internal/loadgen"
)

func runLoadgen(ctx context.Context, args []string, getenv env, stdout, stderr io.Writer) error {
	fs := newFlagSet("loadgen", stderr)
	var kf kafkaFlags
	kf.register(fs)
	topic := fs.String("topic", defaultTopic, "topic to produce to")
	count := fs.Int("count", 10000, "events to produce")
	forever := fs.Bool("forever", false, "keep producing until interrupted (ignores --count)")
	perSec := fs.Float64("rate", 0, "events per second (0: as fast as the broker takes them)")
	gc := loadgen.Config{}
	fs.IntVar(&gc.Accounts, "accounts", 100, "accounts active at once")
	fs.IntVar(&gc.GroupsPerAccount, "groups-per-account", 15, "groups an account creates before a fresh account replaces it (<= 20)")
	fs.IntVar(&gc.MaxContacts, "max-contacts", 5, "contacts per event, 1..N")
	fs.Float64Var(&gc.DuplicateRate, "duplicate-rate", 0.02, "fraction of records that re-send an earlier event")
	fs.Float64Var(&gc.InvalidRate, "invalid-rate", 0.01, "fraction of records that break the event contract")
	fs.Float64Var(&gc.SwapRate, "swap-rate", 0.05, "fraction of events emitted with their successor first")
	fs.IntVar(&gc.OverQuotaAccounts, "over-quota-accounts", 0, "accounts that push past the 20-group quota (51010)")
	fs.StringVar(&gc.Prefix, "account-prefix", "user", "account name prefix")
	seed := fs.Uint64("seed", 0, "random seed (0: time-based)")
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	conn, err := kf.conn(getenv)
	if err != nil {
		return err
	}
	gc.Seed = *seed
	if gc.Seed == 0 {
		gc.Seed = uint64(time.Now().UnixNano())
	}
	gen, err := loadgen.New(gc)
	if err != nil {
		return err
	}
	w := eventWriter(conn.Brokers, *topic, conn.Transport)
	defer w.Close()
	start := time.Now()
	produced, e, err := produceStream(ctx, w, gen, *count, *forever, *perSec, nil)
	if err != nil {
		return err
	}
	el := time.Since(start)
	fmt.Fprintf(stdout, "produced %d records to %s in %s (%.0f/s): valid %d, duplicates %d, invalid %d, over-quota %d, swapped pairs %d\n",
		produced, *topic, el.Round(time.Millisecond), float64(produced)/el.Seconds(), e.Valid, e.Duplicates, e.Invalid, e.OverQuota, e.Swapped)
	return nil
}

// eventWriter writes events the way producers must: keyed by account and partitioned like the
// Java client (murmur2), acknowledged by every in-sync replica.
func eventWriter(brokers []string, topic string, transport kafka.RoundTripper) *kafka.Writer {
	return &kafka.Writer{
		Addr: kafka.TCP(brokers...), Topic: topic, Transport: transport,
		Balancer: &kafka.Murmur2Balancer{}, RequiredAcks: kafka.RequireAll,
		BatchTimeout: 2 * time.Millisecond, BatchSize: 500,
	}
}

// produceStream writes gen's next count records to w (all of them until ctx ends when forever),
// perSec records a second (0: as fast as the broker takes them). After each acknowledged write it
// calls flushed, when set, with the records written so far and the expectation for exactly those.
// An ended ctx stops it without error; it returns what was written.
func produceStream(ctx context.Context, w *kafka.Writer, gen *loadgen.Generator, count int, forever bool, perSec float64,
	flushed func(produced int, e loadgen.Expect)) (int, loadgen.Expect, error) {
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
	var expect loadgen.Expect
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
		batch = batch[:0]
		if flushed != nil {
			flushed(produced, expect)
		}
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
