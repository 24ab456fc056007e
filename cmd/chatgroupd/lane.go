package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/chatgroupd/chatgroupd/consumer"
)

// laneOptions are the flags of `chatgroupd lane list`.
type laneOptions struct {
	kafka     kafkaFlags
	topic     string
	laneTopic string
	group     string
	output    string
}

const laneAbout = "Lists the accounts parked in the retry lane (chatgroupd run --retry-lane=on): accounts whose head\n" +
	"event kept failing transiently past --account-stall-limit, moved with their later events, in order,\n" +
	"to <topic>.retry so they no longer hold up their partition. It reads the lane from the group's\n" +
	"committed lane position to its end, as a new owner would, and changes nothing. EVENTS may count an\n" +
	"event twice after a crash (the copy ends without a second call) or one that ended since the last commit."

func newLaneFlags(o *laneOptions) *flag.FlagSet {
	fs := newFlagSet("lane list", nil)
	o.kafka.register(fs)
	stringFlag(fs, &o.topic, "topic", defaultTopic, topicName, "the event topic")
	stringFlag(fs, &o.laneTopic, "lane-topic", "", topicName, "the retry-lane topic (default <topic>.retry)")
	stringFlag(fs, &o.group, "group", defaultGroup, nonEmpty, "the consumer group whose lane position is read")
	stringFlag(fs, &o.output, "output", "table", oneOf, "output format: table or json", "table", "json")
	return fs
}

// runLane is "chatgroupd lane": the operator's view of the retry lane.
func runLane(ctx context.Context, args []string, getenv env, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		io.WriteString(stderr, "Usage: chatgroupd lane list [flags]\n\n"+laneAbout+"\n")
		if len(args) == 0 {
			return errors.New("lane: no subcommand given (list)")
		}
		return errHelp
	}
	if args[0] != "list" {
		return usageError("lane", fmt.Errorf("unknown subcommand %q (want list)", args[0]))
	}
	o := &laneOptions{}
	fs := newLaneFlags(o)
	h := help{usage: "chatgroupd lane list [flags]", about: laneAbout,
		env:     []string{"CHATGROUPD_KAFKA_SASL_PASSWORD   the Kafka SASL password (or --kafka-sasl-password-file)"},
		example: []string{"chatgroupd lane list --brokers kafka-0:9092 --topic chat.contact-groups"}}
	if err := parseFlags(fs, args[1:], getenv, stdout, h); err != nil {
		return err
	}
	conn, _, err := o.kafka.conn(getenv)
	if err != nil {
		return usageError("lane list", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	parked, err := consumer.ListParked(ctx, consumer.LaneListConfig{Brokers: conn.Brokers, Transport: conn.Transport,
		Topic: o.topic, LaneTopic: o.laneTopic, GroupID: o.group})
	if err != nil {
		return err
	}
	return printParked(stdout, parked, o.output, time.Now())
}

func printParked(w io.Writer, parked []consumer.Parked, output string, now time.Time) error {
	if output == "json" {
		if parked == nil {
			parked = []consumer.Parked{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(parked)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tPARTITION\tEVENTS\tPARKED FOR\tREASON\tCODE\tATTEMPTS\tHEAD OFFSET\tINFO")
	for _, p := range parked {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%d\t%d\t%d\t%s\n", dlqCell(p.Account, 32), p.Partition, p.Events,
			now.Sub(p.Since).Round(time.Second), p.Reason, p.Code, p.Attempts, p.HeadSourceOffset, dlqCell(p.Info, 60))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d parked account(s)\n", len(parked))
	return err
}
