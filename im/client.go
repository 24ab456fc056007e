package im

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Client calls the conversation-group APIs. It is safe for concurrent use.
type Client struct {
	cfg     Config
	base    string // scheme://host[/prefix], no trailing slash
	hc      *http.Client
	obs     Observer
	log     *zap.Logger
	now     func() time.Time
	timeout time.Duration

	mu       sync.Mutex
	sig      string
	renewAt  time.Time
	sigEpoch uint64 // bumped per regeneration, so concurrent 70001s re-sign once
}

// New validates cfg and returns a Client with a freshly signed admin UserSig.
func New(cfg Config) (*Client, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, obs: cfg.Observer, log: cfg.Logger, now: cfg.Now, timeout: cfg.Timeout, hc: cfg.HTTPClient}
	if c.obs == nil {
		c.obs = nopObserver{}
	}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	if c.now == nil {
		c.now = time.Now
	}
	if cfg.BaseURL != "" {
		c.base = strings.TrimRight(cfg.BaseURL, "/")
	} else {
		domain, _ := RegionDomain(cfg.Region)
		c.base = "https://" + domain
	}
	if c.hc == nil {
		c.hc = newHTTPClient()
	}
	if _, err := c.regenerate(); err != nil {
		return nil, err
	}
	return c, nil
}

// newHTTPClient is a keep-alive client sized for ~200 calls/s with a few hundred ms latency.
// Redirects are not followed: the UserSig is in the query and must not travel elsewhere.
func newHTTPClient() *http.Client {
	tr := &http.Transport{
		Proxy:       http.ProxyFromEnvironment,
		DialContext: StampDial((&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext),
		// HTTP/1.1 only: a connection then carries one request at a time, so the Writes that
		// complete between a request's WroteRequest and its answer are its own (OnWrite); on
		// HTTP/2 other streams' frames would push every call's write stamp toward its answer.
		ForceAttemptHTTP2:     false,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   128,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   3 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// BaseURL is where requests go (scheme://host[/prefix]).
func (c *Client) BaseURL() string { return c.base }

// RefreshSig regenerates the admin UserSig now (after 70001/70052 or a key rotation).
func (c *Client) RefreshSig() {
	if _, err := c.regenerate(); err != nil {
		// Unreachable after Validate; keep the old sig rather than none.
		c.log.Error("im: usersig regeneration failed", zap.Error(err))
	}
}

func (c *Client) regenerate() (uint64, error) {
	now := c.now()
	sig, err := GenUserSig(c.cfg.SecretKey, c.cfg.SDKAppID, c.cfg.Admin, now, c.cfg.SigTTL)
	if err != nil {
		return 0, fmt.Errorf("im: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sig = sig
	c.renewAt = now.Add(c.cfg.SigTTL * 4 / 5)
	c.sigEpoch++
	return c.sigEpoch, nil
}

// currentSig returns the sig to use, regenerating it once 80% of its life has passed.
func (c *Client) currentSig() (string, uint64) {
	c.mu.Lock()
	if c.now().Before(c.renewAt) {
		defer c.mu.Unlock()
		return c.sig, c.sigEpoch
	}
	c.mu.Unlock()
	c.RefreshSig()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sig, c.sigEpoch
}

// refreshAfterReject regenerates the sig unless another goroutine already did since epoch.
func (c *Client) refreshAfterReject(epoch uint64) {
	c.mu.Lock()
	stale := c.sigEpoch == epoch
	c.mu.Unlock()
	if stale {
		c.RefreshSig()
	}
}
