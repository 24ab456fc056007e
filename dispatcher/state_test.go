package dispatcher

import (
	"testing"
	"time"
)

func TestOutageDetector(t *testing.T) {
	t0 := time.Unix(0, 0)
	for _, tc := range []struct {
		name  string
		calls func(record func(at time.Duration, account string, failed bool) bool) bool
		want  bool
	}{
		{"all fail, many accounts", func(rec func(time.Duration, string, bool) bool) bool {
			trip := false
			for i := range 20 {
				trip = rec(time.Duration(i)*time.Millisecond, string(rune('a'+i%5)), true)
			}
			return trip
		}, true},
		{"all fail, one account", func(rec func(time.Duration, string, bool) bool) bool {
			trip := false
			for i := range 40 {
				trip = trip || rec(time.Duration(i)*time.Millisecond, "a", true)
			}
			return trip
		}, false},
		{"fewer than the window", func(rec func(time.Duration, string, bool) bool) bool {
			trip := false
			for i := range 19 {
				trip = trip || rec(time.Duration(i)*time.Millisecond, string(rune('a'+i)), true)
			}
			return trip
		}, false},
		{"75% failing", func(rec func(time.Duration, string, bool) bool) bool {
			trip := false
			for i := range 100 {
				trip = trip || rec(time.Duration(i)*time.Millisecond, string(rune('a'+i%7)), i%4 != 0)
			}
			return trip
		}, false},
		{"85% failing", func(rec func(time.Duration, string, bool) bool) bool {
			trip := false
			for i := range 100 {
				trip = trip || rec(time.Duration(i)*time.Millisecond, string(rune('a'+i%7)), i%20 > 2)
			}
			return trip
		}, true},
		{"spread over more than the span", func(rec func(time.Duration, string, bool) bool) bool {
			trip := false
			for i := range 40 {
				trip = trip || rec(time.Duration(i)*time.Second, string(rune('a'+i%7)), true)
			}
			return trip
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := outageDetector{size: 20, span: 10 * time.Second, ratio: 0.8, accounts: 3}
			got := tc.calls(func(at time.Duration, account string, failed bool) bool {
				return o.record(t0.Add(at), account, failed)
			})
			if got != tc.want {
				t.Errorf("tripped = %v, want %v", got, tc.want)
			}
		})
	}
}
