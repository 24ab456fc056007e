package imsim

import (
	"strings"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
)

func itemCode(r result) int {
	if len(r.UpdateGroupResult.ContactResultItem) != 1 {
		return -1
	}
	return r.UpdateGroupResult.ContactResultItem[0].ResultCode
}

// TestPolicies: each behaviour the documentation leaves open answers per its Config field, and
// the default is the one the rest of the repository assumes.
func TestPolicies(t *testing.T) {
	cjk11 := strings.Repeat("群", 11) // 33 bytes, 11 characters
	cases := []struct {
		name string
		cfg  Config
		run  func(h *harness) int // the code observed
		want int
	}{
		{"add existing default", Config{}, func(h *harness) int {
			return itemCode(h.call(im.PathUpdateContactGroup, addDel("a", "g", im.ContactOptAdd, c2c(1))))
		}, 0},
		{"add existing coded", Config{AddExistingCode: 51014}, func(h *harness) int {
			return itemCode(h.call(im.PathUpdateContactGroup, addDel("a", "g", im.ContactOptAdd, c2c(1))))
		}, 51014},
		{"remove missing default", Config{}, func(h *harness) int {
			return itemCode(h.call(im.PathUpdateContactGroup, addDel("a", "g", im.ContactOptDel, c2c(9))))
		}, 0},
		{"remove missing coded", Config{RemoveMissingCode: 51015}, func(h *harness) int {
			return itemCode(h.call(im.PathUpdateContactGroup, addDel("a", "g", im.ContactOptDel, c2c(9))))
		}, 51015},
		{"rename onto existing default", Config{}, func(h *harness) int {
			return h.call(im.PathUpdateContactGroup, rename("a", "g", "h")).ErrorCode
		}, im.CodeBadParams},
		{"rename onto existing allowed", Config{RenameDuplicates: DuplicateAllow}, func(h *harness) int {
			return h.call(im.PathUpdateContactGroup, rename("a", "g", "h")).ErrorCode
		}, 0},
		{"rename independent of create policy", Config{DuplicateNames: DuplicateAllow}, func(h *harness) int {
			return h.call(im.PathUpdateContactGroup, rename("a", "g", "h")).ErrorCode
		}, im.CodeBadParams},
		{"update missing default", Config{}, func(h *harness) int {
			return h.call(im.PathUpdateContactGroup, rename("a", "nope", "x")).ErrorCode
		}, im.CodeGroupNotFound},
		{"update missing coded", Config{MissingGroupCode: 51016}, func(h *harness) int {
			return h.call(im.PathUpdateContactGroup, rename("a", "nope", "x")).ErrorCode
		}, 51016},
		{"delete missing default", Config{}, func(h *harness) int {
			return h.call(im.PathDelContactGroup, im.DeleteRequest{FromAccount: "a", GroupName: []string{"nope"}}).ErrorCode
		}, im.CodeGroupNotFound},
		{"delete missing ok", Config{DeleteMissingOK: true}, func(h *harness) int {
			r := h.call(im.PathDelContactGroup, im.DeleteRequest{FromAccount: "a", GroupName: []string{"nope", "g"}})
			if len(h.sim.Groups("a")) != 1 { // g went, h stayed
				return -1
			}
			return r.ErrorCode
		}, 0},
		{"name bytes", Config{}, func(h *harness) int {
			return h.call(im.PathCreateContactGroup, createReq("a", cjk11, c2c(1))).ErrorCode
		}, im.CodeNameTooLong},
		{"name chars", Config{NameUnit: NameChars}, func(h *harness) int {
			return h.call(im.PathCreateContactGroup, createReq("a", cjk11, c2c(1))).ErrorCode
		}, 0},
		{"name chars still limited", Config{NameUnit: NameChars}, func(h *harness) int {
			return h.call(im.PathCreateContactGroup, createReq("a", strings.Repeat("群", 33), c2c(1))).ErrorCode
		}, im.CodeNameTooLong},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, c.cfg)
			for _, name := range []string{"g", "h"} {
				if r := h.call(im.PathCreateContactGroup, createReq("a", name, c2c(1))); r.ErrorCode != 0 {
					t.Fatalf("setup create %s: %d", name, r.ErrorCode)
				}
			}
			if got := c.run(h); got != c.want {
				t.Fatalf("code %d, want %d", got, c.want)
			}
		})
	}
}

func TestPolicyValidation(t *testing.T) {
	for _, c := range []Config{
		{RenameDuplicates: DuplicateMerge}, {NameUnit: "runes"}, {RateWindow: "tumbling"},
	} {
		c.SDKAppID, c.SecretKey = 1, "k"
		if err := c.Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

// TestRateLimitCalendarWindow: with calendar windows a full second's calls just before a second
// boundary leave the next second's budget whole; with sliding ones they use it up.
func TestRateLimitCalendarWindow(t *testing.T) {
	for _, c := range []struct {
		window     string
		wantSecond int // calls accepted of the 5 sent just after the boundary
	}{{WindowCalendar, 5}, {WindowSliding, 0}} {
		t.Run(c.window, func(t *testing.T) {
			h := newHarness(t, Config{RateLimit: 5, RateWindow: c.window})
			q := h.query()
			boundary := h.clock.Now().Truncate(time.Second).Add(time.Second)
			accepted := func(at time.Time) int {
				n := 0
				for i := range 5 {
					h.clock.Set(at.Add(time.Duration(i) * time.Millisecond))
					if h.post(im.PathGetContactGroup, q, im.GetRequest{FromAccount: "a"}).ErrorCode == 0 {
						n++
					}
				}
				return n
			}
			if n := accepted(boundary.Add(-100 * time.Millisecond)); n != 5 {
				t.Fatalf("first burst: %d accepted", n)
			}
			if n := accepted(boundary.Add(10 * time.Millisecond)); n != c.wantSecond {
				t.Fatalf("second burst: %d accepted, want %d", n, c.wantSecond)
			}
		})
	}
}
