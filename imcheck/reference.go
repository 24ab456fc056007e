package imcheck

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
	"github.com/chatgroupd/chatgroupd/internal/fakeclock"
)

// Reference credentials of the in-process simulator; they never leave this process.
const (
	referenceAppID = 1400000000
	referenceKey   = "imcheck-reference-key"
)

// Reference runs the script with cfg's accounts and options against a simulator in this process
// configured by sim (the zero Config: the defaults the repository's tests assume), on a
// hand-moved clock, unpaced. Its observations are what the simulator would answer.
func Reference(ctx context.Context, cfg Config, sim imsim.Config) (*Transcript, error) {
	clk := fakeclock.New(time.Now())
	if sim.SDKAppID == 0 {
		sim.SDKAppID, sim.SecretKey = referenceAppID, referenceKey
	}
	sim.Now = clk.Now
	srv, err := imsim.New(sim)
	if err != nil {
		return nil, fmt.Errorf("imcheck reference: %w", err)
	}
	defer srv.Close()
	cfg.Client = im.Config{SDKAppID: sim.SDKAppID, SecretKey: sim.SecretKey, BaseURL: "http://imsim.in-process",
		HTTPClient: &http.Client{Transport: handlerTransport{srv}}, Now: clk.Now}
	if len(sim.Admins) > 0 {
		cfg.Client.Admin = sim.Admins[0]
	}
	cfg.Rate, cfg.Now, cfg.Sleep, cfg.OnCall = -1, clk.Now, clk.Sleep, nil
	t, err := Run(ctx, cfg)
	if err != nil {
		return t, fmt.Errorf("imcheck reference: %w", err)
	}
	return t, nil
}

// handlerTransport serves requests with an http.Handler in this process.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, req)
	return rec.Result(), nil
}
