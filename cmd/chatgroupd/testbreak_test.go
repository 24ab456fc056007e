package main

import "testing"

func TestTestBreak(t *testing.T) {
	for _, tc := range []struct {
		v       string
		want    string
		wantErr bool
	}{
		{"", "", false}, {"legacy-drain", breakLegacyDrain, false}, {"whole-budget", breakWholeBudget, false}, {"drop-partition", breakDropPart, false},
		{"blind-lifecycle", breakBlindLifecycle, false}, {"unstated-ends", breakUnstatedEnds, false},
		{"ungated-writes", breakUngatedWrites, false}, {"ungated-lane", breakUngatedLane, false},
		{"legacy_drain", "", true}, {"yes", "", true},
	} {
		got, err := testBreak(tc.v)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("testBreak(%q) = %q, %v; want %q, error %v", tc.v, got, err, tc.want, tc.wantErr)
		}
	}
}
