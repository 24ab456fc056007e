package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imcheck"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
)

// runIMCheckAgainst runs `chatgroupd imcheck` against base and returns stdout, stderr, the
// transcript and the error.
func runIMCheckAgainst(t *testing.T, base string, extra ...string) (string, string, *imcheck.Transcript, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "t.json")
	args := append([]string{"imcheck", "--im-endpoint", base, "--sdkappid", "1400000000", "--account", "probe-a",
		"--account2", "probe-b", "--rate", "50", "--transcript", path}, extra...)
	var out, errOut bytes.Buffer
	err := run(t.Context(), args, mapEnv(map[string]string{"CHATGROUPD_SECRET_KEY": imsimTestKey}), &out, &errOut)
	fh, ferr := os.Open(path)
	if ferr != nil {
		t.Fatalf("no transcript: %v (run: %v)\n%s", ferr, err, errOut.String())
	}
	defer fh.Close()
	tr, ferr := imcheck.ReadTranscript(fh)
	if ferr != nil {
		t.Fatal(ferr)
	}
	return out.String(), errOut.String(), tr, err
}

// TestIMCheckCommandDefaultSimulator: `chatgroupd imcheck` against `chatgroupd imsim` with its
// defaults reports every row as matching and exits 0.
func TestIMCheckCommandDefaultSimulator(t *testing.T) {
	base, _ := startIMSim(t, "--addr", "127.0.0.1:0", "--sdkappid", "1400000000", "--log-level", "warn")
	out, errOut, tr, err := runIMCheckAgainst(t, base)
	if err != nil {
		t.Fatalf("imcheck: %v\n%s\n%s", err, out, errOut)
	}
	if strings.Contains(out, " NO\n") || !strings.Contains(out, "duplicate-name") || strings.Count(out, " yes\n") < 12 {
		t.Fatalf("table:\n%s", out)
	}
	if len(tr.Leftover) != 0 {
		t.Fatalf("leftover %v", tr.Leftover)
	}
}

// TestIMCheckCommandFlippedSimulator: against a simulator with two policies changed, exactly
// those rows differ, the exit status says so, and the emitted flags configure a simulator that
// answers the same way.
func TestIMCheckCommandFlippedSimulator(t *testing.T) {
	base, _ := startIMSim(t, "--addr", "127.0.0.1:0", "--sdkappid", "1400000000", "--log-level", "warn",
		"--duplicate-names", "allow", "--page-size", "20")
	flags, table, tr, err := runIMCheckAgainst(t, base, "--emit-imsim-flags")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitDiffer || !strings.Contains(err.Error(), "2 rows differ") ||
		!strings.Contains(err.Error(), "duplicate-name, page-size") {
		t.Fatalf("err %v\n%s", err, table)
	}
	for _, want := range []string{"--duplicate-names=allow", "--page-size=20"} {
		if !strings.Contains(flags, want) {
			t.Fatalf("flags %q lack %q", flags, want)
		}
	}
	if strings.Count(flags, "\n") != 1 || strings.Contains(flags, "ASSUMPTION") {
		t.Fatalf("stdout is not just the flags line: %q", flags)
	}

	// The findings as a simulator configuration: a simulator started with them answers alike.
	simArgs := append([]string{"--addr", "127.0.0.1:0", "--sdkappid", "1400000000", "--log-level", "warn"}, strings.Fields(flags)...)
	base2, _ := startIMSim(t, simArgs...)
	flags2, table2, _, err := runIMCheckAgainst(t, base2, "--emit-imsim-flags")
	if !errors.As(err, &ee) || !strings.Contains(err.Error(), "duplicate-name, page-size") {
		t.Fatalf("reproduced simulator: %v\n%s", err, table2)
	}
	if flags2 != flags {
		t.Fatalf("reproduced simulator's flags %q, want %q", flags2, flags)
	}

	// A recorded transcript compares the same way offline.
	path := filepath.Join(t.TempDir(), "rec.json")
	if err := writeTranscript(path, tr); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err = run(t.Context(), []string{"imcheck", "--from-transcript", path}, mapEnv(nil), &out, &out)
	if !errors.As(err, &ee) || !strings.Contains(err.Error(), "duplicate-name, page-size") {
		t.Fatalf("from transcript: %v\n%s", err, out.String())
	}
}

func TestIMCheckCommandErrors(t *testing.T) {
	keyEnv := mapEnv(map[string]string{"CHATGROUPD_SECRET_KEY": imsimTestKey})
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--sdkappid", "1", "--im-endpoint", "http://127.0.0.1:1"}, "test account is required"},
		{[]string{"--account", "a", "--im-endpoint", "http://127.0.0.1:1"}, "--sdkappid is required"},
		{[]string{"--sdkappid", "1", "--account", "a", "--rate", "100"}, "--rate \"100\": want a number from 1 to 50"},
		{[]string{"--sdkappid", "1", "--account", "a", "--rate", "0"}, "--rate \"0\": want a number from 1 to 50"},
		{[]string{"--sdkappid", "1", "--account", "a", "--account2", "a"}, "must differ"},
		{[]string{"--from-transcript", "/nonexistent/t.json"}, "no such file"},
		{[]string{"--sdkappid", "1", "--account", "a", "--im-endpoint", "http://127.0.0.1:1", "--transcript", "/nonexistent/dir/t.json"}, "imcheck transcript"},
	} {
		err := run(t.Context(), append([]string{"imcheck"}, c.args...), keyEnv, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
}

// TestIMCheckFixturesReproduced: every transcript in testdata/imcheck (a real API's, once one is
// recorded; for now one made against a simulator with two behaviours changed) is reproduced by
// `chatgroupd imsim` started with the flags the transcript's findings emit. A finding no flag
// can express fails here: the simulator then needs a new behaviour.
func TestIMCheckFixturesReproduced(t *testing.T) {
	files, err := filepath.Glob("testdata/imcheck/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			fh, err := os.Open(file)
			if err != nil {
				t.Fatal(err)
			}
			want, err := imcheck.ReadTranscript(fh)
			fh.Close()
			if err != nil {
				t.Fatal(err)
			}
			args := append([]string{"--addr", "127.0.0.1:0", "--sdkappid", "1400000000", "--log-level", "warn"},
				imcheck.IMSimFlags(want.Observations)...)
			base, _ := startIMSim(t, args...)
			ctx := testwait.Context(t, time.Minute)
			got, err := imcheck.Run(ctx, imcheck.Config{
				Client:  im.Config{SDKAppID: 1400000000, SecretKey: imsimTestKey, BaseURL: base},
				Account: want.Accounts[0], Account2: second(want.Accounts), Rate: imcheck.MaxRate,
			})
			if err != nil {
				t.Fatal(err)
			}
			rows := imcheck.Compare(want.Observations, got.Observations)
			if d := imcheck.Differing(rows); len(d) > 0 {
				var b bytes.Buffer
				imcheck.WriteTable(&b, rows)
				t.Fatalf("the simulator does not reproduce %v:\n%s", d, b.String())
			}
			probed := 0
			for _, r := range rows {
				if r.Match == imcheck.MatchYes {
					probed++
				}
			}
			if probed < 10 {
				t.Fatalf("only %d rows compared", probed)
			}
		})
	}
}
