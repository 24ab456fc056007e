package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

const imsimTestKey = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"

func mapEnv(m map[string]string) env { return func(k string) string { return m[k] } }

// startIMSim runs `chatgroupd imsim args...` and returns its base URL and a stop function that
// cancels it and returns its error.
func startIMSim(t *testing.T, args ...string) (string, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := runIMSim(ctx, args, mapEnv(map[string]string{"CHATGROUPD_SECRET_KEY": imsimTestKey}), pw, io.Discard)
		pw.CloseWithError(errors.New("imsim returned"))
		errc <- err
	}()
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	var base string
	select {
	case l := <-lines:
		var ok bool
		if base, ok = strings.CutPrefix(l, "imsim listening on "); !ok {
			t.Fatalf("first line %q", l)
		}
	case err := <-errc:
		cancel()
		t.Fatalf("imsim exited: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("imsim did not report its address")
	}
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-errc:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("imsim did not stop within 10s")
		}
	}
	t.Cleanup(func() { stop() })
	return base, stop
}

func TestIMSimCommand(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state.json")
	base, stop := startIMSim(t, "--addr", "127.0.0.1:0", "--sdkappid", "1400000000", "--rate-limit", "50",
		"--not-imported", "ghost,spook", "--state-file", state, "--log-level", "warn", "--admin-api")
	if !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Fatalf("base %q", base)
	}
	c, err := im.New(im.Config{SDKAppID: 1400000000, SecretKey: imsimTestKey, BaseURL: base})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testwait.Context(t, 10*time.Second)
	req := &im.CreateRequest{FromAccount: "alice", GroupContactItem: []im.GroupContactItem{{GroupName: "g",
		ContactItem: []im.ContactItem{{Type: im.ContactC2C, ToAccount: "bob"}}}}}
	if _, err := c.CreateContactGroup(ctx, req); err != nil {
		t.Fatal(err)
	}
	req.FromAccount = "spook"
	if _, err := c.CreateContactGroup(ctx, req); im.ClassOf(err) != im.ClassPermanent || !strings.Contains(err.Error(), "50001") {
		t.Fatalf("not imported: %v", err)
	}

	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`imsim_calls_total{api="create_contact_group",code="0"} 1`, `imsim_max_calls_per_second{api="create_contact_group"} 2`, "go_goroutines"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	resp, err = http.Get(base + "/admin/state?account=alice")
	if err != nil {
		t.Fatal(err)
	}
	var st imsim.AccountState
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	want := imsim.AccountState{Account: "alice", Groups: []imsim.Group{{Name: "g", Contacts: req.GroupContactItem[0].ContactItem}}}
	if diff := cmp.Diff(want, st, cmpopts.IgnoreFields(imsim.Group{}, "ID")); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}

	if err := stop(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	b, err := os.ReadFile(state)
	if err != nil || !strings.Contains(string(b), `"GroupName": "g"`) {
		t.Fatalf("state file %s: %v", b, err)
	}

	// A restart loads the state: the same name is now a duplicate.
	base, _ = startIMSim(t, "--addr", "127.0.0.1:0", "--sdkappid", "1400000000", "--state-file", state, "--log-level", "error")
	c, _ = im.New(im.Config{SDKAppID: 1400000000, SecretKey: imsimTestKey, BaseURL: base})
	req.FromAccount = "alice"
	if _, err := c.CreateContactGroup(ctx, req); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("after restart: %v", err)
	}
}

// TestIMSimStateFileLifecycle: --state-file carries renames, adds, removes and deletes across a
// restart of the command, and a state file the simulator could not have written stops it with
// an error naming the file.
func TestIMSimStateFileLifecycle(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state.json")
	args := []string{"--addr", "127.0.0.1:0", "--sdkappid", "1400000000", "--state-file", state, "--log-level", "error"}
	base, stop := startIMSim(t, args...)
	c, err := im.New(im.Config{SDKAppID: 1400000000, SecretKey: imsimTestKey, BaseURL: base})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bob := im.ContactItem{Type: im.ContactC2C, ToAccount: "bob"}
	carol := im.ContactItem{Type: im.ContactC2C, ToAccount: "carol"}
	for _, g := range []string{"g1", "g2", "g3"} {
		if _, err := c.CreateContactGroup(ctx, &im.CreateRequest{FromAccount: "alice",
			GroupContactItem: []im.GroupContactItem{{GroupName: g, ContactItem: []im.ContactItem{bob}}}}); err != nil {
			t.Fatal(err)
		}
	}
	upd := func(c *im.Client, u im.UpdateGroup) error {
		_, err := c.UpdateContactGroup(ctx, &im.UpdateRequest{FromAccount: "alice", UpdateType: im.UpdateTypeGroup, UpdateGroup: u})
		return err
	}
	for _, u := range []im.UpdateGroup{
		{UpdateGroupType: im.UpdateGroupTypeRename, OldGroupName: "g1", NewGroupName: "renamed"},
		{UpdateGroupType: im.UpdateGroupTypeAddDel, OldGroupName: "g2", ContactUpdateItem: []im.ContactUpdateItem{
			{ContactOptType: im.ContactOptAdd, ContactItem: carol}, {ContactOptType: im.ContactOptDel, ContactItem: bob}}},
	} {
		if err := upd(c, u); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.DelContactGroup(ctx, &im.DeleteRequest{FromAccount: "alice", GroupName: []string{"g3"}}); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}

	base, stop = startIMSim(t, args...)
	c, _ = im.New(im.Config{SDKAppID: 1400000000, SecretKey: imsimTestKey, BaseURL: base})
	groups, contacts, err := c.GetAllContactGroups(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, g := range groups {
		got = append(got, g.GroupName)
	}
	for _, ci := range contacts {
		got = append(got, fmt.Sprintf("%s@%v", ci.Item().Key(), ci.ContactGroupID))
	}
	if want := "renamed g2 1:bob@[1] 1:carol@[2]"; strings.Join(got, " ") != want {
		t.Errorf("after the restart: %q, want %q", strings.Join(got, " "), want)
	}
	var e *im.Error
	if err := upd(c, im.UpdateGroup{UpdateGroupType: im.UpdateGroupTypeRename, OldGroupName: "g1", NewGroupName: "x"}); !errors.As(err, &e) || e.Code != im.CodeGroupNotFound {
		t.Errorf("rename by the old name after the restart: %v", err)
	}
	if _, err := c.DelContactGroup(ctx, &im.DeleteRequest{FromAccount: "alice", GroupName: []string{"g3"}}); !errors.As(err, &e) || e.Code != im.CodeGroupNotFound {
		t.Errorf("delete of the deleted group after the restart: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}

	if err := os.WriteFile(state, []byte(`{"alice":{"Groups":[{"GroupName":"g","GroupId":1},{"GroupName":"g","GroupId":2}]}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	err = runIMSim(ctx, args, mapEnv(map[string]string{"CHATGROUPD_SECRET_KEY": imsimTestKey}), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), state) || !strings.Contains(err.Error(), `group name "g" twice`) {
		t.Fatalf("impossible state file: %v", err)
	}
}

func TestIMSimCommandFaultFlags(t *testing.T) {
	base, stop := startIMSim(t, "--addr", "127.0.0.1:0", "--sdkappid", "7", "--error-rates", "50004=1",
		"--fault-apis", "create_contact_group", "--seed", "3", "--log-level", "error")
	c, _ := im.New(im.Config{SDKAppID: 7, SecretKey: imsimTestKey, BaseURL: base})
	ctx := testwait.Context(t, 10*time.Second)
	req := &im.CreateRequest{FromAccount: "a", GroupContactItem: []im.GroupContactItem{{GroupName: "g",
		ContactItem: []im.ContactItem{{Type: im.ContactC2C, ToAccount: "b"}}}}}
	if _, err := c.CreateContactGroup(ctx, req); im.ClassOf(err) != im.ClassTransient {
		t.Fatalf("create with injected 50004: %v", err)
	}
	if _, err := c.GetContactGroup(ctx, &im.GetRequest{FromAccount: "a"}); err != nil {
		t.Fatalf("get is not faulted: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestIMSimCommandErrors(t *testing.T) {
	tests := map[string]struct {
		args []string
		env  map[string]string
	}{
		"no sdkappid":     {[]string{"--addr", "127.0.0.1:0"}, map[string]string{"CHATGROUPD_SECRET_KEY": "k"}},
		"no key":          {[]string{"--addr", "127.0.0.1:0", "--sdkappid", "1"}, nil},
		"bad error rates": {[]string{"--addr", "127.0.0.1:0", "--sdkappid", "1", "--error-rates", "50004"}, map[string]string{"CHATGROUPD_SECRET_KEY": "k"}},
		"bad rate":        {[]string{"--addr", "127.0.0.1:0", "--sdkappid", "1", "--hang-rate", "2"}, map[string]string{"CHATGROUPD_SECRET_KEY": "k"}},
		"bad duplicates":  {[]string{"--addr", "127.0.0.1:0", "--sdkappid", "1", "--duplicate-names", "x"}, map[string]string{"CHATGROUPD_SECRET_KEY": "k"}},
		"bad log level":   {[]string{"--addr", "127.0.0.1:0", "--sdkappid", "1", "--log-level", "loud"}, map[string]string{"CHATGROUPD_SECRET_KEY": "k"}},
		"bad addr":        {[]string{"--addr", "127.0.0.1:-1", "--sdkappid", "1"}, map[string]string{"CHATGROUPD_SECRET_KEY": "k"}},
		"extra args":      {[]string{"--sdkappid", "1", "extra"}, map[string]string{"CHATGROUPD_SECRET_KEY": "k"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			ctx := testwait.Context(t, 5*time.Second)
			if err := runIMSim(ctx, tt.args, mapEnv(tt.env), io.Discard, io.Discard); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestIMSimCommandEnv(t *testing.T) {
	// CHATGROUPD_SDKAPPID stands in for --sdkappid.
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		errc <- runIMSim(ctx, []string{"--addr", "127.0.0.1:0"}, mapEnv(map[string]string{
			"CHATGROUPD_SECRET_KEY": "k", "CHATGROUPD_SDKAPPID": "5", "CHATGROUPD_LOG_LEVEL": "error"}), pw, io.Discard)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "imsim listening on http://127.0.0.1:") {
		t.Fatalf("line %q err %v", line, err)
	}
	go io.Copy(io.Discard, pr)
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestIMSimAdminAPIFlags: /admin/ is off by default; --admin-api serves it to loopback callers,
// and --admin-token-file makes it ask for the token.
func TestIMSimAdminAPIFlags(t *testing.T) {
	status := func(base, auth string) int {
		req, _ := http.NewRequest(http.MethodGet, base+"/admin/stats", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	base, _ := startIMSim(t, "--addr", "127.0.0.1:0", "--sdkappid", "1400000000", "--log-level", "warn")
	if c := status(base, ""); c != http.StatusNotFound {
		t.Errorf("admin API without --admin-api: %d", c)
	}
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("t0ken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base, _ = startIMSim(t, "--addr", "127.0.0.1:0", "--sdkappid", "1400000000", "--log-level", "warn",
		"--admin-api", "--admin-token-file", tok)
	if c := status(base, ""); c != http.StatusUnauthorized {
		t.Errorf("no token: %d", c)
	}
	if c := status(base, "Bearer t0ken"); c != http.StatusOK {
		t.Errorf("token: %d", c)
	}
	err := runIMSim(t.Context(), []string{"--sdkappid", "1", "--admin-token-file", tok},
		mapEnv(map[string]string{"CHATGROUPD_SECRET_KEY": imsimTestKey}), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "without --admin-api") {
		t.Errorf("token without --admin-api: %v", err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{empty: "is empty", "/nonexistent/token": "admin token"} {
		err := runIMSim(t.Context(), []string{"--sdkappid", "1", "--admin-api", "--admin-token-file", file},
			mapEnv(map[string]string{"CHATGROUPD_SECRET_KEY": imsimTestKey}), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("token file %s: %v, want %q", file, err, want)
		}
	}
}
