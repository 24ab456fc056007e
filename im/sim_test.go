package im_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/fakeclock"
)

const (
	simKey   = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"
	simAppID = 1400000000
)

// startSim runs a simulator and returns a client for it; the simulator's clock is the client's
// clock shifted by skew.
func startSim(t *testing.T, cfg imsim.Config, skew time.Duration) (*im.Client, *imsim.Server, *fakeclock.Clock) {
	t.Helper()
	clk := fakeclock.New(time.Unix(1700000000, 0))
	cfg.SDKAppID, cfg.SecretKey, cfg.Seed = simAppID, simKey, 1
	cfg.Now = func() time.Time { return clk.Now().Add(skew) }
	sim, err := imsim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	t.Cleanup(func() { sim.Close(); srv.Close() })
	c, err := im.New(im.Config{SDKAppID: simAppID, SecretKey: simKey, BaseURL: srv.URL, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return c, sim, clk
}

func group(acct, name string, to ...string) *im.CreateRequest {
	var items []im.ContactItem
	for _, a := range to {
		items = append(items, im.ContactItem{Type: im.ContactC2C, ToAccount: a})
	}
	return &im.CreateRequest{FromAccount: acct, GroupContactItem: []im.GroupContactItem{{GroupName: name, ContactItem: items}}}
}

func TestClientAgainstSimulator(t *testing.T) {
	c, sim, _ := startSim(t, imsim.Config{PageSize: 2}, 0)
	ctx := context.Background()
	resp, err := c.CreateContactGroup(ctx, group("alice", "friends", "bob", "carol", "dave"))
	if err != nil || resp.GroupResultItem[0].GroupItem.GroupID != 1 {
		t.Fatalf("create: %+v %v", resp, err)
	}
	if _, err := c.CreateContactGroup(ctx, group("alice", "work", "erin")); err != nil {
		t.Fatal(err)
	}
	groups, contacts, err := c.GetAllContactGroups(ctx, "alice")
	if err != nil || len(groups) != 2 || len(contacts) != 4 {
		t.Fatalf("get all: %v %v %v", groups, contacts, err)
	}
	_, err = c.UpdateContactGroup(ctx, &im.UpdateRequest{FromAccount: "alice", UpdateType: im.UpdateTypeGroup,
		UpdateGroup: im.UpdateGroup{UpdateGroupType: im.UpdateGroupTypeRename, OldGroupName: "work", NewGroupName: "office"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DelContactGroup(ctx, &im.DeleteRequest{FromAccount: "alice", GroupName: []string{"friends"}}); err != nil {
		t.Fatal(err)
	}
	_, err = c.DelContactGroup(ctx, &im.DeleteRequest{FromAccount: "alice", GroupName: []string{"friends"}})
	if e := asError(t, err); e.Code != im.CodeGroupNotFound || e.Class != im.ClassPermanent {
		t.Errorf("delete twice: %+v", e)
	}
	if g := sim.Groups("alice"); len(g) != 1 || g[0].Name != "office" {
		t.Errorf("final state %+v", g)
	}
}

func asError(t *testing.T, err error) *im.Error {
	t.Helper()
	var e *im.Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v (%T), want *im.Error", err, err)
	}
	return e
}

func TestClientSimulatorErrors(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		cfg     imsim.Config
		skew    time.Duration
		req     *im.CreateRequest
		class   im.Class
		code    int
		partial bool
	}{
		{"not imported", imsim.Config{NotImported: []string{"ghost"}}, 0, group("ghost", "g", "b"), im.ClassPermanent, im.CodeNotImported, false},
		{"name too long", imsim.Config{}, 0, group("a", strings.Repeat("n", 33), "b"), im.ClassPermanent, im.CodeNameTooLong, false},
		{"bad contact", imsim.Config{}, 0, group("a", "g", ""), im.ClassPermanent, im.CodeBadParams, false},
		{"partial 51008", imsim.Config{MaxContacts: 2}, 0, group("a", "g", "b", "c", "d"), im.ClassPermanent, im.CodeTooManyContacts, true},
		{"server clock ahead: sig expired even after re-sign", imsim.Config{}, 48 * time.Hour, group("a", "g", "b"), im.ClassCredentials, im.CodeSigExpired, false},
		{"rate limited", imsim.Config{Faults: imsim.Faults{ErrorRates: map[int]float64{60007: 1}}}, 0, group("a", "g", "b"), im.ClassRateLimited, im.CodeFrequency, false},
		{"apply then fail", imsim.Config{Faults: imsim.Faults{ApplyThenFailRate: 1}}, 0, group("a", "g", "b"), im.ClassTransient, im.CodeTimeout, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, sim, _ := startSim(t, tt.cfg, tt.skew)
			resp, err := c.CreateContactGroup(ctx, tt.req)
			e := asError(t, err)
			if e.Class != tt.class || e.Code != tt.code || e.Partial != tt.partial {
				t.Fatalf("error %+v", e)
			}
			if tt.partial {
				if resp == nil || e.Group == nil || e.Group.GroupID != 1 || len(e.Results) != 3 || e.Results[2].ResultCode != im.CodeTooManyContacts {
					t.Fatalf("partial resp %+v err %+v", resp, e)
				}
			}
			if tt.code == im.CodeSigExpired {
				if n := sim.Stats().APIs[im.APICreate].Total; n != 2 {
					t.Errorf("%d calls, want the call and one re-signed retry", n)
				}
			}
			if tt.code == im.CodeTimeout && (!e.Ambiguous() || len(sim.Groups("a")) != 1) {
				t.Errorf("apply-then-fail: ambiguous %v, groups %v", e.Ambiguous(), sim.Groups("a"))
			}
		})
	}
}

func TestClientResignsAfterInvalidation(t *testing.T) {
	c, sim, clk := startSim(t, imsim.Config{}, 0)
	ctx := context.Background()
	if _, err := c.GetContactGroup(ctx, &im.GetRequest{FromAccount: "a"}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	sim.InvalidateSigs()
	if _, err := c.GetContactGroup(ctx, &im.GetRequest{FromAccount: "a"}); err != nil {
		t.Fatalf("after invalidation: %v", err)
	}
	st := sim.Stats().APIs[im.APIGet]
	if st.Codes[im.CodeSigInvalidated] != 1 || st.Codes[0] != 2 {
		t.Errorf("codes %v", st.Codes)
	}
}

func TestClientHungSimulator(t *testing.T) {
	c, _, _ := startSim(t, imsim.Config{Faults: imsim.Faults{HangRate: 1}, MaxHang: time.Minute}, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	_, err := c.CreateContactGroup(ctx, group("a", "g", "b"))
	if e := asError(t, err); !e.Network || !e.Ambiguous() || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %+v", e)
	}
}

func TestClientSimulator502(t *testing.T) {
	c, _, _ := startSim(t, imsim.Config{Faults: imsim.Faults{HTTP502Rate: 1}}, 0)
	_, err := c.CreateContactGroup(context.Background(), group("a", "g", "b"))
	if e := asError(t, err); e.HTTPStatus != 502 || e.Class != im.ClassTransient || !e.Ambiguous() {
		t.Fatalf("error %+v", e)
	}
}

// ExampleClient_CreateContactGroup runs a simulator on loopback and creates one group.
func ExampleClient_CreateContactGroup() {
	sim, err := imsim.New(imsim.Config{SDKAppID: simAppID, SecretKey: simKey})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(sim)
	defer srv.Close()

	c, err := im.New(im.Config{SDKAppID: simAppID, SecretKey: simKey, BaseURL: srv.URL})
	if err != nil {
		panic(err)
	}
	resp, err := c.CreateContactGroup(context.Background(), &im.CreateRequest{
		FromAccount: "alice",
		GroupContactItem: []im.GroupContactItem{{
			GroupName:   "friends",
			ContactItem: []im.ContactItem{{Type: im.ContactC2C, ToAccount: "bob"}},
		}},
	})
	var e *im.Error
	switch {
	case errors.As(err, &e) && e.Partial:
		fmt.Println("group created, some conversations failed:", e.Code)
	case errors.As(err, &e) && e.Ambiguous():
		fmt.Println("unknown outcome: check with get_contact_group before retrying")
	case err != nil:
		fmt.Println("failed:", e.Class, e.Code)
	default:
		g := resp.GroupResultItem[0].GroupItem
		fmt.Printf("created %q with id %d\n", g.GroupName, g.GroupID)
	}
	// Output: created "friends" with id 1
}
