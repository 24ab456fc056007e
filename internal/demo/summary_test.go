package demo

import (
	"slices"
	"strings"
	"testing"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/loadgen"
)

// TestCheck: a lifecycle run passes only when every type was applied as often as the load holds
// it, creates made exactly the groups, and no API's window went over its budget.
func TestCheck(t *testing.T) {
	want := loadgen.Expect{Valid: 10, Duplicates: 1, Invalid: 1, OverQuota: 1,
		ByType: loadgen.TypeCounts{Created: 4, Renamed: 2, ContactsAdded: 2, ContactsRemoved: 1, Deleted: 1}}
	good := func() (counts, imsim.Stats) {
		c := counts{
			processed: 13,
			outcomes:  map[string]float64{"applied": 10, "duplicate": 1, "invalid": 1, "rejected": 1},
			applied: map[string]float64{"contact_group.created": 4, "contact_group.renamed": 2, "contact_group.contacts_added": 2,
				"contact_group.contacts_removed": 1, "contact_group.deleted": 1},
			dlq: map[string]float64{"rejected 51010": 1, "invalid 0": 1},
		}
		st := imsim.Stats{GroupsCreated: 4, APIs: map[string]imsim.APIStats{im.APICreate: {MaxWindow: 150}, im.APIUpdate: {MaxWindow: 90}}}
		return c, st
	}
	d := &run{cfg: Config{Load: loadgen.Config{Mix: loadgen.MixLifecycle}}}
	for _, tc := range []struct {
		name   string
		mutate func(*counts, *imsim.Stats)
		want   string
	}{
		{"as the load says", func(*counts, *imsim.Stats) {}, ""},
		{"a rename lost", func(c *counts, _ *imsim.Stats) {
			c.applied["contact_group.renamed"]--
			c.applied["contact_group.contacts_added"]++ // the totals still agree
		}, "applied 1 contact_group.renamed events, want 2"},
		{"a group too many", func(_ *counts, st *imsim.Stats) { st.GroupsCreated++ }, "simulator created 5 groups, want 4"},
		{"update window over budget", func(_ *counts, st *imsim.Stats) {
			st.APIs[im.APIUpdate] = imsim.APIStats{MaxWindow: windowTolerance + 1}
		}, "update_contact_group calls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, st := good()
			tc.mutate(&c, &st)
			broken := d.check(true, 13, want, c, st, 2)
			if tc.want == "" {
				if len(broken) > 0 {
					t.Fatalf("broken: %q", broken)
				}
				return
			}
			if !slices.ContainsFunc(broken, func(b string) bool { return strings.Contains(b, tc.want) }) {
				t.Fatalf("broken %q, want one naming %q", broken, tc.want)
			}
		})
	}
}
