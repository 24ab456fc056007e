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
	w := &kafka.Writer{
		Addr: kafka.TCP(conn.Brokers...), Topic: *topic, Transport: conn.Transport,
		Balancer: &kafka.Murmur2Balancer{}, RequiredAcks: kafka.RequireAll,
		BatchTimeout: 5 * time.Millisecond, BatchSize: 500,
	}
	defer w.Close()

	lim := rate.NewLimiter(rate.Inf, 0)
	if *perSec > 0 {
		lim = rate.NewLimiter(rate.Limit(*perSec), 1)
	}
	start := time.Now()
	produced := 0
	batch := make([]kafka.Message, 0, 500)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := w.WriteMessages(ctx, batch...); err != nil {
			return fmt.Errorf("produce: %w", err)
		}
		produced += len(batch)
		batch = batch[:0]
		return nil
	}
	for *forever || produced+len(batch) < *count {
		if err := lim.Wait(ctx); err != nil {
			break // interrupted
		}
		r := gen.Next()
		batch = append(batch, kafka.Message{Key: r.Key, Value: r.Value})
		if len(batch) == cap(batch) || *perSec > 0 && *perSec < 2000 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if ctx.Err() == nil {
		if err := flush(); err != nil {
			return err
		}
	}
	e := gen.Expect()
	el := time.Since(start)
	fmt.Fprintf(stdout, "produced %d records to %s in %s (%.0f/s): valid %d, duplicates %d, invalid %d, over-quota %d, swapped pairs %d\n",
		produced, *topic, el.Round(time.Millisecond), float64(produced)/el.Seconds(), e.Valid, e.Duplicates, e.Invalid, e.OverQuota, e.Swapped)
	return nil
}
