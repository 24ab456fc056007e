package imsim

import (
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/internal/configtest"
)

func TestConfigValidate(t *testing.T) {
	ok := Config{SDKAppID: 1, SecretKey: "k"}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want []string
	}{
		{"defaults", func(*Config) {}, nil},
		{"no appid", func(c *Config) { c.SDKAppID = 0 }, []string{"imsim config: sdkappid: must be positive"}},
		{"no key", func(c *Config) { c.SecretKey = "" }, []string{"secret key: is empty"}},
		{"negative limit", func(c *Config) { c.PageSize = -1 }, []string{"page size: limits must not be negative, got -1"}},
		{"negative hang", func(c *Config) { c.MaxHang = -1 }, []string{"max hang: must not be negative"}},
		{"duplicate names", func(c *Config) { c.DuplicateNames = "x" }, []string{`duplicate names: "x": want reject, merge or allow`}},
		{"rename duplicates", func(c *Config) { c.RenameDuplicates = DuplicateMerge }, []string{`rename duplicates: "merge": want reject or allow`}},
		{"name unit", func(c *Config) { c.NameUnit = "runes" }, []string{`name unit: "runes": want bytes or chars`}},
		{"rate window", func(c *Config) { c.RateWindow = "tumbling" }, []string{`rate window: "tumbling": want sliding or calendar`}},
		{"faults", func(c *Config) { c.Faults.HangRate, c.Faults.Latency = 2, -1 }, []string{"imsim faults: hang rate 2 outside [0, 1]", "imsim faults: negative latency"}},
		{"everything", func(c *Config) {
			*c = Config{RateLimit: -1, MaxGroups: -1, MaxContacts: -1, MaxNameBytes: -1, MaxContactsPerCall: -1, PageSize: -1,
				MaxHang: -time.Second, DuplicateNames: "x", RenameDuplicates: "x", NameUnit: "x", RateWindow: "x",
				Faults: Faults{Latency: -1}}
		}, []string{"imsim config: sdkappid", "secret key", "rate limit", "max groups", "max contacts:", "max name bytes",
			"max contacts per call", "page size", "max hang", "duplicate names", "rename duplicates", "name unit", "rate window",
			"imsim faults: negative latency"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			configtest.Problems(t, c.Validate(), tc.want...)
			s, err := New(c)
			if (err == nil) != (len(tc.want) == 0) {
				t.Errorf("New error %v disagrees with Validate", err)
			}
			if s != nil {
				s.Close()
			}
		})
	}
}
