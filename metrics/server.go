package metrics

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/internal/httpserve"
	"github.com/chatgroupd/chatgroupd/internal/logging"
)

// Paths served by Server.
const (
	PathMetrics = "/metrics"
	PathHealthz = "/healthz"
	PathReadyz  = "/readyz"
)

// DefaultShutdownTimeout bounds how long Run waits for in-flight scrapes once its context ends.
const DefaultShutdownTimeout = 5 * time.Second

// Server is the operational HTTP surface of docs/operations.md: /metrics from an injected gatherer,
// /healthz while the process lives and /readyz while ready() reports nil.
type Server struct {
	addr    string
	handler http.Handler
	log     *zap.Logger

	// ShutdownTimeout bounds the graceful shutdown after the context of Run ends;
	// DefaultShutdownTimeout when zero.
	ShutdownTimeout time.Duration
}

// NewServer returns a Server that will listen on addr (host:port, ":9090" style). g is what
// /metrics exposes; ready is asked on every /readyz request (nil means always ready), and its
// error text is the body of the 503 answer, so it must be safe to show. log may be nil.
func NewServer(addr string, g prometheus.Gatherer, ready func() error, log *zap.Logger) *Server {
	if log == nil {
		log = zap.NewNop()
	}
	if ready == nil {
		ready = func() error { return nil }
	}
	mux := http.NewServeMux()
	mux.Handle("GET "+PathMetrics, promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog:      zapErrorLog{log},
		ErrorHandling: promhttp.ContinueOnError,
		Timeout:       10 * time.Second,
	}))
	mux.HandleFunc("GET "+PathHealthz, func(w http.ResponseWriter, _ *http.Request) {
		writeText(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET "+PathReadyz, func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			// Redacted anyway: a reason built from an HTTP error could carry a request URL.
			writeText(w, http.StatusServiceUnavailable, "not ready: "+logging.Redact(err.Error()))
			return
		}
		writeText(w, http.StatusOK, "ready")
	})
	return &Server{addr: addr, handler: mux, log: log}
}

// Run listens on the configured address and serves until ctx ends, then shuts down gracefully.
// It returns nil after a clean shutdown and an error when it cannot listen or serve.
func (s *Server) Run(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("metrics: listen: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on a listener the caller opened (tests use 127.0.0.1:0). It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          zap.NewStdLog(s.log),
	}
	s.log.Info("metrics server listening", zap.String("addr", ln.Addr().String()))
	timeout := s.ShutdownTimeout
	if timeout <= 0 {
		timeout = DefaultShutdownTimeout
	}
	if err := httpserve.Serve(ctx, srv, ln, timeout, nil); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	s.log.Info("metrics server stopped")
	return nil
}

func writeText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = fmt.Fprintln(w, body)
}

// zapErrorLog adapts zap to promhttp.Logger.
type zapErrorLog struct{ log *zap.Logger }

func (l zapErrorLog) Println(v ...any) {
	l.log.Warn("metrics: gather", zap.String("error", fmt.Sprint(v...)))
}
