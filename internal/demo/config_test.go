package demo

import (
	"io"
	"math"
	"testing"

	"github.com/chatgroupd/chatgroupd/internal/configtest"
	"github.com/chatgroupd/chatgroupd/internal/loadgen"
)

func TestConfigValidate(t *testing.T) {
	newService := func(ServiceConfig) (Service, error) { return nil, nil }
	ok := func() Config { return Config{SecretKey: "k", Out: io.Discard, NewService: newService} }
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want []string
	}{
		{"defaults", func(*Config) {}, nil},
		{"events", func(c *Config) { c.Events = -1 }, []string{"events: -1"}},
		{"produce rate", func(c *Config) { c.ProduceRate = -1 }, []string{"produce rate"}},
		{"partitions", func(c *Config) { c.Partitions = -2 }, []string{"partitions"}},
		{"rate limit", func(c *Config) { c.RateLimit = math.NaN() }, []string{"rate limit"}},
		{"latency", func(c *Config) { c.Jitter = -1 }, []string{"latency, jitter"}},
		{"fault rate", func(c *Config) { c.FaultRate = 0.6 }, []string{"fault rate"}},
		{"reorder window", func(c *Config) { c.ReorderWindow = -1 }, []string{"reorder window"}},
		{"timeout", func(c *Config) { c.Timeout = -1 }, []string{"timeout"}},
		{"load", func(c *Config) { c.Load = loadgen.Config{InvalidRate: 0.9} }, []string{"load: invalid rate"}},
		{"required", func(c *Config) { *c = Config{} }, []string{"secret key", "out", "new service"}},
		{"everything", func(c *Config) {
			*c = Config{Events: -1, ProduceRate: -1, Partitions: -1, RateLimit: -1, Latency: -1, FaultRate: -1,
				ReorderWindow: -1, Timeout: -1, Load: loadgen.Config{SwapRate: 1}}
		}, []string{"demo config: events", "produce rate", "partitions", "rate limit", "latency", "fault rate",
			"reorder window", "timeout", "load: swap rate", "secret key", "out", "new service"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok()
			tc.edit(&c)
			configtest.Problems(t, c.Validate(), tc.want...)
			if tc.want == nil {
				return
			}
			// Run refuses what Validate refuses, before it starts anything.
			if _, err := Run(t.Context(), c); err == nil {
				t.Error("Run accepted the config")
			}
		})
	}
}

// TestConfigDefaults: a Forever run without a rate produces at DefaultForeverRate, and the load
// takes the run's seed.
func TestConfigDefaults(t *testing.T) {
	c := Config{Forever: true, Seed: 7}
	c.setDefaults()
	if c.ProduceRate != DefaultForeverRate || c.Load.Seed != 7 || c.Events != DefaultEvents || c.RateLimit != DefaultRateLimit || c.Width() != 80 {
		t.Fatalf("%+v", c)
	}
	c = Config{}
	c.setDefaults()
	if c.ProduceRate != 0 || c.Seed == 0 || c.Load.Seed != c.Seed {
		t.Fatalf("a run of --count: rate %v, seed %d (load %d)", c.ProduceRate, c.Seed, c.Load.Seed)
	}
}
