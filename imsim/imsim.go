// Package imsim is a local simulator of the Tencent Cloud IM conversation-group REST API
// (v4/recentcontact/*_contact_group) with its auth, limits, codes and per-API rate limit.
// It injects faults (latency, error codes, 502s, hangs, applied-then-failed calls) on demand, so
// tests, the demo and benchmarks can run against it instead of the real service.
//
// Rules, in the order a call meets them:
//
//  1. Only POST to the four paths (else 405/404, plain HTTP).
//  2. Auth from the query: sdkappid missing → 60012, other than Config.SDKAppID → 70020;
//     identifier not in Config.Admins → 50003; usersig empty → 70002, undecodable → 70003,
//     expired → 70001, made for another identifier → 70013, another sdkappid → 70014, wrong key →
//     70009, issued before InvalidateSigs → 70052.
//  3. Rate: at most Config.RateLimit accepted calls per API in any sliding one-second window
//     (t-1s, t]; the excess answers 60007 and does not count against the window.
//  4. Faults (latency first, then at most one drawn fault).
//  5. The body: bad JSON, missing or over-long fields, a contact Type other than 1/2, not
//     exactly one group per create, more than Config.MaxContactsPerCall conversations → 50002;
//     From_Account not imported → 50001; group name over 32 bytes → 51011; a 21st group → 51010;
//     a conversation that would make the user's distinct grouped conversations exceed 1000 →
//     51008 for that item (the group is created with the items that fit, a partial result; if
//     none fit, 51008 at top level and no group); a ToGroupId in Config.DismissedGroups → 51007
//     per item; a duplicate group name per Config.DuplicateNames (default "reject" with
//     Config.DuplicateCode, default 50002); update or delete of a missing group → 51009.
//     Config's policy fields (RenameDuplicates, AddExistingCode, RemoveMissingCode,
//     MissingGroupCode, DeleteMissingOK, NameUnit, RateWindow) change the answers the public
//     documentation does not settle; `chatgroupd imcheck` finds the real API's.
//
// Quota and windows: Stats().APIs[api].MaxWindow (gauge imsim_max_calls_per_second) is the most
// calls of one API, admitted or not, seen in any sliding second; a client that respects the
// limit keeps it at or below RateLimit.
//
// Admin endpoints, for driving a simulator in another process. They answer 404 unless
// Config.Admin.Enabled; then only a Host header naming a loopback address or one of
// Config.Admin.Hosts is served (a web page can't reach them by DNS rebinding), a POST must be
// Content-Type application/json (a cross-site form or text/plain POST can't send one without a
// CORS preflight, which is never granted), and with Config.Admin.Token set every request must
// carry "Authorization: Bearer <token>":
//
//	POST /admin/faults            body: Faults as JSON, e.g. {"error_rates":{"50004":0.1},"latency":"20ms"}
//	GET  /admin/faults            the faults in force
//	GET  /admin/state?account=a   {"account":"a","groups":[{"GroupName":…,"GroupId":…,"Contacts":[…]}]}
//	GET  /admin/stats             Stats as JSON
//	POST /admin/invalidate-sigs   sigs issued before now answer 70052
//	GET  /admin/calls             the call log (Config.CallLog) as a JSON array of Call
//	POST /admin/account-latency   body {"account":"a","latency":"5s"}: a's calls wait 5s first
//	POST /admin/account-fault     body {"account":"a","code":50004,"duration":"10m"}: a's calls answer 50004 for 10m
package imsim

import (
	"bytes"
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/im"
)

// Duplicate-name behaviours (Config.DuplicateNames). The real API documents none.
const (
	// DuplicateReject answers Config.DuplicateCode and changes nothing (the default: names address
	// groups in update and delete, so they are presumably unique per user).
	DuplicateReject = "reject"
	// DuplicateMerge adds the conversations to the existing group and answers success with its id,
	// as if create were idempotent by name.
	DuplicateMerge = "merge"
	// DuplicateAllow creates a second group with the same name.
	DuplicateAllow = "allow"
)

// Other behaviours the public documentation leaves open. `chatgroupd imcheck` probes each on the
// real API and prints the Config (as imsim flags) that reproduces what it saw.
const (
	// NameBytes counts Config.MaxNameBytes in bytes of UTF-8 (the default); NameChars in
	// characters (code points).
	NameBytes = "bytes"
	NameChars = "chars"
	// WindowSliding counts the rate limit over any one-second window (t-1s, t] (the default);
	// WindowCalendar over each calendar second [s, s+1).
	WindowSliding  = "sliding"
	WindowCalendar = "calendar"
)

// Defaults of Config.
const (
	DefaultAdmin              = "administrator"
	DefaultRateLimit          = 200
	DefaultMaxGroups          = 20
	DefaultMaxContacts        = 1000
	DefaultMaxNameBytes       = 32
	DefaultMaxContactsPerCall = 100
	DefaultPageSize           = 50
	DefaultMaxHang            = 10 * time.Second
	maxBodyBytes              = 1 << 20
	maxSigCache               = 1024
)

var apiNames = []string{im.APICreate, im.APIGet, im.APIUpdate, im.APIDelete}

var apiByPath = map[string]string{
	im.PathCreateContactGroup: im.APICreate,
	im.PathGetContactGroup:    im.APIGet,
	im.PathUpdateContactGroup: im.APIUpdate,
	im.PathDelContactGroup:    im.APIDelete,
}

// Config configures a Server. Zero values take the documented defaults.
type Config struct {
	SDKAppID  int64
	SecretKey string
	// Admins are the identifiers allowed to call; default {"administrator"}.
	Admins []string
	// RateLimit is accepted calls per API per sliding second; default 200.
	RateLimit          int
	MaxGroups          int // per user; default 20 (51010)
	MaxContacts        int // distinct grouped conversations per user; default 1000 (51008)
	MaxNameBytes       int // default 32 (51011)
	MaxContactsPerCall int // per create/update call; default 100 (50002)
	PageSize           int // conversations per get page; default 50
	// NotImported accounts answer 50001; so does any account Imported returns false for.
	NotImported []string
	Imported    func(account string) bool
	// DismissedGroups are ToGroupId values whose conversations fail with 51007 per item.
	DismissedGroups []string
	// DuplicateNames is DuplicateReject (default), DuplicateMerge or DuplicateAllow.
	DuplicateNames string
	// DuplicateCode answers a rejected duplicate name; default 50002.
	DuplicateCode int
	// RenameDuplicates is what a rename onto a name the user already has does: DuplicateReject
	// (default; answers DuplicateCode) or DuplicateAllow (two groups then share the name).
	RenameDuplicates string
	// AddExistingCode is the per-item ResultCode of adding a conversation that is already in the
	// group; 0 (default) is success, the add being idempotent.
	AddExistingCode int
	// RemoveMissingCode is the per-item ResultCode of removing a conversation that is not in the
	// group; 0 (default) is success.
	RemoveMissingCode int
	// MissingGroupCode answers an update or delete of a group the user does not have; default
	// 51009.
	MissingGroupCode int
	// DeleteMissingOK makes a delete of a missing group succeed instead (groups that exist among
	// its names are still deleted).
	DeleteMissingOK bool
	// NameUnit is what MaxNameBytes counts: NameBytes (default) or NameChars.
	NameUnit string
	// RateWindow is how RateLimit is counted: WindowSliding (default) or WindowCalendar.
	RateWindow string
	// MaxHang bounds a hung request; default 10s, then it answers 50005.
	MaxHang time.Duration
	Faults  Faults
	// Admin controls the /admin/ endpoints; off by default.
	Admin AdminConfig
	// Seed makes fault draws reproducible; 0 seeds from the clock.
	Seed uint64
	// CallLog keeps every API call (account, request, start, end, answer) for Calls and
	// GET /admin/calls; off by default, as it grows with every call.
	CallLog bool
	// Now is the clock of rate windows and sig expiry; default time.Now.
	Now func() time.Time
	// Registerer receives the simulator's metrics (imsim_*); nil registers nowhere.
	Registerer prometheus.Registerer
	Logger     *zap.Logger
}

func (c *Config) defaults() {
	if len(c.Admins) == 0 {
		c.Admins = []string{DefaultAdmin}
	}
	c.RateLimit = cmp.Or(c.RateLimit, DefaultRateLimit)
	c.MaxGroups = cmp.Or(c.MaxGroups, DefaultMaxGroups)
	c.MaxContacts = cmp.Or(c.MaxContacts, DefaultMaxContacts)
	c.MaxNameBytes = cmp.Or(c.MaxNameBytes, DefaultMaxNameBytes)
	c.MaxContactsPerCall = cmp.Or(c.MaxContactsPerCall, DefaultMaxContactsPerCall)
	c.PageSize = cmp.Or(c.PageSize, DefaultPageSize)
	c.DuplicateCode = cmp.Or(c.DuplicateCode, im.CodeBadParams)
	c.DuplicateNames = cmp.Or(c.DuplicateNames, DuplicateReject)
	c.RenameDuplicates = cmp.Or(c.RenameDuplicates, DuplicateReject)
	c.MissingGroupCode = cmp.Or(c.MissingGroupCode, im.CodeGroupNotFound)
	c.NameUnit = cmp.Or(c.NameUnit, NameBytes)
	c.RateWindow = cmp.Or(c.RateWindow, WindowSliding)
	c.MaxHang = cmp.Or(c.MaxHang, DefaultMaxHang)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

// AdminConfig guards the /admin/ endpoints, which change faults and invalidate sigs.
type AdminConfig struct {
	// Enabled serves them; otherwise they answer 404.
	Enabled bool
	// Hosts are host names (without port) accepted in the Host header besides loopback ones
	// (localhost, 127.0.0.0/8, ::1).
	Hosts []string
	// Token, when set, must come as "Authorization: Bearer <token>".
	Token string
}

// Validate reports the first configuration error, after applying defaults to a copy.
func (c Config) Validate() error {
	c.defaults()
	return c.validate()
}

func (c *Config) validate() error {
	switch {
	case c.SDKAppID <= 0:
		return errors.New("imsim config: sdkappid must be positive")
	case c.SecretKey == "":
		return errors.New("imsim config: secret key is empty")
	case c.RateLimit < 0 || c.MaxGroups < 0 || c.MaxContacts < 0 || c.MaxNameBytes < 0 || c.MaxContactsPerCall < 0 || c.PageSize < 0:
		return errors.New("imsim config: limits must not be negative")
	case c.MaxHang < 0:
		return errors.New("imsim config: max hang must not be negative")
	case !slices.Contains([]string{DuplicateReject, DuplicateMerge, DuplicateAllow}, c.DuplicateNames):
		return fmt.Errorf("imsim config: duplicate names %q: want reject, merge or allow", c.DuplicateNames)
	case c.RenameDuplicates != DuplicateReject && c.RenameDuplicates != DuplicateAllow:
		return fmt.Errorf("imsim config: rename duplicates %q: want reject or allow", c.RenameDuplicates)
	case c.NameUnit != NameBytes && c.NameUnit != NameChars:
		return fmt.Errorf("imsim config: name unit %q: want bytes or chars", c.NameUnit)
	case c.RateWindow != WindowSliding && c.RateWindow != WindowCalendar:
		return fmt.Errorf("imsim config: rate window %q: want sliding or calendar", c.RateWindow)
	}
	return c.Faults.Validate()
}

// APIStats counts the calls of one API.
type APIStats struct {
	Total       int // every call that reached the API path
	Accepted    int // calls admitted by the rate limiter
	RateLimited int // calls answered 60007 by the rate limiter (not injected 60007s)
	// MaxWindow is the highest number of calls (admitted or not) seen in any sliding second.
	MaxWindow int
	// Codes counts answers by IM code (0 for success; 502 HTTP answers and abandoned hangs are
	// not IM codes and are counted under -502 and -1).
	Codes map[int]int
}

// Stats is a snapshot of what the simulator saw.
type Stats struct {
	APIs map[string]APIStats
	// DuplicateCreates counts creates naming a group the user already had (in any mode).
	DuplicateCreates int
	// GroupsCreated counts groups created (including by apply-then-fail calls).
	GroupsCreated int
}

// window tracks one API's calls in the last second.
type window struct {
	all      []time.Time // every call in (now-1s, now]
	accepted []time.Time // admitted calls in (now-1s, now]
	max      int
}

func dropOld(ts []time.Time, cut time.Time) []time.Time {
	i := 0
	for i < len(ts) && !ts[i].After(cut) {
		i++
	}
	return ts[i:]
}

// admit records a call at now and says whether it fits in the limit. Handlers read the clock
// before they take the lock that admit runs under, so now may be a little older than the last
// call recorded; it is inserted in order, because a call out of order at the front of the window
// would outstay its second and be counted against calls it never shared a second with.
//
// With calendar set, admitted calls are counted per calendar second instead (MaxWindow stays a
// sliding count: it measures the client, not the server's rule).
func (w *window) admit(now time.Time, limit int, calendar bool) bool {
	cut := now.Add(-time.Second)
	w.all = insertOrdered(dropOld(w.all, cut), now)
	w.max = max(w.max, len(w.all))
	if calendar {
		cut = now.Truncate(time.Second).Add(-time.Nanosecond)
	}
	w.accepted = dropOld(w.accepted, cut)
	if len(w.accepted) >= limit {
		return false
	}
	w.accepted = insertOrdered(w.accepted, now)
	return true
}

// insertOrdered inserts t into the ordered ts after any equal times.
func insertOrdered(ts []time.Time, t time.Time) []time.Time {
	i := len(ts)
	for i > 0 && ts[i-1].After(t) {
		i--
	}
	return slices.Insert(ts, i, t)
}

// Server simulates the API. It is an http.Handler; create it with New. Its methods are safe for
// concurrent use.
type Server struct {
	cfg      Config
	log      *zap.Logger
	notImp   map[string]bool
	admins   map[string]bool
	dismiss  map[string]bool
	done     chan struct{}
	doneOnce sync.Once

	calls     *prometheus.CounterVec
	maxWindow *prometheus.GaugeVec
	dupCount  prometheus.Counter
	created   prometheus.Counter

	mu            sync.Mutex
	accounts      map[string]*account
	windows       map[string]*window
	stats         map[string]*APIStats
	dupCreates    int
	groupsCreated int
	faults        Faults
	rng           *rand.Rand
	invalidBefore int64 // unix seconds; sigs issued before it answer 70052
	sigCache      map[string]im.UserSigInfo
	acctFaults    map[string]accountFault // per-account answers (accountfault.go)

	cs callState // call log and per-account latency (calllog.go)
}

// New validates cfg and returns a Server with empty state.
func New(cfg Config) (*Server, error) {
	cfg.defaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		notImp:   toSet(cfg.NotImported),
		admins:   toSet(cfg.Admins),
		dismiss:  toSet(cfg.DismissedGroups),
		done:     make(chan struct{}),
		accounts: map[string]*account{},
		windows:  map[string]*window{},
		stats:    map[string]*APIStats{},
		sigCache: map[string]im.UserSigInfo{},
		cs:       callState{latency: map[string]time.Duration{}},
		faults:   cfg.Faults.clone(),
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "imsim", Name: "calls_total",
			Help: "Calls by api and answer (IM code, http_502, hang_abandoned)."}, []string{"api", "code"}),
		maxWindow: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "imsim", Name: "max_calls_per_second",
			Help: "Highest number of calls of an api seen in any sliding one-second window."}, []string{"api"}),
		dupCount: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "imsim", Name: "duplicate_creates_total",
			Help: "Creates naming a group the user already had."}),
		created: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "imsim", Name: "groups_created_total",
			Help: "Groups created."}),
	}
	for _, a := range apiNames {
		s.windows[a] = &window{}
		s.stats[a] = &APIStats{Codes: map[int]int{}}
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{s.calls, s.maxWindow, s.dupCount, s.created} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("imsim metrics: %w", err)
			}
		}
	}
	return s, nil
}

func toSet(xs []string) map[string]bool {
	m := make(map[string]bool, len(xs))
	for _, x := range xs {
		m[x] = true
	}
	return m
}

// Close releases every hung request (they answer 50005) and makes later hangs return at once.
func (s *Server) Close() { s.doneOnce.Do(func() { close(s.done) }) }

// SetFaults replaces the injected faults; calls already past their draw are unaffected.
func (s *Server) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	s.faults = f.clone()
	s.mu.Unlock()
	return nil
}

// Faults returns the faults in force.
func (s *Server) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults.clone()
}

// InvalidateSigs makes every UserSig issued before now (whole seconds) answer 70052, like
// rotating the key in the console.
func (s *Server) InvalidateSigs() {
	s.mu.Lock()
	s.invalidBefore = s.cfg.Now().Unix()
	s.mu.Unlock()
}

// Groups returns a copy of account's groups in creation order.
func (s *Server) Groups(acct string) []Group {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accounts[acct]
	if a == nil {
		return nil
	}
	out := make([]Group, 0, len(a.Groups))
	for _, g := range a.Groups {
		out = append(out, g.clone())
	}
	return out
}

// Stats returns a snapshot of the per-API counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{APIs: map[string]APIStats{}, DuplicateCreates: s.dupCreates, GroupsCreated: s.groupsCreated}
	for api, a := range s.stats {
		c := *a
		c.Codes = make(map[int]int, len(a.Codes))
		for k, v := range a.Codes {
			c.Codes[k] = v
		}
		c.MaxWindow = s.windows[api].max
		st.APIs[api] = c
	}
	return st
}

// response is the envelope plus whichever API-specific fields apply.
type response struct {
	im.BaseResponse
	GroupResultItem   []im.GroupResultItem  `json:"GroupResultItem,omitempty"`
	GroupItem         *[]im.GroupItem       `json:"GroupItem,omitempty"`
	ContactItem       *[]im.ContactInfo     `json:"ContactItem,omitempty"`
	CompleteFlag      *int                  `json:"CompleteFlag,omitempty"`
	NextStartIndex    *int                  `json:"NextStartIndex,omitempty"`
	UpdateGroupResult *im.UpdateGroupResult `json:"UpdateGroupResult,omitempty"`
}

func fail(code int, info string) *response {
	return &response{BaseResponse: im.BaseResponse{ActionStatus: "FAIL", ErrorCode: code, ErrorInfo: info}}
}

func ok() *response { return &response{BaseResponse: im.BaseResponse{ActionStatus: "OK"}} }

// ServeHTTP serves the API under /v4/recentcontact/ and the admin endpoints under /admin/.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if api, found := apiByPath[r.URL.Path]; found {
		s.serveLogged(w, r, api)
		return
	}
	if !strings.HasPrefix(r.URL.Path, "/admin/") {
		http.NotFound(w, r)
		return
	}
	if status, msg := s.adminAllowed(r); status != 0 {
		http.Error(w, msg, status)
		return
	}
	switch r.URL.Path {
	case "/admin/calls":
		s.serveCalls(w, r)
	case "/admin/account-latency":
		s.serveAccountLatency(w, r)
	case "/admin/account-fault":
		s.serveAccountFault(w, r)
	case "/admin/faults":
		s.serveFaults(w, r)
	case "/admin/state":
		s.serveState(w, r)
	case "/admin/stats":
		writeJSON(w, http.StatusOK, s.Stats())
	case "/admin/invalidate-sigs":
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		s.InvalidateSigs()
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}

// adminAllowed checks an /admin/ request against Config.Admin; a non-zero status refuses it.
func (s *Server) adminAllowed(r *http.Request) (int, string) {
	ac := s.cfg.Admin
	if !ac.Enabled {
		return http.StatusNotFound, "admin API disabled (start the simulator with --admin-api)"
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if !loopbackHost(host) && !slices.ContainsFunc(ac.Hosts, func(h string) bool { return strings.EqualFold(h, host) }) {
		return http.StatusForbidden, "admin API: host not allowed"
	}
	if ac.Token != "" {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(ac.Token)) != 1 {
			return http.StatusUnauthorized, "admin API: bearer token required"
		}
	}
	if r.Method == http.MethodPost || r.Method == http.MethodPut {
		mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || mt != "application/json" {
			return http.StatusUnsupportedMediaType, "admin API: Content-Type must be application/json"
		}
	}
	return 0, ""
}

// loopbackHost reports whether host is localhost or a loopback IP.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request, api string) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	now := s.cfg.Now()
	resp := s.gate(r, api, now)
	if resp != nil {
		s.answer(w, api, resp, false)
		return
	}
	// Read the body before any delay: net/http notices a client hanging up (and cancels
	// r.Context()) only once the body has been consumed.
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	if err != nil {
		s.record(api, -1)
		return
	}
	if code := s.accountFaultCode(body); code != 0 {
		s.answer(w, api, fail(code, "injected account fault"), true)
		return
	}
	s.mu.Lock()
	delay := s.faults.delay(s.rng)
	kind, code := s.faults.pick(s.rng, api)
	s.mu.Unlock()
	if delay > 0 && !s.sleep(r.Context(), delay) {
		s.record(api, -1)
		return
	}
	switch kind {
	case fault502:
		s.record(api, -502)
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		io.WriteString(w, "<html><body><h1>502 Bad Gateway</h1></body></html>\n")
		return
	case faultHang:
		s.hang(w, r, api)
		return
	case faultCode:
		s.answer(w, api, fail(code, "injected fault"), true)
		return
	}
	resp = s.apply(api, body)
	markApplied(r.Context(), api, resp)
	switch kind {
	case faultApplyFail:
		s.answer(w, api, fail(im.CodeTimeout, "injected fault: applied, then timed out"), true)
	case faultApplyHang:
		s.hang(w, r, api)
	default:
		s.answer(w, api, resp, false)
	}
}

// gate checks auth and the rate limit; a non-nil response ends the call.
func (s *Server) gate(r *http.Request, api string, now time.Time) *response {
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats[api].Total++
	auth := s.authLocked(q.Get("sdkappid"), q.Get("identifier"), q.Get("usersig"), now)
	// Every call lands in the window, so MaxWindow shows what a client really sent.
	admitted := s.windows[api].admit(now, s.cfg.RateLimit, s.cfg.RateWindow == WindowCalendar)
	s.maxWindow.WithLabelValues(api).Set(float64(s.windows[api].max))
	if auth != nil {
		if admitted { // auth failures do not use quota
			w := s.windows[api]
			w.accepted = w.accepted[:len(w.accepted)-1]
		}
		return auth
	}
	if !admitted {
		s.stats[api].RateLimited++
		return fail(im.CodeFrequency, "call frequency limit: more than "+strconv.Itoa(s.cfg.RateLimit)+" calls in one second")
	}
	s.stats[api].Accepted++
	return nil
}

func (s *Server) authLocked(appid, identifier, sig string, now time.Time) *response {
	if appid == "" {
		return fail(60012, "sdkappid is required")
	}
	if id, err := strconv.ParseInt(appid, 10, 64); err != nil || id != s.cfg.SDKAppID {
		return fail(im.CodeAppIDNotFound, "sdkappid not found")
	}
	if !s.admins[identifier] {
		return fail(im.CodeNotAdmin, "identifier is not an app admin")
	}
	if sig == "" {
		return fail(im.CodeSigEmpty, "usersig is empty")
	}
	info, cached := s.sigCache[sig]
	if !cached || info.Identifier != identifier || now.After(info.Expires()) {
		// Verifying inflates and hashes (~0.1 ms); a client reuses one sig for hours, so only
		// the first use of a sig (and every failure) pays for it.
		err := im.VerifyUserSig(s.cfg.SecretKey, s.cfg.SDKAppID, identifier, sig, now)
		switch {
		case errors.Is(err, im.ErrSigMalformed):
			return fail(im.CodeSigMismatch, "usersig is invalid")
		case errors.Is(err, im.ErrSigExpired):
			return fail(im.CodeSigExpired, "usersig expired")
		case errors.Is(err, im.ErrSigIdentifier):
			return fail(im.CodeIdentifierInvalid, "identifier does not match the usersig")
		case errors.Is(err, im.ErrSigAppID):
			return fail(im.CodeAppIDMismatch, "sdkappid does not match the usersig")
		case err != nil:
			return fail(im.CodeSigKeyMismatch, "usersig verification failed")
		}
		if info, err = im.DecodeUserSig(sig); err != nil {
			return fail(im.CodeSigMismatch, "usersig is invalid")
		}
		if len(s.sigCache) >= maxSigCache {
			clear(s.sigCache)
		}
		s.sigCache[sig] = info
	}
	if info.Issued.Unix() < s.invalidBefore {
		return fail(im.CodeSigInvalidated, "usersig invalidated")
	}
	return nil
}

// sleep waits d; false when the client went away first.
func (s *Server) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.done:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *Server) hang(w http.ResponseWriter, r *http.Request, api string) {
	if s.sleep(r.Context(), s.cfg.MaxHang) {
		s.answer(w, api, fail(im.CodeTimeout, "server timeout"), true)
		return
	}
	s.record(api, -1)
}

func (s *Server) record(api string, code int) {
	label := strconv.Itoa(code)
	switch code {
	case -502:
		label = "http_502"
	case -1:
		label = "hang_abandoned"
	}
	s.calls.WithLabelValues(api, label).Inc()
	s.mu.Lock()
	s.stats[api].Codes[code]++
	s.mu.Unlock()
}

func (s *Server) answer(w http.ResponseWriter, api string, resp *response, injected bool) {
	s.record(api, resp.ErrorCode)
	if resp.ErrorCode != 0 && !injected {
		s.log.Debug("imsim: answer", zap.String("api", api), zap.Int("code", resp.ErrorCode), zap.String("info", resp.ErrorInfo))
	}
	writeJSON(w, http.StatusOK, resp)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// apply decodes and executes one admitted call.
func (s *Server) apply(api string, body []byte) *response {
	if len(body) > maxBodyBytes {
		return fail(im.CodeBadParams, "request body over 1 MiB")
	}
	switch api {
	case im.APICreate:
		var req im.CreateRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return fail(im.CodeBadParams, "invalid JSON body")
		}
		return s.create(&req)
	case im.APIGet:
		var req im.GetRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return fail(im.CodeBadParams, "invalid JSON body")
		}
		return s.get(&req)
	case im.APIUpdate:
		var req im.UpdateRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return fail(im.CodeBadParams, "invalid JSON body")
		}
		return s.update(&req)
	default:
		var req im.DeleteRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return fail(im.CodeBadParams, "invalid JSON body")
		}
		return s.del(&req)
	}
}

// imported is false for accounts that answer 50001.
func (s *Server) imported(acct string) bool {
	if s.notImp[acct] {
		return false
	}
	return s.cfg.Imported == nil || s.cfg.Imported(acct)
}

func (s *Server) checkName(name, field string) *response {
	switch {
	case name == "" || !utf8.ValidString(name):
		return fail(im.CodeBadParams, field+" must be non-empty UTF-8")
	case s.cfg.NameUnit == NameBytes && len(name) > s.cfg.MaxNameBytes,
		s.cfg.NameUnit == NameChars && utf8.RuneCountInString(name) > s.cfg.MaxNameBytes:
		return fail(im.CodeNameTooLong, field+" over "+strconv.Itoa(s.cfg.MaxNameBytes)+" "+s.cfg.NameUnit)
	}
	return nil
}

// accountLocked returns acct's state, creating it when create is set.
func (s *Server) accountLocked(acct string, create bool) *account {
	a := s.accounts[acct]
	if a == nil && create {
		a = newAccount()
		s.accounts[acct] = a
	}
	return a
}

// addItemLocked adds c to g, or returns the per-item failure code.
func (s *Server) addItemLocked(a *account, g *Group, c im.ContactItem) (int, string) {
	if c.Type == im.ContactGroup && s.dismiss[c.ToGroupID] {
		return im.CodeGroupCheckFailed, "group dismissed or user not a member"
	}
	if g.has(c) && s.cfg.AddExistingCode != 0 {
		return s.cfg.AddExistingCode, "conversation already in the group"
	}
	if !g.has(c) && a.refs[c.Key()] == 0 && len(a.refs) >= s.cfg.MaxContacts {
		return im.CodeTooManyContacts, "grouped conversations would exceed " + strconv.Itoa(s.cfg.MaxContacts)
	}
	a.add(g, c)
	return 0, ""
}

func (s *Server) create(req *im.CreateRequest) *response {
	if msg := checkAccount(req.FromAccount); msg != "" {
		return fail(im.CodeBadParams, msg)
	}
	if len(req.GroupContactItem) != 1 {
		return fail(im.CodeBadParams, "GroupContactItem must hold exactly one group")
	}
	item := req.GroupContactItem[0]
	if r := s.checkName(item.GroupName, "GroupName"); r != nil {
		return r
	}
	if n := len(item.ContactItem); n == 0 || n > s.cfg.MaxContactsPerCall {
		return fail(im.CodeBadParams, "ContactItem must hold 1-"+strconv.Itoa(s.cfg.MaxContactsPerCall)+" conversations")
	}
	for _, c := range item.ContactItem {
		if msg := checkContact(c); msg != "" {
			return fail(im.CodeBadParams, msg)
		}
	}
	if !s.imported(req.FromAccount) {
		return fail(im.CodeNotImported, "From_Account is not imported")
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accountLocked(req.FromAccount, true)
	g := a.find(item.GroupName)
	if g != nil {
		s.dupCreates++
		s.dupCount.Inc()
		switch s.cfg.DuplicateNames {
		case DuplicateReject:
			return fail(s.cfg.DuplicateCode, "GroupName already exists")
		case DuplicateAllow:
			g = nil
		}
	}
	fresh := g == nil
	if fresh {
		if len(a.Groups) >= s.cfg.MaxGroups {
			return fail(im.CodeTooManyGroups, "more than "+strconv.Itoa(s.cfg.MaxGroups)+" conversation groups")
		}
		g = &Group{Name: item.GroupName, ID: a.NextID}
	}
	results := make([]im.ContactResult, 0, len(item.ContactItem))
	okCount := 0
	for _, c := range item.ContactItem {
		code, info := s.addItemLocked(a, g, c)
		if code == 0 {
			okCount++
		}
		results = append(results, im.ContactResult{ContactItem: c, ResultCode: code, ResultInfo: info})
	}
	if fresh {
		if okCount == 0 {
			// Nothing fit: no group. The item code becomes the top-level code.
			return fail(results[0].ResultCode, results[0].ResultInfo)
		}
		a.NextID++
		a.Groups = append(a.Groups, g)
		s.groupsCreated++
		s.created.Inc()
	}
	r := ok()
	r.GroupResultItem = []im.GroupResultItem{{GroupItem: im.GroupItem{GroupName: g.Name, GroupID: g.ID}, ResultItem: results}}
	return r
}

func (s *Server) get(req *im.GetRequest) *response {
	if msg := checkAccount(req.FromAccount); msg != "" {
		return fail(im.CodeBadParams, msg)
	}
	if req.StartIndex < 0 {
		return fail(im.CodeBadParams, "StartIndex must not be negative")
	}
	if !s.imported(req.FromAccount) {
		return fail(im.CodeNotImported, "From_Account is not imported")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	groups := []im.GroupItem{}
	all := []im.ContactInfo{}
	if a := s.accountLocked(req.FromAccount, false); a != nil {
		for _, g := range a.Groups {
			groups = append(groups, im.GroupItem{GroupName: g.Name, GroupID: g.ID})
		}
		all = a.contacts()
	}
	start := min(req.StartIndex, len(all))
	end := min(start+s.cfg.PageSize, len(all))
	page := all[start:end]
	complete := 0
	if end >= len(all) {
		complete = 1
	}
	r := ok()
	r.GroupItem, r.ContactItem, r.CompleteFlag, r.NextStartIndex = &groups, &page, &complete, &end
	return r
}

func (s *Server) update(req *im.UpdateRequest) *response {
	if msg := checkAccount(req.FromAccount); msg != "" {
		return fail(im.CodeBadParams, msg)
	}
	u := req.UpdateGroup
	if req.UpdateType != im.UpdateTypeGroup {
		return fail(im.CodeBadParams, "UpdateType must be 1")
	}
	if u.OldGroupName == "" {
		return fail(im.CodeBadParams, "OldGroupName is required")
	}
	switch u.UpdateGroupType {
	case im.UpdateGroupTypeRename:
		if r := s.checkName(u.NewGroupName, "NewGroupName"); r != nil {
			return r
		}
	case im.UpdateGroupTypeAddDel:
		if n := len(u.ContactUpdateItem); n == 0 || n > s.cfg.MaxContactsPerCall {
			return fail(im.CodeBadParams, "ContactUpdateItem must hold 1-"+strconv.Itoa(s.cfg.MaxContactsPerCall)+" items")
		}
		for _, it := range u.ContactUpdateItem {
			if it.ContactOptType != im.ContactOptAdd && it.ContactOptType != im.ContactOptDel {
				return fail(im.CodeBadParams, "ContactOptType must be 1 (add) or 2 (remove)")
			}
			if msg := checkContact(it.ContactItem); msg != "" {
				return fail(im.CodeBadParams, msg)
			}
		}
	default:
		return fail(im.CodeBadParams, "UpdateGroupType must be 1 (rename) or 2 (add/remove)")
	}
	if !s.imported(req.FromAccount) {
		return fail(im.CodeNotImported, "From_Account is not imported")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accountLocked(req.FromAccount, false)
	var g *Group
	if a != nil {
		g = a.find(u.OldGroupName)
	}
	if g == nil {
		return fail(s.cfg.MissingGroupCode, "conversation group does not exist")
	}
	res := im.UpdateGroupResult{GroupID: g.ID}
	if u.UpdateGroupType == im.UpdateGroupTypeRename {
		if other := a.find(u.NewGroupName); other != nil && other != g && s.cfg.RenameDuplicates == DuplicateReject {
			return fail(s.cfg.DuplicateCode, "NewGroupName already exists")
		}
		g.Name = u.NewGroupName
	} else {
		for _, it := range u.ContactUpdateItem {
			code, info := 0, ""
			switch {
			case it.ContactOptType == im.ContactOptAdd:
				code, info = s.addItemLocked(a, g, it.ContactItem)
			case !g.has(it.ContactItem) && s.cfg.RemoveMissingCode != 0:
				code, info = s.cfg.RemoveMissingCode, "conversation not in the group"
			default:
				a.remove(g, it.ContactItem)
			}
			res.ContactResultItem = append(res.ContactResultItem, im.ContactUpdateResult{
				ContactOptType: it.ContactOptType, ContactItem: it.ContactItem, ResultCode: code, ResultInfo: info})
		}
	}
	res.GroupName = g.Name
	r := ok()
	r.UpdateGroupResult = &res
	return r
}

func (s *Server) del(req *im.DeleteRequest) *response {
	if msg := checkAccount(req.FromAccount); msg != "" {
		return fail(im.CodeBadParams, msg)
	}
	if n := len(req.GroupName); n == 0 || n > s.cfg.MaxGroups {
		return fail(im.CodeBadParams, "GroupName must list 1-"+strconv.Itoa(s.cfg.MaxGroups)+" names")
	}
	if !s.imported(req.FromAccount) {
		return fail(im.CodeNotImported, "From_Account is not imported")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accountLocked(req.FromAccount, false)
	var gs []*Group
	for _, name := range req.GroupName {
		var g *Group
		if a != nil {
			g = a.find(name)
		}
		if g == nil {
			if s.cfg.DeleteMissingOK {
				continue
			}
			return fail(s.cfg.MissingGroupCode, "conversation group does not exist")
		}
		gs = append(gs, g)
	}
	for _, g := range gs {
		a.deleteGroup(g)
	}
	return ok()
}

func (s *Server) serveFaults(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, s.Faults())
	case http.MethodPost, http.MethodPut:
		var f Faults
		body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		if err == nil {
			err = json.Unmarshal(body, &f)
		}
		if err == nil {
			err = s.SetFaults(f)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, http.StatusOK, s.Faults())
	default:
		http.Error(w, "GET or POST", http.StatusMethodNotAllowed)
	}
}

// AccountState is the /admin/state answer.
type AccountState struct {
	Account string  `json:"account"`
	Groups  []Group `json:"groups"`
}

func (s *Server) serveState(w http.ResponseWriter, r *http.Request) {
	acct := r.URL.Query().Get("account")
	if acct == "" {
		http.Error(w, "account is required", http.StatusBadRequest)
		return
	}
	g := s.Groups(acct)
	if g == nil {
		g = []Group{}
	}
	writeJSON(w, http.StatusOK, AccountState{Account: acct, Groups: g})
}

// SaveState writes every account's groups to path as JSON (atomically, via a temp file).
func (s *Server) SaveState(path string) error {
	s.mu.Lock()
	b, err := json.MarshalIndent(s.accounts, "", " ")
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("imsim save state: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("imsim save state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("imsim save state: %w", err)
	}
	return nil
}

// LoadState replaces the state with the one SaveState wrote to path. A missing file is not an
// error (first start).
func (s *Server) LoadState(path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("imsim load state: %w", err)
	}
	accts := map[string]*account{}
	if err := json.Unmarshal(b, &accts); err != nil {
		return fmt.Errorf("imsim load state %s: %w", path, err)
	}
	for name, a := range accts {
		if a == nil {
			a = newAccount()
			accts[name] = a
		}
		a.reindex()
		for _, g := range a.Groups {
			a.NextID = max(a.NextID, g.ID+1)
		}
	}
	s.mu.Lock()
	s.accounts = accts
	s.mu.Unlock()
	return nil
}

// decodeStrict decodes JSON rejecting unknown fields.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("imsim: %w", err)
	}
	return nil
}
