package dlq

import (
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/internal/configtest"
)

func TestConfigValidate(t *testing.T) {
	ok := Config{Brokers: []string{"b"}, Topic: "d", GroupID: "g"}
	cases := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"defaults", ok, nil},
		{"no brokers", Config{Topic: "d", GroupID: "g"}, []string{"dlq config: brokers: no brokers"}},
		{"no topic", Config{Brokers: []string{"b"}, GroupID: "g"}, []string{"topic: no DLQ topic"}},
		{"no group", Config{Brokers: []string{"b"}, Topic: "d"}, []string{"group id: no consumer group id"}},
		{"negative dial", Config{Brokers: []string{"b"}, Topic: "d", GroupID: "g", DialTimeout: -1}, []string{"dial timeout: negative timeout"}},
		{"negative write", Config{Brokers: []string{"b"}, Topic: "d", GroupID: "g", WriteTimeout: -1}, []string{"write timeout: negative timeout"}},
		{"everything", Config{DialTimeout: -time.Second, WriteTimeout: -time.Second},
			[]string{"brokers", "topic", "group id", "dial timeout", "write timeout"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			configtest.Problems(t, tc.cfg.Validate(), tc.want...)
			if _, err := NewWriter(tc.cfg); (err == nil) != (len(tc.want) == 0) {
				t.Errorf("NewWriter error %v disagrees with Validate", err)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{}
	c.setDefaults()
	if c.DialTimeout != DefaultDialTimeout || c.WriteTimeout != DefaultWriteTimeout || c.Logger == nil || c.Metrics == nil || c.Now == nil {
		t.Errorf("defaults not applied: %+v", c)
	}
	c = Config{DialTimeout: time.Second, WriteTimeout: 2 * time.Second}
	c.setDefaults()
	if c.DialTimeout != time.Second || c.WriteTimeout != 2*time.Second {
		t.Errorf("set values overwritten: %+v", c)
	}
}

func TestToolConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  ToolConfig
		want []string
	}{
		{"topic", ToolConfig{Brokers: []string{"b"}, Topic: "t"}, nil},
		{"dlq topic only", ToolConfig{Brokers: []string{"b"}, DLQTopic: "t.dlq"}, nil},
		{"no brokers", ToolConfig{Topic: "t"}, []string{"dlq config: brokers: no brokers"}},
		{"no topic", ToolConfig{Brokers: []string{"b"}, LedgerTopic: "l"}, []string{"topic: no topic"}},
		{"negative dial", ToolConfig{Brokers: []string{"b"}, Topic: "t", DialTimeout: -1}, []string{"dial timeout: negative dial timeout"}},
		{"everything", ToolConfig{DialTimeout: -1}, []string{"brokers", "topic", "dial timeout"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			configtest.Problems(t, tc.cfg.Validate(), tc.want...)
		})
	}
}

func TestToolConfigDefaults(t *testing.T) {
	c := ToolConfig{Topic: "t"}
	c.setDefaults()
	if c.DLQTopic != "t.dlq" || c.LedgerTopic != "t.dlq.replays" || c.DialTimeout != DefaultDialTimeout || c.Logger == nil || c.Now == nil {
		t.Errorf("defaults not applied: %+v", c)
	}
	c = ToolConfig{Topic: "prod", DLQTopic: "staging.dlq"}
	c.setDefaults()
	if c.DLQTopic != "staging.dlq" || c.LedgerTopic != "staging.dlq.replays" {
		t.Errorf("derived topics: %+v", c)
	}
	c = ToolConfig{}
	c.setDefaults()
	if c.DLQTopic != "" || c.LedgerTopic != "" {
		t.Errorf("topics derived from nothing: %+v", c)
	}
}
