package imcheck

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/configtest"
	"github.com/chatgroupd/chatgroupd/internal/fakeclock"
)

const (
	testAppID = 1400000000
	testKey   = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"
)

// target is a simulator served over HTTP, standing in for the real API, on a hand-moved clock
// the probe shares (so the rate-window row runs without waiting).
type target struct {
	sim  *imsim.Server
	srv  *httptest.Server
	clk  *fakeclock.Clock
	mu   sync.Mutex
	sigs map[string]bool
}

func newTarget(t *testing.T, cfg imsim.Config) *target {
	t.Helper()
	tg := &target{clk: fakeclock.New(time.Now()), sigs: map[string]bool{}}
	cfg.SDKAppID, cfg.SecretKey, cfg.Now = testAppID, testKey, tg.clk.Now
	sim, err := imsim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tg.sim = sim
	tg.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tg.mu.Lock()
		tg.sigs[r.URL.Query().Get("usersig")] = true
		tg.mu.Unlock()
		sim.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { sim.Close(); tg.srv.Close() })
	return tg
}

func (tg *target) config() Config {
	return Config{
		Client:  im.Config{SDKAppID: testAppID, SecretKey: testKey, BaseURL: tg.srv.URL, Now: tg.clk.Now},
		Account: "probe-a", Account2: "probe-b", Rate: -1, ProbeRateWindow: true,
		Now: tg.clk.Now, Sleep: tg.clk.Sleep,
	}
}

func (tg *target) groups(accts ...string) int {
	n := 0
	for _, a := range accts {
		n += len(tg.sim.Groups(a))
	}
	return n
}

func compare(t *testing.T, cfg Config, real *Transcript) []Row {
	t.Helper()
	ref, err := Reference(context.Background(), cfg, imsim.Config{})
	if err != nil {
		t.Fatalf("reference: %v", err)
	}
	return Compare(ref.Observations, real.Observations)
}

func table(rows []Row) string {
	var b bytes.Buffer
	WriteTable(&b, rows)
	return b.String()
}

// TestDefaultSimulatorEveryRowMatches: the probe against the default simulator reports every
// row probed and matching, and leaves nothing behind.
func TestDefaultSimulatorEveryRowMatches(t *testing.T) {
	tg := newTarget(t, imsim.Config{})
	cfg := tg.config()
	tr, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	rows := compare(t, cfg, tr)
	for _, r := range rows {
		if r.Match != MatchYes {
			t.Errorf("row %s: %s\n%s", r.ID, r.Match, table(rows))
		}
	}
	if len(rows) != len(assumptions) {
		t.Fatalf("%d rows, want %d", len(rows), len(assumptions))
	}
	if n := tg.groups("probe-a", "probe-b"); n != 0 {
		t.Fatalf("%d groups left behind", n)
	}
	if len(tr.Leftover) != 0 || len(tr.Calls) < 50 {
		t.Fatalf("leftover %v, %d calls", tr.Leftover, len(tr.Calls))
	}
	t.Logf("%d calls\n%s", len(tr.Calls), table(rows))
}

// TestFlippedPoliciesDifferExactly: a simulator with two behaviours changed differs in exactly
// those two rows, for several pairs, so each row is shown to detect its behaviour.
func TestFlippedPoliciesDifferExactly(t *testing.T) {
	cases := []struct {
		name string
		cfg  imsim.Config
		want []string
	}{
		{"duplicates allowed, page 20", imsim.Config{DuplicateNames: imsim.DuplicateAllow, PageSize: 20},
			[]string{RowDuplicateName, RowPageSize}},
		{"duplicates merged, calendar seconds", imsim.Config{DuplicateNames: imsim.DuplicateMerge, RateWindow: imsim.WindowCalendar},
			[]string{RowDuplicateName, RowRateWindow}},
		{"names in chars, one page", imsim.Config{NameUnit: imsim.NameChars, PageSize: 1000},
			[]string{RowNameLimit, RowPageSize}},
		// One code answers both duplicate creates and renames onto an existing name.
		{"duplicate code", imsim.Config{DuplicateCode: 51099},
			[]string{RowDuplicateName, RowRenameExisting}},
		{"rename allowed, add existing fails", imsim.Config{RenameDuplicates: imsim.DuplicateAllow, AddExistingCode: 51098},
			[]string{RowRenameExisting, RowAddExisting}},
		{"remove missing fails, delete missing ok", imsim.Config{RemoveMissingCode: 51097, DeleteMissingOK: true},
			[]string{RowRemoveMissing, RowDeleteMissing}},
		{"missing group code", imsim.Config{MissingGroupCode: 51096},
			[]string{RowUpdateMissing, RowDeleteMissing}},
		{"group and conversation limits", imsim.Config{MaxGroups: 25, MaxContacts: 1200},
			[]string{RowGroupLimit, RowConvLimit}},
		{"name limit 64", imsim.Config{MaxNameBytes: 64, PageSize: 100},
			[]string{RowNameLimit, RowPageSize}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tg := newTarget(t, c.cfg)
			cfg := tg.config()
			tr, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			rows := compare(t, cfg, tr)
			if got := Differing(rows); !slices.Equal(got, c.want) {
				t.Fatalf("differing rows %v, want %v\n%s", got, c.want, table(rows))
			}
			if n := tg.groups("probe-a", "probe-b"); n != 0 {
				t.Fatalf("%d groups left behind", n)
			}
		})
	}
}

// TestInterruptLeavesNoGroup cancels the run after its n-th call, for n across the script: the
// run ends with the context's error and the clean-up (on a fresh context) deletes every group.
func TestInterruptLeavesNoGroup(t *testing.T) {
	sawGroups := false
	for _, n := range []int{2, 4, 7, 12, 20, 33, 45, 60, 75, 90} {
		tg := newTarget(t, imsim.Config{DuplicateNames: imsim.DuplicateAllow})
		cfg := tg.config()
		ctx, cancel := context.WithCancel(context.Background())
		atCancel := -1
		cfg.OnCall = func(i int) {
			if i == n {
				atCancel = tg.groups("probe-a", "probe-b")
				cancel()
			}
		}
		tr, err := Run(ctx, cfg)
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("n=%d: err %v, want cancelled", n, err)
		}
		if left := tg.groups("probe-a", "probe-b"); left != 0 || len(tr.Leftover) != 0 {
			t.Fatalf("n=%d: %d groups left (leftover %v)", n, left, tr.Leftover)
		}
		if atCancel > 0 {
			sawGroups = true
		}
		last := tr.Calls[len(tr.Calls)-1]
		if last.Step != "cleanup" {
			t.Fatalf("n=%d: last call in step %q, want cleanup", n, last.Step)
		}
	}
	if !sawGroups {
		t.Fatal("no interruption found a group to clean up: the test proves nothing")
	}
}

// TestRefusesAccountWithGroups: an account with groups is refused before anything is created,
// unless allowed; then its own group survives and the count-based rows are not probed.
func TestRefusesAccountWithGroups(t *testing.T) {
	tg := newTarget(t, imsim.Config{})
	c, err := im.New(im.Config{SDKAppID: testAppID, SecretKey: testKey, BaseURL: tg.srv.URL, Now: tg.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateContactGroup(context.Background(), &im.CreateRequest{FromAccount: "probe-a",
		GroupContactItem: []im.GroupContactItem{{GroupName: "family", ContactItem: []im.ContactItem{{Type: 1, ToAccount: "mum"}}}}}); err != nil {
		t.Fatal(err)
	}
	cfg := tg.config()
	tr, err := Run(context.Background(), cfg)
	if !errors.Is(err, ErrAccountHasGroups) {
		t.Fatalf("err %v, want ErrAccountHasGroups", err)
	}
	for _, call := range tr.Calls {
		if call.API != im.APIGet {
			t.Fatalf("refused run made a %s call", call.API)
		}
	}
	cfg.AllowExistingGroups = true
	tr, err = Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if g := tg.sim.Groups("probe-a"); len(g) != 1 || g[0].Name != "family" {
		t.Fatalf("the account's own groups after the run: %+v", g)
	}
	rows := compare(t, cfg, tr)
	for _, r := range rows {
		limit := slices.Contains([]string{RowGroupLimit, RowConvLimit, RowPageSize, RowNextStartIndex, RowPaging}, r.ID)
		if limit && r.Match != MatchNotProbed || !limit && r.Match != MatchYes {
			t.Errorf("row %s: %s\n%s", r.ID, r.Match, table(rows))
		}
	}
}

// TestTranscriptStableAndRedacted: the transcript never holds a UserSig the server saw, and
// reads back equal in the documented format; another format is refused.
func TestTranscriptStableAndRedacted(t *testing.T) {
	tg := newTarget(t, imsim.Config{PageSize: 20})
	tr, err := Run(context.Background(), tg.config())
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := tr.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	if len(tg.sigs) == 0 {
		t.Fatal("the server saw no usersig")
	}
	for sig := range tg.sigs {
		if sig == "" || strings.Contains(b.String(), sig) {
			t.Fatalf("transcript holds the usersig %q", sig)
		}
	}
	if !strings.Contains(b.String(), `"usersig":"REDACTED"`) {
		t.Fatal("transcript does not show the redaction")
	}
	for _, want := range []string{"\n  \"calls\": [\n    {\"seq\":1,\"step\":\"preflight\"", "\n  \"leftover\": []\n"} {
		if !strings.Contains(b.String(), want) {
			t.Fatalf("transcript lacks %q:\n%.600s", want, b.String())
		}
	}
	back, err := ReadTranscript(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var b2 bytes.Buffer
	back.WriteJSON(&b2)
	if b.String() != b2.String() {
		t.Fatal("transcript does not round-trip")
	}
	if len(back.Calls) != len(tr.Calls) || back.Calls[0].Step != "preflight" || back.Calls[0].Request == nil || back.Calls[0].Response == nil {
		t.Fatalf("calls %+v", back.Calls[0])
	}
	bad := strings.Replace(b.String(), Format, "chatgroupd-imcheck/v0", 1)
	if _, err := ReadTranscript(strings.NewReader(bad)); !errors.Is(err, ErrFormat) {
		t.Fatalf("other format: %v", err)
	}
	if _, err := ReadTranscript(strings.NewReader(`{"format":"` + Format + `","surprise":1}`)); err == nil {
		t.Fatal("unknown field accepted")
	}
	if _, err := ReadTranscript(strings.NewReader(`{"format":"` + Format + `","accounts":[]}`)); err == nil {
		t.Fatal("transcript without accounts accepted")
	}
}

func TestRecorderRedactsErrors(t *testing.T) {
	rec := &recorder{next: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return nil, errors.New("dial failed for " + r.URL.String())
	})}
	req, _ := http.NewRequest(http.MethodPost, "http://x/v4/recentcontact/get_contact_group?usersig=se%2Bcret&sdkappid=1", strings.NewReader(`{}`))
	if _, err := rec.RoundTrip(req); err == nil {
		t.Fatal("no error")
	}
	c := rec.snapshot()[0]
	if strings.Contains(c.Error, "se%2Bcret") || strings.Contains(c.Error, "se+cret") || c.Query["usersig"] != Redacted {
		t.Fatalf("call %+v", c)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestConfigValidate(t *testing.T) {
	ok := im.Config{SDKAppID: 1, SecretKey: "k", BaseURL: "http://127.0.0.1:1"}
	long := strings.Repeat("a", 33)
	for _, c := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"ok", Config{Client: ok, Account: "a"}, nil},
		{"two accounts", Config{Client: ok, Account: "a", Account2: "b"}, nil},
		{"unpaced", Config{Client: ok, Account: "a", Rate: -1}, nil},
		{"no account", Config{Client: ok}, []string{"imcheck config: account: a test account is required"}},
		{"same accounts", Config{Client: ok, Account: "a", Account2: "a"}, []string{"account2: the second test account must differ"}},
		{"long account", Config{Client: ok, Account: long}, []string{"account: accounts are at most 32 bytes"}},
		{"long account2", Config{Client: ok, Account: "a", Account2: long}, []string{"account2: accounts are at most 32 bytes"}},
		{"fast", Config{Client: ok, Account: "a", Rate: 51}, []string{"rate: 51 over 50"}},
		{"slow", Config{Client: ok, Account: "a", Rate: 0.5}, []string{"rate: 0.5 below 1"}},
		{"window", Config{Client: ok, Account: "a", WindowLimit: -1}, []string{"window limit: -1 below 1"}},
		{"cleanup", Config{Client: ok, Account: "a", CleanupTimeout: -1}, []string{"cleanup timeout: must be positive"}},
		{"client", Config{Client: im.Config{}, Account: "a"}, []string{"im config: sdkappid", "secret key"}},
		{"everything", Config{Account: long, Account2: long, Rate: 99, WindowLimit: -1, CleanupTimeout: -1},
			[]string{"imcheck config: account2: the second", "account: accounts", "account2: accounts", "rate: 99",
				"window limit", "cleanup timeout", "im config: sdkappid", "secret key"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			configtest.Problems(t, c.cfg.Validate(), c.want...)
		})
	}
}

func TestIMSimFlags(t *testing.T) {
	tg := newTarget(t, imsim.Config{DuplicateNames: imsim.DuplicateAllow, PageSize: 20})
	tr, err := Run(context.Background(), tg.config())
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(IMSimFlags(tr.Observations), " ")
	for _, want := range []string{"--duplicate-names=allow", "--page-size=20", "--rename-duplicates=reject", "--add-existing-code=0",
		"--remove-missing-code=0", "--missing-group-code=51009", "--delete-missing-ok=false", "--max-name-length=32",
		"--name-unit=bytes", "--max-groups=20", "--max-contacts=1000", "--rate-window=sliding"} {
		if !strings.Contains(got, want) {
			t.Errorf("flags %q lack %q", got, want)
		}
	}
}

// TestCleanupUnlistableIsNotClean: when the groups can't be listed, the clean-up reports the
// account as unknown rather than clean, and the run fails with ErrLeftover.
func TestCleanupUnlistableIsNotClean(t *testing.T) {
	tg := newTarget(t, imsim.Config{})
	cfg := tg.config()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg.OnCall = func(n int) {
		if n == 6 { // groups exist by now; from here every get_contact_group fails
			tg.sim.SetFaults(imsim.Faults{ErrorRates: map[int]float64{im.CodeInternal: 1}, APIs: []string{im.APIGet}})
			cancel()
		}
	}
	cfg.CleanupTimeout = 2 * time.Second
	tr, err := Run(ctx, cfg)
	if !errors.Is(err, ErrLeftover) || len(tr.Leftover) == 0 || !strings.Contains(tr.Leftover[0], "unknown") {
		t.Fatalf("err %v, leftover %v", err, tr.Leftover)
	}
	if tg.groups("probe-a") == 0 {
		t.Fatal("no group was left, so the test proves nothing")
	}
}

// TestPreflightFailureChangesNothing: an account the API refuses (not imported) ends the run
// with the API's code before anything is created.
func TestPreflightFailureChangesNothing(t *testing.T) {
	tg := newTarget(t, imsim.Config{NotImported: []string{"probe-b"}})
	tr, err := Run(context.Background(), tg.config())
	if err == nil || !strings.Contains(err.Error(), "50001") || !strings.Contains(err.Error(), "probe-b") {
		t.Fatalf("err %v", err)
	}
	for _, c := range tr.Calls {
		if c.API != im.APIGet {
			t.Fatalf("a %s call after a failed preflight", c.API)
		}
	}
}
