package main

import (
	"context"
	"errors"
	"fmt"
	"io"
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

func runIMSim(ctx context.Context, args []string, getenv env, stdout, stderr io.Writer) error {
	fs := newFlagSet("imsim", stderr)
	var f imsimFlags
	fs.StringVar(&f.addr, "addr", "127.0.0.1:8080", "listen address (127.0.0.1:0 picks a free port; the address is printed)")
	fs.Int64Var(&f.sdkAppID, "sdkappid", 0, "SDKAppID the simulator accepts (required)")
	fs.StringVar(&f.admins, "admin", im.DefaultAdmin, "app admin identifier(s) allowed to call, comma-separated")
	fs.StringVar(&f.secretKeyFile, "secret-key-file", "", "file holding the secret key (else CHATGROUPD_SECRET_KEY)")
	fs.IntVar(&f.rateLimit, "rate-limit", imsim.DefaultRateLimit, "accepted calls per API in any sliding second; the rest answer 60007")
	fs.IntVar(&f.maxGroups, "max-groups", imsim.DefaultMaxGroups, "conversation groups per user (51010)")
	fs.IntVar(&f.maxContacts, "max-contacts", imsim.DefaultMaxContacts, "grouped conversations per user (51008)")
	fs.IntVar(&f.pageSize, "page-size", imsim.DefaultPageSize, "conversations per get_contact_group page")
	fs.StringVar(&f.notImported, "not-imported", "", "accounts that answer 50001 (not imported), comma-separated")
	fs.StringVar(&f.dismissed, "dismissed-groups", "", "ToGroupId values that fail with 51007 per item, comma-separated")
	fs.StringVar(&f.duplicateNames, "duplicate-names", imsim.DuplicateReject, "create with an existing group name: reject, merge or allow")
	fs.IntVar(&f.duplicateCode, "duplicate-code", im.CodeBadParams, "code answering a rejected duplicate name")
	fs.StringVar(&f.renameDups, "rename-duplicates", imsim.DuplicateReject, "rename onto a name the user already has: reject (with --duplicate-code) or allow")
	fs.IntVar(&f.addExisting, "add-existing-code", 0, "per-item code of adding a conversation already in the group (0: success)")
	fs.IntVar(&f.removeMissing, "remove-missing-code", 0, "per-item code of removing a conversation not in the group (0: success)")
	fs.IntVar(&f.missingGroup, "missing-group-code", im.CodeGroupNotFound, "code answering an update or delete of a missing group")
	fs.BoolVar(&f.deleteMissOK, "delete-missing-ok", false, "a delete of a missing group succeeds instead of answering --missing-group-code")
	fs.IntVar(&f.maxNameLen, "max-name-length", imsim.DefaultMaxNameBytes, "longest group name, in --name-unit (51011 beyond)")
	fs.StringVar(&f.nameUnit, "name-unit", imsim.NameBytes, "what --max-name-length counts: bytes (of UTF-8) or chars")
	fs.StringVar(&f.rateWindow, "rate-window", imsim.WindowSliding, "how --rate-limit is counted: sliding (any second) or calendar (each clock second)")
	fs.BoolVar(&f.adminAPI, "admin-api", false, "serve /admin/ (faults, state, stats, sig invalidation); off by default")
	fs.StringVar(&f.adminHosts, "admin-host", "", "host names accepted in the Host header of /admin/ besides loopback, comma-separated")
	fs.StringVar(&f.adminTokenFile, "admin-token-file", "", "file holding a token /admin/ requests must send as \"Authorization: Bearer <token>\"")
	fs.StringVar(&f.stateFile, "state-file", "", "JSON file to load groups from at start and save them to at shutdown")
	fs.Uint64Var(&f.seed, "seed", 0, "seed of fault draws (0: from the clock)")
	fs.DurationVar(&f.maxHang, "max-hang", imsim.DefaultMaxHang, "how long a hung request is held before it answers 50005")
	fs.DurationVar(&f.latency, "latency", 0, "fixed latency added to every call")
	fs.DurationVar(&f.jitter, "jitter", 0, "uniform random latency [0, jitter) added on top of --latency")
	fs.DurationVar(&f.latencyMean, "latency-mean", 0, "lognormal latency mean (with --latency-p99; replaces --latency/--jitter)")
	fs.DurationVar(&f.latencyP99, "latency-p99", 0, "lognormal latency 99th percentile")
	fs.StringVar(&f.errorRates, "error-rates", "", "injected IM codes per call, e.g. 50004=0.01,60007=0.005")
	fs.Float64Var(&f.http502Rate, "http502-rate", 0, "fraction of calls answered HTTP 502")
	fs.Float64Var(&f.hangRate, "hang-rate", 0, "fraction of calls held until the client gives up (not applied)")
	fs.Float64Var(&f.applyFailRate, "apply-then-fail-rate", 0, "fraction of create/update/delete calls applied, then answered 50005")
	fs.Float64Var(&f.applyHangRate, "apply-then-hang-rate", 0, "fraction of create/update/delete calls applied, then held")
	fs.StringVar(&f.faultAPIs, "fault-apis", "", "APIs the fault rates apply to, comma-separated (default all), e.g. create_contact_group")
	fs.BoolVar(&f.callLog, "call-log", false, "keep every API call (account, request, start, end, answer) in memory for GET /admin/calls (tests; grows with every call)")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&f.logFormat, "log-format", "json", "log format: json or console")
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
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
	if f.sdkAppID <= 0 {
		return errors.New("imsim: --sdkappid is required")
	}
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
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("imsim: --error-rates item %q: want code=rate", it)
		}
		rates[c] = r
	}
	return rates, nil
}
