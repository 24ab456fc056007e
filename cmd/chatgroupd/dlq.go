package main

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/chatgroupd/chatgroupd/dlq"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/internal/logging"
)

const dlqUsage = `Usage: chatgroupd dlq <list|replay> [flags]

  list    print the dead-lettered events matching the filters (table or --output json)
  replay  put the matching dead-lettered events back on --topic, each at most once

Run "chatgroupd dlq list --help" or "chatgroupd dlq replay --help" for the flags.
`

// dlqAbout is the help text of a subcommand.
func dlqAbout(sub string) string {
	if sub == "list" {
		return "Reads the dead-letter topic from the start to its current end and prints the records\n" +
			"matching the filters, marking those already replayed."
	}
	return "Re-produces the matching dead-letter records to --topic (key, value and headers as they were,\n" +
		"replay-count = dlq-replay-count+1, replay-of = <dlq-topic>/<partition>/<offset>) and records each\n" +
		"in the ledger topic <dlq-topic>.replays once acknowledged: running it twice replays nothing twice.\n" +
		"Each goes to its original partition while --topic has the partition count the letter records,\n" +
		"else to the account's partition under --partitioner. It prints the plan (source, target, counts)\n" +
		"first and changes nothing without --yes; letters from another topic than --topic need --force.\n" +
		"--yes and --force are never taken from the environment."
}

// runDLQ is "chatgroupd dlq": the operator's view of the dead-letter topic.
func runDLQ(ctx context.Context, args []string, getenv env, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError("dlq", errors.New("no subcommand given (list or replay)"))
	}
	if args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		if args[0] == "help" && len(args) > 1 {
			return runDLQ(ctx, append(append([]string{}, args[1:]...), "--help"), getenv, stdout, stderr)
		}
		io.WriteString(stdout, dlqUsage)
		return errHelp
	}
	sub, rest := args[0], args[1:]
	if sub != "list" && sub != "replay" {
		return usageError("dlq", fmt.Errorf("unknown subcommand %q (want list or replay)", sub))
	}
	o := &dlqOptions{}
	fs := newDLQFlags(o, sub)
	// A confirmation must be given on this command line, not inherited from an exported variable.
	flagEnv := func(k string) string {
		if k == envName("yes") || k == envName("force") {
			return ""
		}
		return getenv(k)
	}
	if err := parseFlags(fs, rest, flagEnv, stdout, dlqHelp(sub)); err != nil {
		return err
	}
	if err := o.kafka.check(); err != nil {
		return usageError("dlq "+sub, err)
	}
	cfg, filter, closeConn, err := o.resolve(ctx, sub == "replay", getenv, stderr)
	if err != nil {
		return fmt.Errorf("dlq %s: %w", sub, err)
	}
	defer closeConn()
	if sub == "list" {
		return dlqList(ctx, cfg, filter, o.output, stdout)
	}
	return dlqReplay(ctx, cfg, dlq.ReplayOptions{
		Filter: filter, DryRun: o.dryRun, Limit: o.limit, MaxReplays: o.maxReplays, Again: o.again,
		Force: o.force, Partitioner: o.partitionerName,
	}, o.yes, o.output, stdout)
}

// dlqOptions are the flags of both subcommands.
type dlqOptions struct {
	kafka         kafkaFlags // --brokers and the shared TLS/SASL flags
	topic         string
	dlqTopic      string
	group         string
	codes         string
	reasons       string
	eventTypes    string
	account       string
	since         string
	until         string
	output        string
	logLevel      string
	skipMalformed bool
	// replay only
	dryRun     bool
	limit      int
	maxReplays int
	again      bool
	yes        bool
	force      bool
	// partitioner is the flag text, partitionerName its parsed value.
	partitioner     string
	partitionerName event.Partitioner
}

// dlqHelp is `chatgroupd dlq <sub> --help` besides the flags.
func dlqHelp(sub string) help {
	h := help{
		usage: "chatgroupd dlq " + sub + " [flags]",
		about: dlqAbout(sub),
		env:   []string{"CHATGROUPD_KAFKA_SASL_PASSWORD   the Kafka SASL password (or --kafka-sasl-password-file)"},
	}
	if sub == "list" {
		h.example = []string{"chatgroupd dlq list --brokers kafka-0:9092 --since 24h --reason rejected,partial --code 51010"}
	} else {
		h.example = []string{
			"chatgroupd dlq replay --brokers kafka-0:9092 --code 51010 --account alice --dry-run",
			"chatgroupd dlq replay --brokers kafka-0:9092 --code 51010 --account alice --yes",
		}
	}
	return h
}

// newDLQFlags declares the flags of `chatgroupd dlq list` or `dlq replay`.
func newDLQFlags(o *dlqOptions, sub string) *flag.FlagSet {
	fs := newFlagSet("dlq "+sub, nil)
	o.register(fs, sub == "replay")
	return fs
}

func (o *dlqOptions) register(fs *flag.FlagSet, replay bool) {
	o.kafka.register(fs)
	stringFlag(fs, &o.topic, "topic", "chat.contact-groups", topicName, "the event topic (replays go here)")
	stringFlag(fs, &o.dlqTopic, "dlq-topic", "", topicName, "the dead-letter topic (default <topic>.dlq)")
	stringFlag(fs, &o.group, "group", "chatgroupd", anyString, `only records dead-lettered by this consumer group ("" for all)`)
	checkedFlag(fs, &o.codes, "code", "", "IM codes, HTTP statuses, network or timeout, comma-separated", func(s string) error {
		_, err := dlqParseCodes(s)
		return err
	}, "only these error codes, comma-separated: IM codes, HTTP statuses, network, timeout (0 = invalid events)")
	checkedFlag(fs, &o.reasons, "reason", "", "reasons, comma-separated: "+strings.Join(dlq.Reasons(), ", "), func(s string) error {
		for _, r := range splitList(s) {
			if !dlq.ValidReason(r) {
				return fmt.Errorf("unknown reason %q", r)
			}
		}
		return nil
	}, "only these reasons, comma-separated: "+strings.Join(dlq.Reasons(), ", "))
	checkedFlag(fs, &o.eventTypes, "event-type", "", "event types, comma-separated: "+strings.Join(dlqEventTypeNames(), ", "), func(s string) error {
		_, err := dlqParseEventTypes(s)
		return err
	}, "only events of these types, comma-separated: "+strings.Join(dlqEventTypeNames(), ", ")+" (contact_group. may be left out)")
	stringFlag(fs, &o.account, "account", "", anyString, "only this account (from_account)")
	timeCheck := func(s string) error { _, err := dlqParseTime("", s, time.Now()); return err }
	checkedFlag(fs, &o.since, "since", "", "an RFC 3339 time or a duration ago (24h, 7d)", timeCheck, "only records dead-lettered at or after this RFC 3339 time, or this long ago (24h, 7d)")
	checkedFlag(fs, &o.until, "until", "", "an RFC 3339 time or a duration ago (24h, 7d)", timeCheck, "only records dead-lettered before this RFC 3339 time, or this long ago")
	stringFlag(fs, &o.output, "output", "table", oneOf, "output format: table or json", "table", "json")
	stringFlag(fs, &o.logLevel, "log-level", "warn", oneOf, "log level: debug, info, warn, error", logLevels()...)
	boolFlag(fs, &o.skipMalformed, "skip-malformed", false, "skip records without chatgroupd's dlq-* headers instead of failing")
	if replay {
		boolFlag(fs, &o.dryRun, "dry-run", false, "report what would be replayed, change nothing")
		intFlag(fs, &o.limit, "limit", 0, 0, 1000000000, "replay at most this many records (0 = no limit)")
		intFlag(fs, &o.maxReplays, "max-replays", dlq.DefaultMaxReplays, 1, 1000, "skip records already replayed this many times (dlq-replay-count)")
		boolFlag(fs, &o.again, "again", false, "replay records the ledger says were already replayed")
		boolFlag(fs, &o.yes, "yes", false, "replay: without it (or --dry-run) only the plan is printed and the command fails; never read from CHATGROUPD_YES")
		boolFlag(fs, &o.force, "force", false, "replay letters whose dlq-original-topic is not --topic (refused otherwise); never read from CHATGROUPD_FORCE")
		stringFlag(fs, &o.partitioner, "partitioner", string(event.DefaultPartitioner), oneOf, "the producers' partitioner (murmur2, crc32, fnv1a), used when a replay can't go to its original partition",
			string(event.PartitionerMurmur2), string(event.PartitionerCRC32), string(event.PartitionerFNV1a))
	}
}

// resolve checks every flag before anything touches Kafka, so bad input changes nothing.
func (o *dlqOptions) resolve(ctx context.Context, replay bool, getenv env, stderr io.Writer) (dlq.ToolConfig, dlq.Filter, func(), error) {
	var f dlq.Filter
	nop := func() {}
	if strings.TrimSpace(o.kafka.brokers) == "" {
		return dlq.ToolConfig{}, f, nop, errors.New("--brokers is required")
	}
	if o.topic == "" {
		return dlq.ToolConfig{}, f, nop, errors.New("--topic must not be empty")
	}
	if o.output != "table" && o.output != "json" {
		return dlq.ToolConfig{}, f, nop, fmt.Errorf("--output %q: want table or json", o.output)
	}
	if o.limit < 0 {
		return dlq.ToolConfig{}, f, nop, fmt.Errorf("--limit %d: must be >= 0", o.limit)
	}
	if replay && o.maxReplays < 1 {
		return dlq.ToolConfig{}, f, nop, fmt.Errorf("--max-replays %d: must be >= 1", o.maxReplays)
	}
	var err error
	if replay {
		if o.partitionerName, err = event.ParsePartitioner(o.partitioner); err != nil {
			return dlq.ToolConfig{}, f, nop, fmt.Errorf("--partitioner: %w", err)
		}
	}
	if f, err = o.filter(time.Now()); err != nil {
		return dlq.ToolConfig{}, f, nop, err
	}
	log, err := logging.New(o.logLevel, logging.FormatConsole, stderr)
	if err != nil {
		return dlq.ToolConfig{}, f, nop, fmt.Errorf("--log-level: %w", err)
	}
	conn, secrets, err := o.kafka.conn(getenv)
	if err != nil {
		return dlq.ToolConfig{}, f, nop, err
	}
	if len(secrets) > 0 {
		if log, err = logging.New(o.logLevel, logging.FormatConsole, stderr, secrets...); err != nil {
			return dlq.ToolConfig{}, f, nop, fmt.Errorf("--log-level: %w", err)
		}
	}
	o.kafka.warn(log)
	if err := o.kafka.reach(ctx, conn); err != nil {
		return dlq.ToolConfig{}, f, nop, err
	}
	cfg := dlq.ToolConfig{
		Brokers: conn.Brokers, Topic: o.topic, DLQTopic: o.dlqTopic,
		Transport: conn.Transport, SkipMalformed: o.skipMalformed, Logger: log,
	}
	return cfg, f, func() { conn.Transport.CloseIdleConnections(); _ = log.Sync() }, nil
}

// filter reads the filter flags; now anchors --since and --until given as durations ago.
func (o *dlqOptions) filter(now time.Time) (dlq.Filter, error) {
	var f dlq.Filter
	var err error
	if f.Codes, err = dlqParseCodes(o.codes); err != nil {
		return f, err
	}
	for _, r := range splitList(o.reasons) {
		if !dlq.ValidReason(r) {
			return f, fmt.Errorf("--reason %q: unknown reason (want %s)", r, strings.Join(dlq.Reasons(), ", "))
		}
		f.Reasons = append(f.Reasons, r)
	}
	if f.EventTypes, err = dlqParseEventTypes(o.eventTypes); err != nil {
		return f, fmt.Errorf("--event-type: %w", err)
	}
	f.Account, f.Group = o.account, o.group
	if f.Since, err = dlqParseTime("--since", o.since, now); err != nil {
		return f, err
	}
	if f.Until, err = dlqParseTime("--until", o.until, now); err != nil {
		return f, err
	}
	return f, f.Validate()
}

func dlqList(ctx context.Context, cfg dlq.ToolConfig, f dlq.Filter, output string, stdout io.Writer) error {
	l, err := dlq.Scan(ctx, cfg, f)
	if err != nil {
		return fmt.Errorf("dlq list: %w", err)
	}
	entries := l.Entries
	if output == "json" {
		views := make([]dlqEntryView, len(entries))
		for i := range entries {
			views[i] = newDLQEntryView(&entries[i])
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(views)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tPARTITION/OFFSET\tACCOUNT\tTYPE\tREASON\tCODE\tINFO\tATTEMPTS\tREPLAYED")
	for i := range entries {
		e := &entries[i]
		replayed := "no"
		if e.Replayed {
			replayed = "yes"
		}
		fmt.Fprintf(tw, "%s\t%d/%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n",
			e.FailedAt.UTC().Format(time.RFC3339), e.Partition, e.Offset, dlqCell(e.Account(), 32),
			dlqTypeCell(e.EventType), e.Reason, dlq.FormatCode(e.Code), dlqInfoCell(e.Info), e.Attempts, replayed)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%d record(s)%s\n", len(entries), dlqListNotes(l))
	return err
}

// dlqListNotes says what list left out, so a short listing is not mistaken for the whole DLQ.
func dlqListNotes(l dlq.Listing) string {
	var notes []string
	if l.Duplicates > 0 {
		notes = append(notes, fmt.Sprintf("%d duplicate letter(s) of the same events shown once", l.Duplicates))
	}
	if l.Malformed > 0 {
		notes = append(notes, fmt.Sprintf("%d malformed DLQ record(s) skipped", l.Malformed))
	}
	if l.LedgerMalformed > 0 {
		notes = append(notes, fmt.Sprintf("%d unreadable replay-ledger record(s) skipped", l.LedgerMalformed))
	}
	if len(notes) == 0 {
		return ""
	}
	return "; " + strings.Join(notes, "; ")
}

// errNotConfirmed is the refusal to replay without --yes.
var errNotConfirmed = errors.New("not confirmed")

func dlqReplay(ctx context.Context, cfg dlq.ToolConfig, opts dlq.ReplayOptions, yes bool, output string, stdout io.Writer) error {
	planned := false
	opts.Plan = func(plan dlq.Summary) error {
		planned = true
		if output != "json" {
			dlqPrintPlan(stdout, plan, opts)
		}
		if opts.DryRun || yes || (plan.OtherTopic > 0 && !opts.Force) { // the last: Replay refuses next
			return nil
		}
		return fmt.Errorf("%w: nothing was replayed; re-run with --yes to replay these %d record(s) from %s to %s, or with --dry-run to only see the plan",
			errNotConfirmed, plan.Replayed, plan.Source, plan.Target)
	}
	sum, err := dlq.Replay(ctx, cfg, opts)
	// Before the plan nothing was read (a connection or input error): only the error is shown,
	// not a table of zeros. After it, the result says what was done before any error.
	if planned {
		if output == "json" {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			if perr := enc.Encode(sum); perr != nil && err == nil {
				err = perr
			}
		} else {
			dlqPrintResult(stdout, sum, err)
		}
	}
	if err != nil {
		return fmt.Errorf("dlq replay: %w", err)
	}
	return nil
}

// dlqPrintPlan prints what replay is about to do: from where, to where, and the counts.
func dlqPrintPlan(w io.Writer, s dlq.Summary, opts dlq.ReplayOptions) {
	maxReplays := cmp.Or(opts.MaxReplays, dlq.DefaultMaxReplays)
	fmt.Fprintf(w, "source: DLQ topic %s\n", s.Source)
	fmt.Fprintf(w, "target: topic %s (%d partitions)\n", s.Target, s.TargetPartitions)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "read\t%d\tDLQ records up to the current end\n", s.Scanned)
	if s.Malformed > 0 {
		fmt.Fprintf(tw, "malformed\t%d\tskipped: not chatgroupd DLQ records (--skip-malformed)\n", s.Malformed)
	}
	if s.Duplicates > 0 {
		fmt.Fprintf(tw, "duplicates\t%d\tskipped: further letters for an event already counted (a retried DLQ write)\n", s.Duplicates)
	}
	if s.LedgerMalformed > 0 {
		fmt.Fprintf(tw, "ledger malformed\t%d\tunreadable records in the replay ledger, skipped: their letters count as not replayed\n", s.LedgerMalformed)
	}
	fmt.Fprintf(tw, "filtered out\t%d\tdid not match the filters\n", s.FilteredOut)
	fmt.Fprintf(tw, "matched\t%d\t\n", s.Matched)
	if s.OtherTopic > 0 {
		note := "refused: pass --force to replay them into " + s.Target
		if opts.Force {
			note = "--force: replayed into " + s.Target
		}
		fmt.Fprintf(tw, "from another topic\t%d\tdlq-original-topic is %s; %s\n", s.OtherTopic, s.OtherTopicsText(), note)
	}
	fmt.Fprintf(tw, "skipped: already replayed\t%d\tuse --again to replay them anyway\n", s.AlreadyReplayed)
	fmt.Fprintf(tw, "skipped: over --max-replays\t%d\tdlq-replay-count >= %d\n", s.OverMax, maxReplays)
	if s.Truncated > 0 {
		fmt.Fprintf(tw, "skipped: truncated letters\t%d\twritten without their value (dlq-truncated); read the originals from the event topic\n", s.Truncated)
	}
	if s.OverLimit > 0 {
		fmt.Fprintf(tw, "skipped: over --limit\t%d\trun again to replay the rest\n", s.OverLimit)
	}
	fmt.Fprintf(tw, "would replay\t%d\t\n", s.Replayed)
	fmt.Fprintf(tw, "  to the original partition\t%d\t%s still has the partition count the letter records\n", s.ToOriginalPartition, s.Target)
	fmt.Fprintf(tw, "  by %s\t%d\tthe account's partition under --partitioner %s instead\n", s.Partitioner, s.ByPartitioner, s.Partitioner)
	for _, t := range append(dlqEventTypeNames(), "unknown") {
		if n := s.ByEventType[dlqFullType(t)]; n > 0 {
			fmt.Fprintf(tw, "  %s events\t%d\t\n", t, n)
		}
	}
	tw.Flush()
	reasons := make([]string, 0, len(s.FallbackReasons))
	for r := range s.FallbackReasons {
		reasons = append(reasons, r)
	}
	slices.Sort(reasons)
	for _, r := range reasons {
		fmt.Fprintf(w, "  by %s because %s: %d\n", s.Partitioner, r, s.FallbackReasons[r])
	}
	for _, c := range s.OverMaxRecords {
		fmt.Fprintf(w, "over max replays: %s\n", c)
	}
	for _, c := range s.TruncatedRecords {
		fmt.Fprintf(w, "truncated, not replayable: %s\n", c)
	}
	if s.DryRun {
		fmt.Fprintf(w, "DRY RUN: nothing was produced to %s and the ledger was not touched.\n", s.Target)
	}
}

// dlqPrintResult prints what a replay that got past its plan did.
func dlqPrintResult(w io.Writer, s dlq.Summary, err error) {
	if s.DryRun || errors.Is(err, errNotConfirmed) || errors.Is(err, dlq.ErrOtherTopic) {
		return // the plan said it all
	}
	note := fmt.Sprintf("produced to %s and recorded in the ledger", s.Target)
	if err != nil {
		note += ", before the error below"
	}
	fmt.Fprintf(w, "replayed %d record(s) from %s: %s (%d to the original partition, %d by %s)\n",
		s.Replayed, s.Source, note, s.ToOriginalPartition, s.ByPartitioner, s.Partitioner)
}

// dlqEntryView is the JSON shape of one record in "dlq list --output json".
type dlqEntryView struct {
	dlq.Entry
	Account string `json:"account"`
	Key     string `json:"key"`
	// Value is the record value when it is UTF-8 (it is JSON for all but some invalid events);
	// otherwise ValueBase64 holds it.
	Value       string          `json:"value,omitempty"`
	ValueBase64 string          `json:"value_base64,omitempty"`
	Headers     []dlqHeaderView `json:"headers"`
}

type dlqHeaderView struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

func newDLQEntryView(e *dlq.Entry) dlqEntryView {
	v := dlqEntryView{Entry: *e, Account: e.Account(), Key: string(e.Key), Headers: []dlqHeaderView{}}
	if utf8.Valid(e.Value) {
		v.Value = string(e.Value)
	} else {
		v.ValueBase64 = base64.StdEncoding.EncodeToString(e.Value)
	}
	for _, h := range e.Headers {
		v.Headers = append(v.Headers, dlqHeaderView{Key: h.Key, Value: string(h.Value)})
	}
	return v
}

func dlqParseCodes(s string) ([]int, error) {
	var out []int
	for _, p := range splitList(s) {
		n, err := dlq.ParseCode(p)
		if err != nil {
			return nil, fmt.Errorf("--code %q: not an IM code, HTTP status, network or timeout", p)
		}
		out = append(out, n)
	}
	return out, nil
}

// dlqParseTime reads an RFC 3339 time, or a duration meaning that long before now ("24h", "90m",
// and days as "7d"). Empty means no bound.
func dlqParseTime(flagName, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(d); err == nil && n >= 0 {
			return now.Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%s %q: want an RFC 3339 time (2026-11-29T08:00:00Z) or a duration ago (24h, 7d)", flagName, s)
}

// imPrefix is how an IM error starts its text ("im create_contact_group: code 51010 (permanent): ");
// the table has the code in its own column, and the prefix ate most of the INFO cell.
var imPrefix = regexp.MustCompile(`im [a-z_]+: (partial result: )?code -?[0-9]+( \([a-z_ -]+\))?: `)

// dlqInfoCell is the INFO cell: the cause without the IM prefix, cut to 80 characters.
func dlqInfoCell(info string) string {
	return dlqCell(imPrefix.ReplaceAllString(info, ""), 80)
}

// dlqCell makes s fit one table cell: control characters become spaces, and it is cut to n runes.
func dlqCell(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// dlqEventTypeNames are the event types as --event-type and the TYPE column name them: without
// the common "contact_group." prefix.
func dlqEventTypeNames() []string {
	names := make([]string, 0, len(event.Types()))
	for _, t := range event.Types() {
		names = append(names, strings.TrimPrefix(string(t), dlqTypePrefix))
	}
	return names
}

const dlqTypePrefix = "contact_group."

// dlqFullType is the event_type a short name stands for ("renamed" → "contact_group.renamed");
// other names are returned as given.
func dlqFullType(name string) string {
	if t := event.Type(dlqTypePrefix + name); t.Known() {
		return string(t)
	}
	return name
}

// dlqParseEventTypes reads --event-type: known types, short or in full, comma-separated.
func dlqParseEventTypes(s string) ([]event.Type, error) {
	var out []event.Type
	for _, n := range splitList(s) {
		t := event.Type(dlqFullType(n))
		if !t.Known() {
			return nil, fmt.Errorf("unknown event type %q (want %s)", n, strings.Join(dlqEventTypeNames(), ", "))
		}
		out = append(out, t)
	}
	return out, nil
}

// dlqTypeCell is an event type in the table: short when known, "-" when the value has none, else
// the value's own (bounded).
func dlqTypeCell(t event.Type) string {
	switch {
	case t.Known():
		return strings.TrimPrefix(string(t), dlqTypePrefix)
	case t == "":
		return "-"
	}
	return dlqCell(string(t), 32)
}
