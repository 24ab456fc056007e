package imsim

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

// MaxAccountFault caps how long an account fault lasts, so a forgotten one ends by itself.
const MaxAccountFault = 24 * time.Hour

// accountFault is one account's injected answer and when it stops.
type accountFault struct {
	code  int
	until time.Time
}

// faultKey names whose calls an account fault answers: one account's calls of api, or of every
// API when api is "".
type faultKey struct{ account, api string }

// SetAccountFault makes every call from account answer code (without applying it) for d from
// now, as for a user whose data is broken on the IM side (50004 internal errors for one user);
// with apis only that account's calls of those APIs (im.APIUpdate, ...), so a user's deletes can
// fail while their creates go through. d <= 0 removes it: the fault of those APIs, or without
// apis every fault of the account. Other accounts are untouched. An API's own fault goes before
// the account's all-API one.
func (s *Server) SetAccountFault(account string, code int, d time.Duration, apis ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d <= 0 {
		for k := range s.acctFaults {
			if k.account == account && (len(apis) == 0 || slices.Contains(apis, k.api)) {
				delete(s.acctFaults, k)
			}
		}
		return
	}
	if s.acctFaults == nil {
		s.acctFaults = map[faultKey]accountFault{}
	}
	if len(apis) == 0 {
		apis = []string{""}
	}
	for _, api := range apis {
		s.acctFaults[faultKey{account, api}] = accountFault{code: code, until: s.cfg.Now().Add(d)}
	}
}

// accountFaultCode returns the code a call of api with this body answers, 0 when its account
// has no fault in force.
func (s *Server) accountFaultCode(api string, body []byte) int {
	s.mu.Lock()
	none := len(s.acctFaults) == 0
	s.mu.Unlock()
	if none {
		return 0
	}
	var req struct {
		FromAccount string `json:"From_Account"`
	}
	if json.Unmarshal(body, &req) != nil || req.FromAccount == "" {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	for _, k := range []faultKey{{req.FromAccount, api}, {req.FromAccount, ""}} {
		f, ok := s.acctFaults[k]
		if !ok {
			continue
		}
		if !now.Before(f.until) {
			delete(s.acctFaults, k)
			continue
		}
		return f.code
	}
	return 0
}

// AccountFault is the /admin/account-fault body.
type AccountFault struct {
	Account string `json:"account"`
	// Code is the IM code every call of the account answers (e.g. 50004), not 0.
	Code int `json:"code"`
	// Duration is a Go duration ("10m") up to MaxAccountFault; "0s" removes the fault.
	Duration string `json:"duration"`
	// APIs, when set, limit the fault to the account's calls of these APIs
	// (e.g. ["del_contact_group"]); empty means every API.
	APIs []string `json:"apis,omitempty"`
}

func (s *Server) serveAccountFault(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var af AccountFault
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err == nil {
		err = decodeStrict(body, &af)
	}
	var d time.Duration
	if err == nil {
		if af.Duration == "" {
			err = fmt.Errorf("imsim: duration is required (\"0s\" removes the fault)")
		} else {
			d, err = time.ParseDuration(af.Duration)
		}
	}
	switch {
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	case af.Account == "":
		http.Error(w, "imsim: account is required", http.StatusBadRequest)
		return
	case d < 0 || d > MaxAccountFault:
		http.Error(w, fmt.Sprintf("imsim: duration %v outside 0..%v", d, MaxAccountFault), http.StatusBadRequest)
		return
	case d > 0 && (af.Code <= 0 || af.Code > 999999):
		http.Error(w, fmt.Sprintf("imsim: code %d is not an IM error code (1..999999)", af.Code), http.StatusBadRequest)
		return
	}
	for _, a := range af.APIs {
		if !slices.Contains(apiNames, a) {
			http.Error(w, fmt.Sprintf("imsim: unknown api %q (want one of %s)", a, strings.Join(apiNames, ", ")), http.StatusBadRequest)
			return
		}
	}
	s.SetAccountFault(af.Account, af.Code, d, af.APIs...)
	w.WriteHeader(http.StatusNoContent)
}
