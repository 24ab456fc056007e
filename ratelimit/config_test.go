package ratelimit

import (
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/internal/configtest"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"defaults", Config{}, nil},
		{"huge margin", Config{JitterMargin: time.Second}, []string{"ratelimit config: jitter margin: 1s outside 0-500ms"}},
		{"negative margin", Config{JitterMargin: -1}, []string{"jitter margin: -1ns outside"}},
		{"fresh conn margin", Config{FreshConnMargin: time.Second}, []string{"fresh connection margin: 1s outside"}},
		{"late arrival max over 500ms", Config{LateArrivalMax: time.Second}, []string{"late arrival max: 1s over 500ms"}},
		{"late arrival shift off", Config{LateArrivalMax: LateArrivalOff}, nil},
		{"slow-down-after", Config{SlowDownAfter: -1}, []string{"slow-down-after: -1 is negative"}},
		{"slow-down of 1", Config{SlowDownFactor: 1}, []string{"slow-down factor: 1 outside (0, 1)"}},
		{"min rate factor", Config{MinRateFactor: 2}, []string{"min rate factor: 2 outside (0, 1]"}},
		{"recover step", Config{RecoverStep: -1}, []string{"recover step: -1 must be positive"}},
		{"recover interval", Config{RecoverInterval: -1}, []string{"recover interval: -1ns must be positive"}},
		{"everything", Config{
			JitterMargin: -1, FreshConnMargin: -1, LateArrivalMax: time.Second, SlowDownAfter: -1,
			SlowDownFactor: 2, MinRateFactor: 2, RecoverStep: -1, RecoverInterval: -1,
		}, []string{"jitter margin", "fresh connection margin", "late arrival max", "slow-down-after",
			"slow-down factor", "min rate factor", "recover step", "recover interval"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			configtest.Problems(t, tc.cfg.Validate(), tc.want...)
			if _, err := New(tc.cfg, "create_contact_group", 200); (err == nil) != (len(tc.want) == 0) {
				t.Errorf("New error %v disagrees with Validate", err)
			}
		})
	}
}

func TestNewRejectsABudgetBelowOne(t *testing.T) {
	for _, budget := range []float64{0, -5} {
		if _, err := New(Config{}, "create_contact_group", budget); err == nil {
			t.Errorf("New with budget %v succeeded", budget)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	var c Config
	c.setDefaults()
	if c.JitterMargin != DefaultJitterMargin || c.FreshConnMargin != DefaultFreshConnMargin ||
		c.LateArrivalMax != DefaultLateArrivalMax || c.SlowDownAfter != DefaultSlowDownAfter ||
		c.SlowDownFactor != DefaultSlowDownFactor || c.RecoverStep != DefaultRecoverStep ||
		c.RecoverInterval != DefaultRecoverInterval || c.MinRateFactor != DefaultMinRateFactor ||
		c.WidenOnStall || c.Standalone || c.Logger == nil || c.Metrics == nil || c.Now == nil || c.Sleep == nil {
		t.Errorf("defaults not applied: %+v", c)
	}
	c = Config{LateArrivalMax: LateArrivalOff, JitterMargin: time.Millisecond}
	c.setDefaults()
	if c.LateArrivalMax != LateArrivalOff || c.JitterMargin != time.Millisecond {
		t.Errorf("set values overwritten: %+v", c)
	}
}
