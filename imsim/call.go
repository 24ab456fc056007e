package imsim

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"
)

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request, api string) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	resp := s.gate(r, api, arrivedAt(r, s.cfg.Now()))
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
	if code := s.accountFaultCode(api, body); code != 0 {
		s.answer(w, api, fail(code, "injected account fault"), true)
		return
	}
	s.mu.Lock()
	f := s.faults.forAPI(api)
	delay := f.delay(s.rng)
	kind, code := f.pick(s.rng, api)
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
	markApplied(r.Context(), resp)
	switch kind {
	case faultApplyFail:
		s.answer(w, api, fail(codeTimeout, "injected fault: applied, then timed out"), true)
	case faultApplyHang:
		s.hang(w, r, api)
	default:
		s.answer(w, api, resp, false)
	}
}

// arrivedAt is when r reached the server, which is when a real API counts it against the
// per-second limit: the kernel's receive stamp of its connection (Serve with the call log, on
// Linux) when there is one, else now (the handler's start). On a starved machine the handler
// can start tens of milliseconds after the bytes arrived, and counting there squeezes a client's
// calls of more than a second into one window. A stamp after now, or a second or more before
// it, is not this request's (or not on this clock): now counts.
func arrivedAt(r *http.Request, now time.Time) time.Time {
	ac, ok := r.Context().Value(connKey{}).(*arrivalConn)
	if !ok {
		return now
	}
	at := ac.arrived()
	if at.IsZero() || at.After(now) || now.Sub(at) >= time.Second {
		return now
	}
	return at
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
		return fail(codeFrequency, "call frequency limit: more than "+strconv.Itoa(s.cfg.RateLimit)+" calls in one second")
	}
	s.stats[api].Accepted++
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
		s.answer(w, api, fail(codeTimeout, "server timeout"), true)
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
