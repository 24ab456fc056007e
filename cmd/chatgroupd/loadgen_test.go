package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
)

func TestLoadgenCommand(t *testing.T) {
	k := kafkatest.New(t)
	k.CreateTopic(t, "events", 2)
	var out bytes.Buffer
	err := run(t.Context(), []string{"loadgen", "--brokers", strings.Join(k.Brokers, ","), "--topic", "events",
		"--count", "250", "--seed", "3"}, mapEnv(nil), &out, &out)
	if err != nil {
		t.Fatalf("loadgen: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "produced 250 records to events") {
		t.Fatalf("summary: %s", out.String())
	}
	if got := len(k.ReadAll(t, "events")); got != 250 {
		t.Fatalf("topic holds %d records", got)
	}
	for _, args := range [][]string{{"--count", "5"}, {"--brokers", "a:1", "--invalid-rate", "0.9"}} {
		if err := run(t.Context(), append([]string{"loadgen"}, args...), mapEnv(nil), &out, &out); err == nil {
			t.Errorf("loadgen %v: no error", args)
		}
	}
}
