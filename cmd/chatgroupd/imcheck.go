package main

import (
	"context"
	"errors"
	"fmt"
	"io"
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

func runIMCheck(ctx context.Context, args []string, getenv env, stdout, stderr io.Writer) error {
	fs := newFlagSet("imcheck", stderr)
	var f imcheckFlags
	fs.StringVar(&f.imRegion, "im-region", im.DefaultRegion, "IM region: china, singapore, seoul, tokyo, frankfurt, mumbai, silicon-valley, jakarta")
	fs.StringVar(&f.imEndpoint, "im-endpoint", "", "IM API base URL overriding the region (e.g. a simulator's http://127.0.0.1:8080)")
	fs.DurationVar(&f.imTimeout, "im-timeout", im.DefaultTimeout, "timeout of one IM API call (must exceed the server's 3s)")
	fs.Int64Var(&f.sdkAppID, "sdkappid", 0, "IM SDKAppID (required)")
	fs.StringVar(&f.admin, "admin", im.DefaultAdmin, "IM app admin identifier")
	fs.StringVar(&f.secretKeyFile, "secret-key-file", "", "file holding the IM secret key (else CHATGROUPD_SECRET_KEY)")
	fs.StringVar(&f.account, "account", "", "test account the script runs on (required; must have no groups)")
	fs.StringVar(&f.account2, "account2", "", "optional second test account (checks that group names are per user)")
	fs.Float64Var(&f.rate, "rate", imcheck.DefaultRate, "calls per second, at most 50 (the API allows 200 per API)")
	fs.BoolVar(&f.allowExisting, "allow-existing-groups", false, "probe accounts that have groups (their groups are left alone; the limit and paging rows are skipped)")
	fs.BoolVar(&f.probeWindow, "probe-rate-window", false, "also tell a sliding rate window from calendar seconds: spends one second's whole get_contact_group budget of the app, twice")
	fs.IntVar(&f.windowLimit, "window-limit", imcheck.DefaultWindowLimit, "get_contact_group calls per second the app is allowed (the burst of --probe-rate-window)")
	fs.StringVar(&f.transcript, "transcript", "imcheck-transcript.json", "file the JSON transcript is written to (\"-\": none)")
	fs.StringVar(&f.fromTranscript, "from-transcript", "", "compare a recorded transcript instead of calling the API")
	fs.BoolVar(&f.emitFlags, "emit-imsim-flags", false, "print only the imsim flags reproducing the findings on stdout (the table goes to stderr)")
	fs.DurationVar(&f.cleanupTimeout, "cleanup-timeout", imcheck.DefaultCleanupTimeout, "bound of the clean-up after an interrupted run")
	fs.StringVar(&f.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	fs.StringVar(&f.logFormat, "log-format", "console", "log format: json or console")
	if err := parseFlags(fs, args, getenv); err != nil {
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
			return errors.New("imcheck: --sdkappid is required")
		}
		cfg := imcheck.Config{
			Client: im.Config{SDKAppID: f.sdkAppID, Admin: f.admin, SecretKey: key, Region: f.imRegion,
				BaseURL: f.imEndpoint, Timeout: f.imTimeout, Logger: log},
			Account: f.account, Account2: f.account2, Rate: f.rate, AllowExistingGroups: f.allowExisting,
			ProbeRateWindow: f.probeWindow, WindowLimit: f.windowLimit, CleanupTimeout: f.cleanupTimeout, Logger: log,
		}
		if f.rate <= 0 {
			return fmt.Errorf("imcheck: --rate %g must be positive", f.rate)
		}
		if err := cfg.Validate(); err != nil {
			return err
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
