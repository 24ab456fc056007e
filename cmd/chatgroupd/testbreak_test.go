package main

import "testing"

func TestTestBreak(t *testing.T) {
	for _, tc := range []struct {
		v       string
		legacy  bool
		wantErr bool
	}{{"", false, false}, {"legacy-drain", true, false}, {"legacy_drain", false, true}, {"yes", false, true}} {
		legacy, err := testBreak(tc.v)
		if legacy != tc.legacy || (err != nil) != tc.wantErr {
			t.Errorf("testBreak(%q) = %v, %v; want %v, error %v", tc.v, legacy, err, tc.legacy, tc.wantErr)
		}
	}
}
