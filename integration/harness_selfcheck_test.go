package integration

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/dlq"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
)

// TestHarnessReferenceConsumer runs the fault-suite harness end to end against the real broker
// with a minimal in-test consumer standing in for chatgroupd: it proves that locate, the DLQ
// reader, the lag check and judge agree on a correct run, and that they see a stalled one.
func TestHarnessReferenceConsumer(t *testing.T) {
	s := newScenario(t, "selfcheck", 3, 200)
	s.createDLQ()
	ctx := testwait.Context(t, 60*time.Second)
	st := newStream("self")
	var ps []plan
	for i := range 30 {
		p := st.valid(fmt.Sprintf("acct-%d", i%6))
		ps = append(ps, p)
		if i%10 == 0 {
			ps = append(ps, duplicate(p))
		}
		if i%7 == 0 {
			ps = append(ps, st.invalid(fmt.Sprintf("acct-%d", i%6), i))
		}
	}
	ps = append(ps, st.valid(ghostPrefix+"1"), st.valid(ghostPrefix+"2"))
	s.produce(ps...)

	r, err := s.snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Pending != len(ps) || r.Lag != int64(len(ps)) || r.check(false) == nil {
		t.Fatalf("before consuming: %s", r.Summary())
	}

	if err := referenceConsume(ctx, s); err != nil {
		t.Fatalf("reference consumer: %v", err)
	}
	r = s.waitDrained(ctx)
	s.verify(r, false)
	if r.Applied != 30 || r.Dropped != 3 || r.DeadLettered != 5+2 {
		t.Errorf("counts: %s", r.Summary())
	}
}

// referenceConsume reads every partition of the scenario's topic once, applies or dead-letters
// each record, and commits the ends as a group without members (generation -1).
func referenceConsume(ctx context.Context, s *scenario) error {
	cl := client(s.c)
	imc, err := im.New(im.Config{SDKAppID: simAppID, SecretKey: simKey, BaseURL: s.sim.URL})
	if err != nil {
		return err
	}
	w := s.c.Writer(s.dlqTopic)
	defer w.Close()
	var reqs []kafka.OffsetRequest
	for p := range s.partitions {
		reqs = append(reqs, kafka.LastOffsetOf(p))
	}
	lo, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{s.topic: reqs}})
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	var commits []kafka.OffsetCommit
	for _, po := range lo.Topics[s.topic] {
		commits = append(commits, kafka.OffsetCommit{Partition: po.Partition, Offset: po.LastOffset})
		if po.LastOffset == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: s.c.Brokers, Topic: s.topic, Partition: po.Partition, MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 100 * time.Millisecond})
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				return err
			}
			if err := referenceHandle(ctx, s, imc, w, seen, m); err != nil {
				r.Close()
				return err
			}
			if m.Offset == po.LastOffset-1 {
				break
			}
		}
		r.Close()
	}
	resp, err := cl.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: s.group, GenerationID: -1, Topics: map[string][]kafka.OffsetCommit{s.topic: commits}})
	if err != nil {
		return err
	}
	for _, p := range resp.Topics[s.topic] {
		if p.Error != nil {
			return fmt.Errorf("commit partition %d: %w", p.Partition, p.Error)
		}
	}
	return nil
}

func referenceHandle(ctx context.Context, s *scenario, imc *im.Client, w *kafka.Writer, seen map[string]bool, m kafka.Message) error {
	e, err := event.Parse(m.Value)
	if err != nil {
		return w.WriteMessages(ctx, dlq.Record(m, dlq.Letter{Reason: dlq.ReasonInvalid, Info: err.Error()}, s.group, time.Now()))
	}
	if seen[e.EventID] {
		return nil
	}
	seen[e.EventID] = true
	req := &im.CreateRequest{FromAccount: e.FromAccount, GroupContactItem: []im.GroupContactItem{{GroupName: e.GroupName}}}
	for _, c := range e.Contacts {
		req.GroupContactItem[0].ContactItem = append(req.GroupContactItem[0].ContactItem, im.ContactItem{Type: c.Type, ToAccount: c.ToAccount, ToGroupID: c.ToGroupID})
	}
	_, err = imc.CreateContactGroup(ctx, req)
	var ie *im.Error
	if errors.As(err, &ie) && ie.Code == im.CodeNotImported {
		return w.WriteMessages(ctx, dlq.Record(m, dlq.Letter{Reason: dlq.ReasonRejected, Code: ie.Code, Info: "not imported", EventID: e.EventID, FromAccount: e.FromAccount}, s.group, time.Now()))
	}
	return err
}
