package imsim_test

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
)

// The simulator states the documented rules itself (codes.go, usersig.go) instead of borrowing
// the client's; these tests hold the two statements against each other, so a mistake on either
// side shows as a disagreement rather than being mirrored.

// classNames maps the simulator's class names (docs/api-notes.md's) to the client's classes.
var classNames = map[string]im.Class{
	"transient":    im.ClassTransient,
	"rate limited": im.ClassRateLimited,
	"credentials":  im.ClassCredentials,
	"config/auth":  im.ClassConfig,
	"permanent":    im.ClassPermanent,
}

// TestClientAgreesWithSimulatorCodes checks, code by code, that the client (im.Classify)
// classifies every code of the simulator's table as the table says, that codes outside the
// table are permanent on both sides, and that the client's named constants are the codes the
// simulator answers for the same conditions.
func TestClientAgreesWithSimulatorCodes(t *testing.T) {
	seen := map[int]bool{}
	for _, r := range imsim.CodeTable() {
		want, ok := classNames[r.Class]
		if !ok {
			t.Errorf("code %d: unknown class %q in the simulator's table", r.Code, r.Class)
			continue
		}
		if seen[r.Code] {
			t.Errorf("code %d listed twice in the simulator's table", r.Code)
		}
		seen[r.Code] = true
		if got := im.Classify(r.Code); got != want {
			t.Errorf("code %d (%s): client classifies it %v, simulator's table says %s", r.Code, r.When, got, r.Class)
		}
	}
	for name, code := range imsim.SimCode {
		if !seen[code] {
			t.Errorf("the simulator answers %d (%s), which its table does not list", code, name)
		}
	}
	// Codes the table leaves out: permanent for the client too (docs: unknown codes are kept).
	for _, code := range []int{1, 50000, 50006, 51006, 51014, 60001, 60007 + 1000, 70000, 70051, 999999} {
		if seen[code] {
			t.Fatalf("code %d is in the table; pick another unlisted code", code)
		}
		if got := im.Classify(code); got != im.ClassPermanent {
			t.Errorf("unlisted code %d: client classifies it %v, want permanent", code, got)
		}
	}
	// The client's named codes, each for the condition the simulator answers it for.
	for name, code := range map[string]int{
		"NotImported":      im.CodeNotImported,
		"BadParams":        im.CodeBadParams,
		"NotAdmin":         im.CodeNotAdmin,
		"Timeout":          im.CodeTimeout,
		"GroupCheckFailed": im.CodeGroupCheckFailed,
		"TooManyContacts":  im.CodeTooManyContacts,
		"GroupNotFound":    im.CodeGroupNotFound,
		"TooManyGroups":    im.CodeTooManyGroups,
		"NameTooLong":      im.CodeNameTooLong,
		"Frequency":        im.CodeFrequency,
		"SigExpired":       im.CodeSigExpired,
		"SigEmpty":         im.CodeSigEmpty,
		"SigMalformed":     im.CodeSigMismatch,
		"SigKey":           im.CodeSigKeyMismatch,
		"SigIdentifier":    im.CodeIdentifierInvalid,
		"SigAppID":         im.CodeAppIDMismatch,
		"AppIDNotFound":    im.CodeAppIDNotFound,
		"SigInvalidated":   im.CodeSigInvalidated,
	} {
		sim, ok := imsim.SimCode[name]
		if !ok {
			t.Errorf("%s: the simulator has no such code", name)
		} else if sim != code {
			t.Errorf("%s: client says %d, simulator answers %d", name, code, sim)
		}
	}
}

// TestClientSigsVerifyInSimulator checks that a UserSig made by the client (im.GenUserSig)
// verifies in the simulator's own verifier, with the issue time and lifetime it was made with,
// and that tampered, foreign and expired ones do not.
func TestClientSigsVerifyInSimulator(t *testing.T) {
	const key = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"
	const app = 1400000000
	now := time.Unix(1700000000, 0)
	for _, id := range []string{"administrator", "xiaojun", "管理员", strings.Repeat("a", 32)} {
		for _, exp := range []time.Duration{time.Second, time.Hour, 180 * 24 * time.Hour} {
			sig, err := im.GenUserSig(key, app, id, now, exp)
			if err != nil {
				t.Fatal(err)
			}
			issued, expire, code := imsim.VerifyUserSig(key, app, id, sig, now.Add(exp))
			if code != 0 || !issued.Equal(now) || expire != exp {
				t.Errorf("%s/%v: simulator verified (%v, %v, code %d)", id, exp, issued, expire, code)
			}
			if _, _, code := imsim.VerifyUserSig(key, app, id, sig, now.Add(exp+time.Second)); code != im.CodeSigExpired {
				t.Errorf("%s/%v: a second past expiry answers %d", id, exp, code)
			}
		}
	}

	sig, err := im.GenUserSig(key, app, "administrator", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	doc := inflateSig(t, sig)
	tampered := []struct {
		name string
		sig  string
		want int
	}{
		{"sig bytes changed", reseal(t, doc, func(d map[string]any) { d["TLS.sig"] = flipBase64(d["TLS.sig"].(string)) }), im.CodeSigKeyMismatch},
		{"lifetime stretched", reseal(t, doc, func(d map[string]any) { d["TLS.expire"] = 3600 * 24 * 365 }), im.CodeSigKeyMismatch},
		{"issue time moved", reseal(t, doc, func(d map[string]any) { d["TLS.time"] = 1700000600 }), im.CodeSigKeyMismatch},
		{"encoding damaged", sig[:len(sig)/2] + "!" + sig[len(sig)/2+1:], im.CodeSigMismatch},
		{"other key", mustSig(t, strings.Repeat("0", 64), app, "administrator", now), im.CodeSigKeyMismatch},
		{"other identifier", mustSig(t, key, app, "bob", now), im.CodeIdentifierInvalid},
		{"other sdkappid", mustSig(t, key, app+1, "administrator", now), im.CodeAppIDMismatch},
	}
	for _, tt := range tampered {
		if _, _, code := imsim.VerifyUserSig(key, app, "administrator", tt.sig, now); code != tt.want {
			t.Errorf("%s: simulator answers %d, want %d", tt.name, code, tt.want)
		}
		// The client's own verifier refuses it too (it is the reference the simulator replaced).
		if err := im.VerifyUserSig(key, app, "administrator", tt.sig, now); err == nil {
			t.Errorf("%s: im.VerifyUserSig accepts it", tt.name)
		}
	}
}

func mustSig(t *testing.T, key string, app int64, id string, now time.Time) string {
	t.Helper()
	sig, err := im.GenUserSig(key, app, id, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

var urlSafe = strings.NewReplacer("+", "*", "/", "-", "=", "_")

// inflateSig returns the JSON document inside sig.
func inflateSig(t *testing.T, sig string) map[string]any {
	t.Helper()
	z, err := base64.StdEncoding.DecodeString(strings.NewReplacer("*", "+", "-", "/", "_", "=").Replace(sig))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zlib.NewReader(bytes.NewReader(z))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// reseal returns doc changed by edit, wrapped as a UserSig again (without re-signing it).
func reseal(t *testing.T, doc map[string]any, edit func(map[string]any)) string {
	t.Helper()
	d := make(map[string]any, len(doc))
	for k, v := range doc {
		d[k] = v
	}
	edit(d)
	raw, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	zw := zlib.NewWriter(&b)
	zw.Write(raw)
	zw.Close()
	return urlSafe.Replace(base64.StdEncoding.EncodeToString(b.Bytes()))
}

// flipBase64 changes the first character of a standard-base64 string to another valid one.
func flipBase64(s string) string {
	c := byte('A')
	if s[0] == 'A' {
		c = 'B'
	}
	return string(c) + s[1:]
}

// FuzzSigVerifiersAgree feeds the same sig to the client's verifier (im.VerifyUserSig) and the
// simulator's own: both accept it or both refuse it, with the code the simulator answered before
// it had its own verifier (im's failure mapped as authLocked used to map it).
func FuzzSigVerifiersAgree(f *testing.F) {
	const key = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"
	const app = 1400000000
	now := time.Unix(1700000000, 0)
	for _, id := range []string{"administrator", "bob"} {
		sig, err := im.GenUserSig(key, app, id, now, time.Hour)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(sig, int64(0))
		f.Add(sig, int64(3601))
	}
	f.Add("eAEBrABT-3siVExTLnZlciI6IjIuMCIsIlRMUy5pZGVudGlmaWVyIjoieGlhb2p1biIsIlRMUy5zZGthcHBpZCI6MTQwMDAwMDAwMCwiVExTLmV4cGlyZSI6MTU1NTIwMDAsIlRMUy50aW1lIjoxNzAwMDAwMDAwLCJUTFMuc2lnIjoiTHZBN2QvSXc3Z1NzbnNrdlZ6QkRQT0NDRGJ1TkN3NEdId1RDMGJpcCtCND0ifQrfwzH8", int64(0))
	f.Add("not-a-sig", int64(0))
	f.Fuzz(func(t *testing.T, sig string, later int64) {
		at := now.Add(time.Duration(later%(1<<32)) * time.Second)
		err := im.VerifyUserSig(key, app, "administrator", sig, at)
		want := 0
		switch {
		case errors.Is(err, im.ErrSigMalformed):
			want = im.CodeSigMismatch
		case errors.Is(err, im.ErrSigExpired):
			want = im.CodeSigExpired
		case errors.Is(err, im.ErrSigIdentifier):
			want = im.CodeIdentifierInvalid
		case errors.Is(err, im.ErrSigAppID):
			want = im.CodeAppIDMismatch
		case err != nil:
			want = im.CodeSigKeyMismatch
		}
		issued, expire, code := imsim.VerifyUserSig(key, app, "administrator", sig, at)
		if code != want {
			t.Fatalf("simulator answers %d, client's verifier says %v (%d)", code, err, want)
		}
		if code == 0 {
			info, err := im.DecodeUserSig(sig)
			if err != nil || !info.Issued.Equal(issued) || info.Expire != expire {
				t.Fatalf("simulator read (%v, %v), client (%+v, %v)", issued, expire, info, err)
			}
		}
	})
}

// TestClientAgreesOnLifecycleCodes drives each condition of update_contact_group and
// del_contact_group through the client's typed calls against the simulator: the code the client
// reports is the one the simulator states for that condition (SimCode), the client classifies
// it as the simulator's table does, per-item codes come back as a partial result with every
// item's outcome, and the table names the lifecycle condition it answers the code for.
func TestClientAgreesOnLifecycleCodes(t *testing.T) {
	sim, err := imsim.New(imsim.Config{SDKAppID: 1400000000, SecretKey: "dev-key", MaxContacts: 3,
		DismissedGroups: []string{"@gone"}, NotImported: []string{"ghost"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	t.Cleanup(func() { sim.Close(); srv.Close() })
	client, err := im.New(im.Config{SDKAppID: 1400000000, SecretKey: "dev-key", BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	u := func(n int) im.ContactItem { return im.ContactItem{Type: im.ContactC2C, ToAccount: fmt.Sprint("u", n)} }
	for _, name := range []string{"g", "other"} {
		if _, err := client.CreateContactGroup(ctx, &im.CreateRequest{FromAccount: "a",
			GroupContactItem: []im.GroupContactItem{{GroupName: name, ContactItem: []im.ContactItem{u(len(name))}}}}); err != nil {
			t.Fatal(err)
		}
	}
	rename := func(acct, from, to string) error {
		_, err := client.UpdateContactGroup(ctx, &im.UpdateRequest{FromAccount: acct, UpdateType: im.UpdateTypeGroup,
			UpdateGroup: im.UpdateGroup{UpdateGroupType: im.UpdateGroupTypeRename, OldGroupName: from, NewGroupName: to}})
		return err
	}
	add := func(group string, cs ...im.ContactItem) error {
		upd := im.UpdateGroup{UpdateGroupType: im.UpdateGroupTypeAddDel, OldGroupName: group}
		for _, c := range cs {
			upd.ContactUpdateItem = append(upd.ContactUpdateItem, im.ContactUpdateItem{ContactOptType: im.ContactOptAdd, ContactItem: c})
		}
		_, err := client.UpdateContactGroup(ctx, &im.UpdateRequest{FromAccount: "a", UpdateType: im.UpdateTypeGroup, UpdateGroup: upd})
		return err
	}
	del := func(acct, name string) error {
		_, err := client.DelContactGroup(ctx, &im.DeleteRequest{FromAccount: acct, GroupName: []string{name}})
		return err
	}
	table := map[int]imsim.CodeRule{}
	for _, r := range imsim.CodeTable() {
		table[r.Code] = r
	}
	tests := []struct {
		name    string
		call    func() error
		simCode string // the condition's name in imsim.SimCode
		partial []int  // per-item codes when the answer is a partial result
		when    string // what the table says the code is answered for
	}{
		{"rename of a missing group", func() error { return rename("a", "nope", "x") }, "GroupNotFound", nil, "update or delete of a missing group"},
		{"delete of a missing group", func() error { return del("a", "nope") }, "GroupNotFound", nil, "update or delete of a missing group"},
		{"add to a missing group", func() error { return add("nope", u(7)) }, "GroupNotFound", nil, "update or delete of a missing group"},
		{"new name over 32 bytes", func() error { return rename("a", "g", strings.Repeat("x", 33)) }, "NameTooLong", nil, "a group name over"},
		{"rename onto an existing name", func() error { return rename("a", "g", "other") }, "DuplicateName", nil, "a duplicate name"},
		{"empty new name", func() error { return rename("a", "g", "") }, "BadParams", nil, "a bad body or field"},
		{"update of an account not imported", func() error { return rename("ghost", "g", "h") }, "NotImported", nil, "From_Account"},
		{"delete of an account not imported", func() error { return del("ghost", "g") }, "NotImported", nil, "From_Account"},
		{"add past the conversation limit", func() error { return add("g", u(2), u(3)) }, "TooManyContacts", []int{0, im.CodeTooManyContacts}, "per item"},
		{"add of a dismissed group conversation", func() error { return add("g", im.ContactItem{Type: im.ContactGroup, ToGroupID: "@gone"}) },
			"GroupCheckFailed", []int{im.CodeGroupCheckFailed}, "per item"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, ok := imsim.SimCode[tt.simCode]
			if !ok {
				t.Fatalf("the simulator names no condition %s", tt.simCode)
			}
			var e *im.Error
			if err := tt.call(); !errors.As(err, &e) {
				t.Fatalf("client returned %v, want an *im.Error", err)
			}
			if e.Code != want {
				t.Fatalf("client reports code %d (%s), the simulator states %d for %s", e.Code, e.Info, want, tt.simCode)
			}
			rule, listed := table[e.Code]
			if !listed {
				t.Fatalf("code %d is not in the simulator's table", e.Code)
			}
			if got := e.Class; got != classNames[rule.Class] {
				t.Errorf("client classifies %d as %v, the simulator's table says %s", e.Code, got, rule.Class)
			}
			if !strings.Contains(rule.When, tt.when) {
				t.Errorf("the table says %d is answered for %q, want it to name %q", e.Code, rule.When, tt.when)
			}
			if e.Partial != (tt.partial != nil) {
				t.Fatalf("partial %v, want %v", e.Partial, tt.partial != nil)
			}
			var got []int
			for _, r := range e.Results {
				got = append(got, r.ResultCode)
			}
			if tt.partial != nil && fmt.Sprint(got) != fmt.Sprint(tt.partial) {
				t.Errorf("per-item codes %v, want %v", got, tt.partial)
			}
		})
	}
	// A lifecycle call that works comes back without an error, and a repeated delete is the
	// permanent 51009 the dispatcher counts as "already applied" only after checking.
	if err := rename("a", "g", "h"); err != nil {
		t.Fatalf("rename: %v", err)
	}
	if err := del("a", "h"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	var e *im.Error
	if err := del("a", "h"); !errors.As(err, &e) || e.Code != im.CodeGroupNotFound || e.Class != im.ClassPermanent {
		t.Fatalf("second delete: %v", err)
	}
}
