package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/logging"
)

// imsimFlags are the flags of `chatgroupd imsim`.
type imsimFlags struct {
	addr           string
	sdkAppID       int64
	admins         string
	secretKeyFile  string
	rateLimit      int
	maxGroups      int
	maxContacts    int
	pageSize       int
	notImported    string
	dismissed      string
	duplicateNames string
	duplicateCode  int
	renameDups     string
	addExisting    int
	removeMissing  int
	missingGroup   int
	deleteMissOK   bool
	maxNameLen     int
	nameUnit       string
	rateWindow     string
	adminAPI       bool
	adminHosts     string
	adminTokenFile string
	stateFile      string
	seed           uint64
	maxHang        time.Duration
	latency        time.Duration
	jitter         time.Duration
	latencyMean    time.Duration
	latencyP99     time.Duration
	errorRates     string
	http502Rate    float64
	hangRate       float64
	applyFailRate  float64
	applyHangRate  float64
	faultAPIs      string
	callLog        bool
	logLevel       string
	logFormat      string
}

// imsimHelp is `chatgroupd imsim --help` besides the flags.
func imsimHelp() help {
	return help{
		usage: "chatgroupd imsim [flags]",
		about: `Serves a local simulator of the IM conversation-group REST API (create, get, update and delete
contact groups) with the real API's limits, error codes and 200 calls/s per API, plus injected
latency and faults. Point chatgroupd run's --im-endpoint at the address it prints.`,
		env:     []string{"CHATGROUPD_SECRET_KEY   the secret key UserSigs are checked against (or --secret-key-file)"},
		example: []string{"CHATGROUPD_SECRET_KEY=devkey chatgroupd imsim --sdkappid 1400000000 --addr 127.0.0.1:8080 --latency 40ms"},
	}
}

// newIMSimFlags declares the flags of `chatgroupd imsim`.
func newIMSimFlags(f *imsimFlags) *flag.FlagSet {
	fs := newFlagSet("imsim", nil)
	stringFlag(fs, &f.addr, "addr", "127.0.0.1:8080", hostPort, "listen address (127.0.0.1:0 picks a free port; the address is printed)")
	int64Flag(fs, &f.sdkAppID, "sdkappid", 0, 1, math.MaxUint32, "SDKAppID the simulator accepts (required)")
	stringFlag(fs, &f.admins, "admin", im.DefaultAdmin, nonEmpty, "app admin identifier(s) allowed to call, comma-separated")
	stringFlag(fs, &f.secretKeyFile, "secret-key-file", "", anyString, "file holding the secret key (else CHATGROUPD_SECRET_KEY)")
	intFlag(fs, &f.rateLimit, "rate-limit", imsim.DefaultRateLimit, 1, 1000000, "accepted calls per API in any sliding second; the rest answer 60007")
	intFlag(fs, &f.maxGroups, "max-groups", imsim.DefaultMaxGroups, 1, math.MaxInt32, "conversation groups per user (51010)")
	intFlag(fs, &f.maxContacts, "max-contacts", imsim.DefaultMaxContacts, 1, math.MaxInt32, "grouped conversations per user (51008)")
	intFlag(fs, &f.pageSize, "page-size", imsim.DefaultPageSize, 1, 10000, "conversations per get_contact_group page")
	stringFlag(fs, &f.notImported, "not-imported", "", anyString, "accounts that answer 50001 (not imported), comma-separated")
	stringFlag(fs, &f.dismissed, "dismissed-groups", "", anyString, "ToGroupId values that fail with 51007 per item, comma-separated")
	stringFlag(fs, &f.duplicateNames, "duplicate-names", imsim.DuplicateReject, oneOf, "create with an existing group name: reject, merge or allow",
		imsim.DuplicateReject, imsim.DuplicateMerge, imsim.DuplicateAllow)
	intFlag(fs, &f.duplicateCode, "duplicate-code", im.CodeBadParams, 1, 999999, "code answering a rejected duplicate name")
	stringFlag(fs, &f.renameDups, "rename-duplicates", imsim.DuplicateReject, oneOf, "rename onto a name the user already has: reject (with --duplicate-code) or allow",
		imsim.DuplicateReject, imsim.DuplicateAllow)
	intFlag(fs, &f.addExisting, "add-existing-code", 0, 0, 999999, "per-item code of adding a conversation already in the group (0: success)")
	intFlag(fs, &f.removeMissing, "remove-missing-code", 0, 0, 999999, "per-item code of removing a conversation not in the group (0: success)")
	intFlag(fs, &f.missingGroup, "missing-group-code", im.CodeGroupNotFound, 1, 999999, "code answering an update or delete of a missing group")
	boolFlag(fs, &f.deleteMissOK, "delete-missing-ok", false, "a delete of a missing group succeeds instead of answering --missing-group-code")
	intFlag(fs, &f.maxNameLen, "max-name-length", imsim.DefaultMaxNameBytes, 1, 4096, "longest group name, in --name-unit (51011 beyond)")
	stringFlag(fs, &f.nameUnit, "name-unit", imsim.NameBytes, oneOf, "what --max-name-length counts: bytes (of UTF-8) or chars", imsim.NameBytes, imsim.NameChars)
	stringFlag(fs, &f.rateWindow, "rate-window", imsim.WindowSliding, oneOf, "how --rate-limit is counted: sliding (any second) or calendar (each clock second)", imsim.WindowSliding, imsim.WindowCalendar)
	boolFlag(fs, &f.adminAPI, "admin-api", false, "serve /admin/ (faults, state, stats, sig invalidation); off by default")
	stringFlag(fs, &f.adminHosts, "admin-host", "", anyString, "host names accepted in the Host header of /admin/ besides loopback, comma-separated")
	stringFlag(fs, &f.adminTokenFile, "admin-token-file", "", anyString, "file holding a token /admin/ requests must send as \"Authorization: Bearer <token>\"")
	boolFlag(fs, &f.callLog, "call-log", false, "keep every API call (account, request, start, end, answer) in memory for GET /admin/calls (tests; grows with every call)")
	stringFlag(fs, &f.stateFile, "state-file", "", anyString, "JSON file to load groups from at start and save them to at shutdown")
	seedFlag(fs, &f.seed, "seed of fault draws (0: from the clock)")
	durationFlag(fs, &f.maxHang, "max-hang", imsim.DefaultMaxHang, time.Millisecond, 10*time.Minute, "how long a hung request is held before it answers 50005")
	durationFlag(fs, &f.latency, "latency", 0, 0, time.Minute, "fixed latency added to every call")
	durationFlag(fs, &f.jitter, "jitter", 0, 0, time.Minute, "uniform random latency [0, jitter) added on top of --latency")
	durationFlag(fs, &f.latencyMean, "latency-mean", 0, 0, time.Minute, "lognormal latency mean (with --latency-p99; replaces --latency/--jitter)")
	durationFlag(fs, &f.latencyP99, "latency-p99", 0, 0, time.Minute, "lognormal latency 99th percentile")
	checkedFlag(fs, &f.errorRates, "error-rates", "", "code=rate pairs, comma-separated, each rate from 0 to 1", func(s string) error {
		_, err := parseErrorRates(s)
		return err
	}, "injected IM codes per call, e.g. 50004=0.01,60007=0.005")
	floatFlag(fs, &f.http502Rate, "http502-rate", 0, 0, 1, "fraction of calls answered HTTP 502")
	floatFlag(fs, &f.hangRate, "hang-rate", 0, 0, 1, "fraction of calls held until the client gives up (not applied)")
	floatFlag(fs, &f.applyFailRate, "apply-then-fail-rate", 0, 0, 1, "fraction of create/update/delete calls applied, then answered 50005")
	floatFlag(fs, &f.applyHangRate, "apply-then-hang-rate", 0, 0, 1, "fraction of create/update/delete calls applied, then held")
	stringFlag(fs, &f.faultAPIs, "fault-apis", "", anyString, "APIs the fault rates apply to, comma-separated (default all), e.g. create_contact_group")
	stringFlag(fs, &f.logLevel, "log-level", "info", oneOf, "log level: debug, info, warn, error", logLevels()...)
	stringFlag(fs, &f.logFormat, "log-format", "json", oneOf, "log format: json or console", "json", "console")
	return fs
}

func runIMSim(ctx context.Context, args []string, getenv env, stdout, stderr io.Writer) error {
	var f imsimFlags
	fs := newIMSimFlags(&f)
	if err := parseFlags(fs, args, getenv, stdout, imsimHelp()); err != nil {
		return err
	}
	if f.sdkAppID <= 0 {
		return usageError("imsim", errors.New("--sdkappid is required (an integer from 1 to 4294967295)"))
	}
	key, err := secretKey(f.secretKeyFile, getenv)
	if err != nil {
		return err
	}
	log, err := logging.New(f.logLevel, f.logFormat, stderr, key)
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck // nothing useful to do at exit
	rates, err := parseErrorRates(f.errorRates)
	if err != nil {
		return err
	}
	admin := imsim.AdminConfig{Enabled: f.adminAPI, Hosts: splitList(f.adminHosts)}
	if f.adminTokenFile != "" {
		if !f.adminAPI {
			return errors.New("imsim: --admin-token-file without --admin-api")
		}
		b, err := os.ReadFile(f.adminTokenFile)
		if err != nil {
			return fmt.Errorf("imsim: admin token: %w", err)
		}
		if admin.Token = strings.TrimSpace(string(b)); admin.Token == "" {
			return fmt.Errorf("imsim: admin token file %s is empty", f.adminTokenFile)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	sim, err := imsim.New(imsim.Config{
		SDKAppID: f.sdkAppID, SecretKey: key, Admins: splitList(f.admins), RateLimit: f.rateLimit,
		MaxGroups: f.maxGroups, MaxContacts: f.maxContacts, PageSize: f.pageSize,
		NotImported: splitList(f.notImported), DismissedGroups: splitList(f.dismissed),
		DuplicateNames: f.duplicateNames, DuplicateCode: f.duplicateCode, MaxHang: f.maxHang, Seed: f.seed,
		RenameDuplicates: f.renameDups, AddExistingCode: f.addExisting, RemoveMissingCode: f.removeMissing,
		MissingGroupCode: f.missingGroup, DeleteMissingOK: f.deleteMissOK, MaxNameBytes: f.maxNameLen,
		NameUnit: f.nameUnit, RateWindow: f.rateWindow, Admin: admin,
		CallLog: f.callLog,
		Faults: imsim.Faults{
			Latency: f.latency, Jitter: f.jitter, LogNormalMean: f.latencyMean, LogNormalP99: f.latencyP99,
			ErrorRates: rates, HTTP502Rate: f.http502Rate, HangRate: f.hangRate,
			ApplyThenFailRate: f.applyFailRate, ApplyThenHangRate: f.applyHangRate, APIs: splitList(f.faultAPIs),
		},
		Registerer: reg, Logger: log,
	})
	if err != nil {
		return err
	}
	if f.stateFile != "" {
		if err := sim.LoadState(f.stateFile); err != nil {
			return err
		}
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", f.addr)
	if err != nil {
		return fmt.Errorf("imsim: listen: %w", err)
	}
	fmt.Fprintf(stdout, "imsim listening on http://%s\n", ln.Addr())
	log.Info("imsim listening", zap.String("addr", ln.Addr().String()), zap.Int64("sdkappid", f.sdkAppID),
		zap.Int("rate_limit", f.rateLimit), zap.String("duplicate_names", f.duplicateNames), zap.Bool("admin_api", f.adminAPI))
	serveErr := sim.Serve(ctx, ln, reg)
	if f.stateFile != "" {
		if err := sim.SaveState(f.stateFile); err != nil {
			return errors.Join(serveErr, err)
		}
		log.Info("imsim state saved", zap.String("file", f.stateFile))
	}
	return serveErr
}

// parseErrorRates reads "50004=0.01,60007=0.005".
func parseErrorRates(s string) (map[int]float64, error) {
	items := splitList(s)
	if len(items) == 0 {
		return nil, nil
	}
	rates := make(map[int]float64, len(items))
	for _, it := range items {
		code, rate, ok := strings.Cut(it, "=")
		c, err1 := strconv.Atoi(strings.TrimSpace(code))
		r, err2 := strconv.ParseFloat(strings.TrimSpace(rate), 64)
		if !ok || err1 != nil || err2 != nil || !(r >= 0 && r <= 1) {
			return nil, fmt.Errorf("imsim: --error-rates item %q: want code=rate, rate from 0 to 1", it)
		}
		rates[c] = r
	}
	return rates, nil
}
