package integration

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/dlq"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
)

// kcat returns the path of kcat, skipping the test when it is not installed.
func kcat(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat not installed (apt-get install -y kcat)")
	}
	return p
}

func runKcat(t *testing.T, ctx context.Context, stdin []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.CommandContext(ctx, kcat(t), args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kcat %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// TestKcatProducedEventsConsumed produces events the way a non-Go producer would (kcat, i.e.
// librdkafka, with its Java-compatible murmur2 partitioner) and reads them with kafka-go: every
// value parses, keys are the accounts, headers arrive, and each key sits in the partition
// kafka-go's Murmur2Balancer would have chosen — so Go and non-Go producers of the topic agree.
func TestKcatProducedEventsConsumed(t *testing.T) {
	c := kafkatest.Real(t)
	ctx := testwait.Context(t, 60*time.Second)
	topic := kafkatest.UniqueName("it-kcat-in")
	c.CreateTopic(t, topic, 4)

	var in bytes.Buffer
	const n = 120
	for i := range n {
		e := event.Event{
			EventID: fmt.Sprintf("kcat-%d", i), EventType: event.TypeContactGroupCreated,
			FromAccount: fmt.Sprintf("user_%03d", i%23), Seq: int64(i/23 + 1), GroupName: "同事 " + fmt.Sprint(i),
			Contacts: []event.Contact{{Type: event.ContactC2C, ToAccount: "peer"}, {Type: event.ContactGroup, ToGroupID: "@TGS#1"}},
		}
		v, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&in, "%s:%s\n", e.Key(), v)
	}
	runKcat(t, ctx, in.Bytes(), "-b", c.Brokers[0], "-t", topic, "-P", "-K:", "-H", "replay-count=0",
		"-X", "partitioner=murmur2_random", "-X", "acks=all")

	msgs := c.ReadAll(t, topic)
	if len(msgs) != n {
		t.Fatalf("read %d records, want %d", len(msgs), n)
	}
	seen := map[string]bool{}
	for _, m := range msgs {
		e, err := event.Parse(m.Value)
		if err != nil {
			t.Fatalf("partition %d offset %d: %v: %s", m.Partition, m.Offset, err, m.Value)
		}
		seen[e.EventID] = true
		if string(m.Key) != e.FromAccount {
			t.Errorf("%s: key %q, want %q", e.EventID, m.Key, e.FromAccount)
		}
		if want := (&kafka.Murmur2Balancer{}).Balance(m, 0, 1, 2, 3); m.Partition != want {
			t.Errorf("%s: kcat put key %q in partition %d, kafka-go would use %d", e.EventID, m.Key, m.Partition, want)
		}
		if len(m.Headers) != 1 || m.Headers[0].Key != event.HeaderReplayCount || string(m.Headers[0].Value) != "0" {
			t.Errorf("%s: headers %v", e.EventID, m.Headers)
		}
	}
	if len(seen) != n {
		t.Errorf("%d distinct events, want %d", len(seen), n)
	}
}

// TestKcatReadsDLQHeaders writes a dead-letter record with kafka-go as chatgroupd does (acks=all,
// murmur2) and reads it with kcat: an operator's kcat shows the dlq-* headers and the original
// value byte for byte.
func TestKcatReadsDLQHeaders(t *testing.T) {
	c := kafkatest.Real(t)
	kcat(t)
	ctx := testwait.Context(t, 60*time.Second)
	topic := kafkatest.UniqueName("it-kcat-dlq")
	c.CreateTopic(t, topic, 2)

	orig := kafka.Message{
		Topic: "chat.contact-groups", Partition: 3, Offset: 42, Time: time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC),
		Key: []byte("alice"), Value: []byte(`{"event_id":"e1","bad json`),
		Headers: []kafka.Header{{Key: "trace-id", Value: []byte("abc")}},
	}
	rec := dlq.Record(orig, dlq.Letter{Reason: dlq.ReasonInvalid, Info: "bad JSON: unexpected end", FromAccount: "alice"}, "chatgroupd", time.Now())
	c.Produce(t, topic, rec)

	out := runKcat(t, ctx, nil, "-b", c.Brokers[0], "-t", topic, "-C", "-e", "-q", "-o", "beginning",
		"-f", "%k\t%p\t%h\t%s\n")
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) != 1 {
		t.Fatalf("kcat printed %d lines, want 1:\n%s", len(lines), out)
	}
	f := strings.SplitN(lines[0], "\t", 4)
	if len(f) != 4 {
		t.Fatalf("kcat line %q", lines[0])
	}
	if f[0] != "alice" || f[3] != string(orig.Value) {
		t.Errorf("key %q value %q; want alice %q", f[0], f[3], orig.Value)
	}
	if want := fmt.Sprint((&kafka.Murmur2Balancer{}).Balance(rec, 0, 1)); f[1] != want {
		t.Errorf("partition %s, want %s", f[1], want)
	}
	t.Logf("kcat %%h: %s", f[2])
	for _, h := range []string{
		"trace-id=abc",
		dlq.HeaderOriginalTopic + "=chat.contact-groups",
		dlq.HeaderOriginalPartition + "=3",
		dlq.HeaderOriginalOffset + "=42",
		dlq.HeaderReason + "=invalid",
		dlq.HeaderErrorCode + "=0",
		dlq.HeaderFromAccount + "=alice",
		dlq.HeaderConsumerGroup + "=chatgroupd",
		dlq.HeaderReplayCount + "=0",
	} {
		if !strings.Contains(","+f[2]+",", ","+h+",") {
			t.Errorf("kcat headers lack %q", h)
		}
	}
}
