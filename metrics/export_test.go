package metrics

import "net/http"

// Handler returns the server's HTTP handler, so the tests can serve requests without a listener.
func (s *Server) Handler() http.Handler { return s.handler }
