package imsim

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
)

// shutdownTimeout bounds the graceful shutdown once Serve's context ends. Hung requests are
// released first (Close), so in-flight calls finish quickly.
const shutdownTimeout = 5 * time.Second

// Serve serves the simulator on ln until ctx ends, plus /metrics from g when g is not nil, then
// releases hung requests and shuts down gracefully. It closes ln and returns nil after a clean
// shutdown.
func (s *Server) Serve(ctx context.Context, ln net.Listener, g prometheus.Gatherer) error {
	mux := http.NewServeMux()
	mux.Handle("/", s)
	if g != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{Timeout: 10 * time.Second}))
	}
	srv := s.httpServer(mux)
	if s.cfg.CallLog {
		// The call log records when each request reached the server (Call.Arrived).
		ln = newArrivalListener(ln)
		srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			if ac, ok := c.(*arrivalConn); ok {
				return context.WithValue(ctx, connKey{}, ac)
			}
			return ctx
		}
	}
	if err := httpserve.Serve(ctx, srv, ln, shutdownTimeout, s.Close); err != nil {
		return fmt.Errorf("imsim: %w", err)
	}
	return nil
}

// connKey is the context key of a request's *arrivalConn.
type connKey struct{}

// httpServer is the server Serve runs, with every timeout set: nothing a client does (trickling
// a header or a body, never reading the answer) holds a connection for long.
func (s *Server) httpServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		// Bodies are at most 1 MiB; a client that trickles one in ties up a goroutine only so long.
		ReadTimeout: 30 * time.Second,
		// A response may be held by an account's latency, injected latency and then a hang;
		// past all three it is abandoned.
		WriteTimeout: s.cfg.MaxHang + 2*MaxLatency + 10*time.Second,
		IdleTimeout:  90 * time.Second,
		ErrorLog:     zap.NewStdLog(s.log),
	}
}
