package imsim

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/im"
)

var apiNames = []string{im.APICreate, im.APIGet, im.APIUpdate, im.APIDelete}

var apiByPath = map[string]string{
	im.PathCreateContactGroup: im.APICreate,
	im.PathGetContactGroup:    im.APIGet,
	im.PathUpdateContactGroup: im.APIUpdate,
	im.PathDelContactGroup:    im.APIDelete,
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
	sigCache      map[string]userSig
	acctFaults    map[faultKey]accountFault // per-account answers (accountfault.go)

	cs callState // call log and per-account latency (calllog.go)
}

// New applies cfg's defaults, validates it and returns a Server with empty state.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
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
		sigCache: map[string]userSig{},
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
	// effect is what the call changed, for the call log; never sent.
	effect effect
}

// effect is what one create, update or delete changed in the state.
type effect struct {
	applied bool     // anything changed
	results []int    // per conversation item of a create or an add/remove: the ResultCode answered
	changed []bool   // per conversation item: it was added to (or removed from) the group
	deleted []string // the groups a delete removed
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
