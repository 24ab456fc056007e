package configtest

import (
	"errors"
	"fmt"
	"testing"
)

// recorder is a testing.TB that records failures instead of ending the test.
type recorder struct {
	testing.TB
	failed bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Fatalf(string, ...any) { r.failed = true }
func (r *recorder) Errorf(string, ...any) { r.failed = true }

func TestProblems(t *testing.T) {
	joined := fmt.Errorf("x config: %w", errors.Join(errors.New("a: bad"), errors.New("b: bad")))
	cases := []struct {
		name string
		err  error
		want []string
		fail bool
	}{
		{"nil, none wanted", nil, nil, false},
		{"nil, one wanted", nil, []string{"a"}, true},
		{"error, none wanted", joined, nil, true},
		{"both in order", joined, []string{"x config: a:", "b:"}, false},
		{"wrong order", joined, []string{"b:", "a:"}, true},
		{"one missing", joined, []string{"a:"}, true},
		{"one extra", joined, []string{"a:", "b:", "c:"}, true},
	}
	for _, tc := range cases {
		r := &recorder{TB: t}
		Problems(r, tc.err, tc.want...)
		if r.failed != tc.fail {
			t.Errorf("%s: failed %v, want %v", tc.name, r.failed, tc.fail)
		}
	}
}
