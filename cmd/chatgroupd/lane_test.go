package main

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/consumer"
	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
)

// TestLaneList: `chatgroupd lane list` shows the parked accounts of a lane written the way the
// consumer writes it (bob's unpark marker ends his park), as a table and as JSON; a missing lane
// topic is an error.
func TestLaneList(t *testing.T) {
	c := kafkatest.New(t)
	c.CreateTopic(t, "t", 2)
	c.CreateTopic(t, "t.retry", 2)
	since := time.Now().Add(-10 * time.Minute)
	h := func(k, v string) kafka.Header { return kafka.Header{Key: "chatgroupd-lane-" + k, Value: []byte(v)} }
	c.Produce(t, "t.retry",
		kafka.Message{Key: []byte("alice"), Value: []byte(`{}`), Headers: []kafka.Header{h("src-offset", "41"), h("reason", "stall"),
			h("retry-start", strconv.FormatInt(since.UnixNano(), 10)), h("attempts", "9"), h("code", "50004"), h("info", "internal error")}},
		kafka.Message{Key: []byte("bob"), Value: []byte(`{}`), Headers: []kafka.Header{h("src-offset", "42"), h("reason", "stall")}},
		kafka.Message{Key: []byte("alice"), Value: []byte(`{}`), Headers: []kafka.Header{h("src-offset", "43"), h("reason", "follow")}},
		kafka.Message{Key: []byte("bob"), Headers: []kafka.Header{h("unpark", "1")}},
	)
	run := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := runLane(t.Context(), append([]string{"list", "--brokers", strings.Join(c.Brokers, ","), "--topic", "t"}, args...),
			func(string) string { return "" }, &out, &errOut)
		return out.String(), err
	}
	out, err := run()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "alice") || strings.Contains(out, "bob") || !strings.Contains(out, "1 parked account(s)") ||
		!strings.Contains(out, "50004") || !strings.Contains(out, "10m0s") {
		t.Errorf("table:\n%s", out)
	}
	out, err = run("--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	var ps []consumer.Parked
	if err := json.Unmarshal([]byte(out), &ps); err != nil {
		t.Fatalf("%v in %s", err, out)
	}
	want := []consumer.Parked{{Account: "alice", Events: 2, Since: since, Reason: "stall", Code: 50004, Info: "internal error",
		Attempts: 9, HeadSourceOffset: 41}}
	// Where the key lands (partition, lane offset) is the partitioner's business, not the listing's.
	if diff := cmp.Diff(want, ps, cmpopts.IgnoreFields(consumer.Parked{}, "Partition", "HeadLaneOffset")); diff != "" {
		t.Errorf("json (-want +got):\n%s", diff)
	}
	if _, err := run("--lane-topic", "nope"); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("missing lane topic: err %v", err)
	}
}
