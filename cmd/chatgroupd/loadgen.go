package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/internal/loadgen"
	"github.com/chatgroupd/chatgroupd/internal/logging"
)

// loadgenFlags are the flags of `chatgroupd loadgen`.
type loadgenFlags struct {
	kafka   kafkaFlags
	topic   string
	count   int
	forever bool
	perSec  float64
	gen     loadgen.Config
	mix     string
	seed    uint64
}

// loadgenHelp is `chatgroupd loadgen --help` besides the flags.
func loadgenHelp() help {
	return help{
		usage: "chatgroupd loadgen [flags]",
		about: `Produces realistic events to a Kafka topic, keyed by account like a real producer: accounts that
create groups in seq order, with a share of duplicates, invalid records, swapped pairs and
accounts pushed past the 20-group quota. --mix lifecycle adds the rest of a group's life (event
contract v2): mostly creates and adds, some removes and renames, few deletes, each acting only on a
group its account created earlier in the stream. Prints what it produced.`,
		env: []string{"CHATGROUPD_KAFKA_SASL_PASSWORD   the Kafka SASL password (or --kafka-sasl-password-file)"},
		example: []string{"chatgroupd loadgen --brokers 127.0.0.1:19092 --count 10000 --rate 150",
			"chatgroupd loadgen --brokers 127.0.0.1:19092 --mix created=5,contacts_added=4,deleted=1"},
	}
}

// newLoadgenFlags declares the flags of `chatgroupd loadgen`.
func newLoadgenFlags(f *loadgenFlags) *flag.FlagSet {
	fs := newFlagSet("loadgen", nil)
	f.kafka.register(fs)
	stringFlag(fs, &f.topic, "topic", defaultTopic, topicName, "topic to produce to")
	intFlag(fs, &f.count, "count", 10000, 1, 1000000000, "events to produce")
	boolFlag(fs, &f.forever, "forever", false, "keep producing until interrupted (ignores --count)")
	floatFlag(fs, &f.perSec, "rate", 0, 0, 1000000, "events per second (0: as fast as the broker takes them)")
	intFlag(fs, &f.gen.Accounts, "accounts", loadgen.DefaultAccounts, 1, 1000000, "accounts active at once")
	intFlag(fs, &f.gen.GroupsPerAccount, "groups-per-account", loadgen.DefaultGroupsPerAccount, 1, 20, "groups an account creates before a fresh account replaces it (<= 20)")
	intFlag(fs, &f.gen.MaxContacts, "max-contacts", loadgen.DefaultMaxContacts, 1, event.MaxContacts, "contacts per event, 1..N")
	floatFlag(fs, &f.gen.DuplicateRate, "duplicate-rate", 0.02, 0, 0.5, "fraction of records that re-send an earlier event")
	floatFlag(fs, &f.gen.InvalidRate, "invalid-rate", 0.01, 0, 0.5, "fraction of records that break the event contract")
	floatFlag(fs, &f.gen.SwapRate, "swap-rate", 0.05, 0, 0.5, "fraction of events emitted with their successor first")
	intFlag(fs, &f.gen.OverQuotaAccounts, "over-quota-accounts", 0, 0, 1000000, "accounts that push past the 20-group quota (51010)")
	stringFlag(fs, &f.gen.Prefix, "account-prefix", loadgen.DefaultPrefix, nonEmpty, "account name prefix")
	checkedFlag(fs, &f.mix, "mix", "v1", "v1, lifecycle or type=weight,… (created, renamed, contacts_added, contacts_removed, deleted)",
		func(s string) error { _, err := loadgen.ParseMix(s); return err },
		"event types: v1 (creates only), lifecycle (the whole life of a group), or weights per type")
	seedFlag(fs, &f.seed, "random seed (0: time-based)")
	return fs
}

func runLoadgen(ctx context.Context, args []string, getenv env, stdout, stderr io.Writer) error {
	var f loadgenFlags
	fs := newLoadgenFlags(&f)
	if err := parseFlags(fs, args, getenv, stdout, loadgenHelp()); err != nil {
		return err
	}
	if err := f.kafka.check(); err != nil {
		return usageError("loadgen", err)
	}
	conn, secrets, err := f.kafka.conn(getenv)
	if err != nil {
		return err
	}
	defer conn.Close()
	log, err := logging.New("warn", logging.FormatConsole, stderr, secrets...)
	if err != nil {
		return err
	}
	f.kafka.warn(log)
	if err := f.kafka.reach(ctx, conn); err != nil {
		return err
	}
	gc := f.gen
	if gc.Mix, err = loadgen.ParseMix(f.mix); err != nil {
		return usageError("loadgen", err)
	}
	gc.Seed = f.seed
	if gc.Seed == 0 {
		gc.Seed = uint64(time.Now().UnixNano())
	}
	gen, err := loadgen.New(gc)
	if err != nil {
		return err
	}
	w := loadgen.Writer(conn.Brokers, f.topic, conn.Transport)
	defer w.Close()
	start := time.Now()
	produced, e, err := loadgen.Produce(ctx, w, gen, f.count, f.forever, f.perSec, nil)
	if err != nil {
		return err
	}
	el := time.Since(start)
	fmt.Fprintf(stdout, "produced %d records to %s in %s (%.0f/s): valid %d, duplicates %d, invalid %d, over-quota %d, swapped pairs %d\n",
		produced, f.topic, el.Round(time.Millisecond), float64(produced)/el.Seconds(), e.Valid, e.Duplicates, e.Invalid, e.OverQuota, e.Swapped)
	if !gc.Mix.IsV1() {
		fmt.Fprintf(stdout, "valid by type (mix %s): %s\n", gc.Mix, byTypeLine(e.ByType))
	}
	return nil
}

// byTypeLine lists counts per event type: "created 40, renamed 10, …".
func byTypeLine(c loadgen.TypeCounts) string {
	parts := make([]string, 0, len(event.Types()))
	for _, t := range event.Types() {
		parts = append(parts, fmt.Sprintf("%s %d", strings.TrimPrefix(string(t), "contact_group."), c.Of(t)))
	}
	return strings.Join(parts, ", ")
}
