package dlq

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
)

func BenchmarkRecord(b *testing.B) {
	orig := origMessage()
	l := Letter{Reason: ReasonPartial, Code: 51008, Info: "1 of 3 failed", Attempts: 2, EventID: "e-1", FromAccount: "alice", Result: []byte(`{"GroupId":"1"}`)}
	b.ReportAllocs()
	for b.Loop() {
		_ = Record(orig, l, "chatgroupd", failTime)
	}
}

func BenchmarkParse(b *testing.B) {
	m := Record(origMessage(), Letter{Reason: ReasonPartial, Code: 51008, Info: "1 of 3 failed", Attempts: 2,
		EventID: "e-1", FromAccount: "alice", Result: []byte(`{"GroupId":"1"}`)}, "chatgroupd", failTime)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkListReplay measures the operator tools on embedded Kafka: listing and replaying a
// DLQ of 5000 records (one fresh ledger per iteration). Run with -benchtime 1x.
func BenchmarkListReplay(b *testing.B) {
	const n = 5000
	c := kafkatest.New(b)
	c.CreateTopic(b, "t", 4)
	c.CreateTopic(b, "t.dlq", 4)
	msgs := make([]kafka.Message, n)
	orig := origMessage()
	orig.Topic = "t"
	for i := range msgs {
		// Distinct original records (letters for one record would collapse into one).
		orig.Partition, orig.Offset = i%4, int64(i)
		orig.Key = []byte("acct-" + strconv.Itoa(i%500))
		msgs[i] = Record(orig, Letter{Reason: ReasonRejected, Code: 51010, Info: "20 groups", Attempts: 1,
			EventID: "e-" + strconv.Itoa(i), FromAccount: string(orig.Key)}, "chatgroupd", failTime)
	}
	c.Produce(b, "t.dlq", msgs...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var listD, replayD time.Duration
	for i := 0; b.Loop(); i++ {
		cfg := ToolConfig{Brokers: c.Brokers, Topic: "t", LedgerTopic: "t.dlq.replays-" + strconv.Itoa(i)}
		start := time.Now()
		es, err := List(ctx, cfg, Filter{})
		if err != nil || len(es) != n {
			b.Fatalf("List: %d %v", len(es), err)
		}
		listD += time.Since(start)
		start = time.Now()
		sum, err := Replay(ctx, cfg, ReplayOptions{})
		if err != nil || sum.Replayed != n {
			b.Fatalf("Replay: %+v %v", sum, err)
		}
		replayD += time.Since(start)
	}
	b.ReportMetric(float64(n*b.N)/listD.Seconds(), "listed/s")
	b.ReportMetric(float64(n*b.N)/replayD.Seconds(), "replayed/s")
}
