// Package httpserve runs an http.Server on a listener until a context ends, then shuts it down
// gracefully within a bound. The metrics server, the IM simulator and the demo share it, so
// there is one shutdown sequence to get right.
package httpserve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Serve serves srv on ln until ctx ends or serving fails. On ctx's end it calls beforeShutdown
// (when set; e.g. to release requests that would otherwise hold the shutdown), then shuts srv
// down, waiting at most timeout for in-flight requests before closing them. It closes ln and
// returns nil after a clean shutdown.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, timeout time.Duration, beforeShutdown func()) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	if beforeShutdown != nil {
		beforeShutdown()
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	shutErr := srv.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	if shutErr != nil {
		_ = srv.Close()
		return fmt.Errorf("shutdown: %w", shutErr)
	}
	return nil
}
