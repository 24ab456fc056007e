package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imcheck"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/logging"
)

// exitDiffer is the exit status of an imcheck run whose API differs from the simulator.
const exitDiffer = 3

// imcheckFlags are the flags of `chatgroupd imcheck`.
type imcheckFlags struct {
	imRegion       string
	imEndpoint     string
	imTimeout      time.Duration
	sdkAppID       int64
	admin          string
	secretKeyFile  string
	account        string
	account2       string
	rate           float64
	allowExisting  bool
	probeWindow    bool
	windowLimit    int
	transcript     string
	fromTranscript string
	emitFlags      bool
	cleanupTimeout time.Duration
	logLevel       string
	logFormat      string
}

// imcheckHelp is `chatgroupd imcheck --help` besides the flags.
func imcheckHelp() help {
	return help{
		usage: "chatgroupd imcheck --account <test account> [flags]",
		about: `Probes the real IM conversation-group API with a fixed script of calls on one or two test
accounts, records a redacted JSON transcript, and prints each undocumented behaviour the simulator
assumes next to what the API answered. It removes every group it created, even when interrupted.`,
		env: []string{"CHATGROUPD_SECRET_KEY   the IM secret key (or --secret-key-file; never a flag value)"},
		example: []string{
			"CHATGROUPD_SECRET_KEY=... chatgroupd imcheck --sdkappid 1400000000 --im-region singapore --account imcheck-1 --account2 imcheck-2",
		},
	}
}

// newIMCheckFlags declares the flags of `chatgroupd imcheck`.
func newIMCheckFlags(f *imcheckFlags) *flag.FlagSet {
	fs := newFlagSet("imcheck", nil)
	stringFlag(fs, &f.imRegion, "im-region", im.DefaultRegion, oneOf, "IM region: "+strings.Join(im.RegionNames(), ", "), im.RegionNames()...)
	checkedFlag(fs, &f.imEndpoint, "im-endpoint", "", "an http(s) URL with a host", checkEndpoint, "IM API base URL overriding the region (e.g. a simulator's http://127.0.0.1:8080)")
	durationFlag(fs, &f.imTimeout, "im-timeout", im.DefaultTimeout, im.ServerTimeout+time.Millisecond, 5*time.Minute, "timeout of one IM API call (must exceed the server's 3s)")
	int64Flag(fs, &f.sdkAppID, "sdkappid", 0, 1, math.MaxUint32, "IM SDKAppID (required)")
	stringFlag(fs, &f.admin, "admin", im.DefaultAdmin, nonEmpty, "IM app admin identifier")
	stringFlag(fs, &f.secretKeyFile, "secret-key-file", "", anyString, "file holding the IM secret key (else CHATGROUPD_SECRET_KEY)")
	stringFlag(fs, &f.account, "account", "", anyString, "test account the script runs on (required; must have no groups)")
	stringFlag(fs, &f.account2, "account2", "", anyString, "optional second test account (checks that group names are per user)")
	floatFlag(fs, &f.rate, "rate", imcheck.DefaultRate, 1, imcheck.MaxRate, "calls per second, 1 to 50 (the API allows 200 per API)")
	boolFlag(fs, &f.allowExisting, "allow-existing-groups", false, "probe accounts that have groups (their groups are left alone; the limit and paging rows are skipped)")
	boolFlag(fs, &f.probeWindow, "probe-rate-window", false, "also tell a sliding rate window from calendar seconds: spends one second's whole get_contact_group budget of the app, twice")
	intFlag(fs, &f.windowLimit, "window-limit", imcheck.DefaultWindowLimit, 1, 100000, "get_contact_group calls per second the app is allowed (the burst of --probe-rate-window)")
	stringFlag(fs, &f.transcript, "transcript", "imcheck-transcript.json", nonEmpty, "file the JSON transcript is written to (\"-\": none)")
	stringFlag(fs, &f.fromTranscript, "from-transcript", "", anyString, "compare a recorded transcript instead of calling the API")
	boolFlag(fs, &f.emitFlags, "emit-imsim-flags", false, "print only the imsim flags reproducing the findings on stdout (the table goes to stderr)")
	durationFlag(fs, &f.cleanupTimeout, "cleanup-timeout", imcheck.DefaultCleanupTimeout, time.Second, time.Hour, "bound of the clean-up after an interrupted run")
	stringFlag(fs, &f.logLevel, "log-level", "warn", oneOf, "log level: debug, info, warn, error", logLevels()...)
	stringFlag(fs, &f.logFormat, "log-format", "console", oneOf, "log format: json or console", "json", "console")
	return fs
}

func runIMCheck(ctx context.Context, args []string, getenv env, stdout, stderr io.Writer) error {
	var f imcheckFlags
	fs := newIMCheckFlags(&f)
	if err := parseFlags(fs, args, getenv, stdout, imcheckHelp()); err != nil {
		return err
	}
	var (
		tr     *imcheck.Transcript
		runErr error
		log    *zap.Logger
	)
	if f.fromTranscript != "" {
		fh, err := os.Open(f.fromTranscript)
		if err != nil {
			return fmt.Errorf("imcheck: %w", err)
		}
		tr, err = imcheck.ReadTranscript(fh)
		fh.Close()
		if err != nil {
			return err
		}
		log = zap.NewNop()
	} else {
		key, err := secretKey(f.secretKeyFile, getenv)
		if err != nil {
			return err
		}
		if log, err = logging.New(f.logLevel, f.logFormat, stderr, key); err != nil {
			return err
		}
		defer log.Sync() //nolint:errcheck // nothing useful to do at exit
		if f.sdkAppID <= 0 {
			return usageError("imcheck", errors.New("--sdkappid is required (an integer from 1 to 4294967295)"))
		}
		cfg := imcheck.Config{
			Client: im.Config{SDKAppID: f.sdkAppID, Admin: f.admin, SecretKey: key, Region: f.imRegion,
				BaseURL: f.imEndpoint, Timeout: f.imTimeout, Logger: log},
			Account: f.account, Account2: f.account2, Rate: f.rate, AllowExistingGroups: f.allowExisting,
			ProbeRateWindow: f.probeWindow, WindowLimit: f.windowLimit, CleanupTimeout: f.cleanupTimeout, Logger: log,
		}
		if err := cfg.Validate(); err != nil {
			return err
		}
		if f.transcript != "-" {
			// Find out now, not after the API calls, that the transcript can't be written.
			if err := checkWritable(f.transcript); err != nil {
				return err
			}
		}
		tr, runErr = imcheck.Run(ctx, cfg)
		if tr == nil {
			return runErr
		}
		if f.transcript != "-" {
			if err := writeTranscript(f.transcript, tr); err != nil {
				return errors.Join(runErr, err)
			}
			fmt.Fprintf(stderr, "transcript: %s (%d calls)\n", f.transcript, len(tr.Calls))
		}
		if runErr != nil {
			return runErr
		}
	}
	ref, err := imcheck.Reference(context.WithoutCancel(ctx), imcheck.Config{Account: tr.Accounts[0], Account2: second(tr.Accounts),
		ProbeRateWindow: true, Logger: log}, imsim.Config{})
	if err != nil {
		return err
	}
	rows := imcheck.Compare(ref.Observations, tr.Observations)
	table := stdout
	if f.emitFlags {
		table = stderr
	}
	fmt.Fprintf(table, "target %s, sdkappid %d, accounts %s\n\n", tr.Target, tr.SDKAppID, strings.Join(tr.Accounts, ", "))
	if err := imcheck.WriteTable(table, rows); err != nil {
		return err
	}
	if f.emitFlags {
		fmt.Fprintln(stdout, strings.Join(imcheck.IMSimFlags(tr.Observations), " "))
	}
	if d := imcheck.Differing(rows); len(d) > 0 {
		return &exitError{code: exitDiffer, err: fmt.Errorf("imcheck: %d rows differ from the simulator: %s", len(d), strings.Join(d, ", "))}
	}
	return nil
}

func second(accts []string) string {
	if len(accts) > 1 {
		return accts[1]
	}
	return ""
}

// checkWritable fails unless a file can be created beside path (writeTranscript's temp file).
func checkWritable(path string) error {
	tmp := path + ".tmp"
	fh, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("imcheck transcript: %w", err)
	}
	fh.Close()
	return os.Remove(tmp)
}

// writeTranscript writes t to path through a temporary file, so a crash leaves no half a file.
func writeTranscript(path string, t *imcheck.Transcript) error {
	tmp := path + ".tmp"
	fh, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("imcheck transcript: %w", err)
	}
	if err := t.WriteJSON(fh); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Close(); err != nil {
		return fmt.Errorf("imcheck transcript: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("imcheck transcript: %w", err)
	}
	return nil
}
