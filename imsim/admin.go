package imsim

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
)

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

// decodeStrict decodes JSON rejecting unknown fields.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("imsim: %w", err)
	}
	return nil
}
