package im

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/metrics"
)

// regions are the primary API domains by region (docs/api-notes.md), china first.
var regions = [...]struct{ name, domain string }{
	{"china", "console.tim.qq.com"},
	{"singapore", "adminapisgp.im.qcloud.com"},
	{"seoul", "adminapikr.im.qcloud.com"},
	{"tokyo", "adminapijpn.im.qcloud.com"},
	{"frankfurt", "adminapiger.im.qcloud.com"},
	{"mumbai", "adminapiind.im.qcloud.com"},
	{"silicon-valley", "adminapiusa.im.qcloud.com"},
	{"jakarta", "adminapiidn.im.qcloud.com"},
}

// RegionDomain returns the API domain of a region name.
func RegionDomain(region string) (string, bool) {
	for _, r := range regions {
		if r.name == region {
			return r.domain, true
		}
	}
	return "", false
}

// RegionNames lists the known regions, china first.
func RegionNames() []string {
	out := make([]string, len(regions))
	for i, r := range regions {
		out[i] = r.name
	}
	return out
}

// Defaults of Config.
const (
	DefaultRegion           = "china"
	DefaultAdmin            = "administrator"
	DefaultTimeout          = 5 * time.Second
	DefaultMaxResponseBytes = 4 << 20
	DefaultSigTTL           = 24 * time.Hour
	// ServerTimeout is how long the IM server works on a request before giving up; a client
	// timeout at or below it would turn slow successes into ambiguous failures.
	ServerTimeout = 3 * time.Second
	// maxGetPages bounds GetAllContactGroups: 1000 conversations fit in 20 pages of 50, so a
	// server that keeps saying "not complete" beyond this is broken.
	maxGetPages = 200
)

// ErrResponseTooLarge is wrapped by the *Error of a response body above Config.MaxResponseBytes.
var ErrResponseTooLarge = errors.New("response body too large")

// ErrMalformedResponse is wrapped by the *Error of a 200 whose body is not a valid IM answer.
var ErrMalformedResponse = errors.New("malformed response")

// Config configures a Client. Zero values take the documented defaults.
type Config struct {
	SDKAppID  int64
	Admin     string // app admin identifier; default "administrator"
	SecretKey string
	// Region selects the API domain from Regions; default "china". BaseURL overrides it.
	Region string
	// BaseURL ("http://127.0.0.1:8080") replaces the regional https://<domain>.
	BaseURL string
	// Timeout bounds one HTTP attempt; default 5s, must exceed the server's 3s.
	Timeout time.Duration
	// MaxResponseBytes caps a response body; a larger one is an error. Default 4 MiB.
	MaxResponseBytes int64
	// SigTTL is the admin UserSig validity; it is regenerated at 80% of it. Default 24h.
	SigTTL time.Duration
	// HTTPClient replaces the default keep-alive client; its Timeout is left as is. It should
	// not follow redirects (the default refuses them): the UserSig is in the query string.
	HTTPClient *http.Client
	Metrics    *metrics.Metrics
	Logger     *zap.Logger
	Now        func() time.Time
}

// Validate reports the first configuration error, after applying defaults to a copy.
func (c Config) Validate() error {
	c.defaults()
	return c.validate()
}

func (c *Config) defaults() {
	c.Admin = cmp.Or(c.Admin, DefaultAdmin)
	c.Region = cmp.Or(c.Region, DefaultRegion)
	c.Timeout = cmp.Or(c.Timeout, DefaultTimeout)
	c.MaxResponseBytes = cmp.Or(c.MaxResponseBytes, DefaultMaxResponseBytes)
	c.SigTTL = cmp.Or(c.SigTTL, DefaultSigTTL)
}

func (c *Config) validate() error {
	switch {
	case c.SDKAppID <= 0:
		return errors.New("im config: sdkappid must be positive")
	case c.SecretKey == "":
		return errors.New("im config: secret key is empty")
	case len(c.Admin) > 32:
		return errors.New("im config: admin identifier over 32 bytes")
	case c.Timeout <= ServerTimeout:
		return fmt.Errorf("im config: timeout %v must exceed the server's %v", c.Timeout, ServerTimeout)
	case c.MaxResponseBytes < 1024:
		return fmt.Errorf("im config: max response bytes %d below 1024", c.MaxResponseBytes)
	case c.SigTTL < time.Minute:
		return fmt.Errorf("im config: sig ttl %v below one minute", c.SigTTL)
	}
	if c.BaseURL != "" {
		u, err := url.Parse(c.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
			return fmt.Errorf("im config: base url %q must be http(s)://host[:port][/prefix]", c.BaseURL)
		}
		return nil
	}
	if _, ok := RegionDomain(c.Region); !ok {
		return fmt.Errorf("im config: unknown region %q (want one of %s)", c.Region, strings.Join(RegionNames(), ", "))
	}
	return nil
}

// Client calls the conversation-group APIs. It is safe for concurrent use.
type Client struct {
	cfg     Config
	base    string // scheme://host[/prefix], no trailing slash
	hc      *http.Client
	m       *metrics.Metrics
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
	cfg.defaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, m: cfg.Metrics, log: cfg.Logger, now: cfg.Now, timeout: cfg.Timeout, hc: cfg.HTTPClient}
	if c.m == nil {
		c.m = metrics.NewNop()
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
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
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

// CreateContactGroup creates one group. On a partial result (ErrorCode 0, some ResultCode != 0)
// it returns the response and an *Error with Partial set.
func (c *Client) CreateContactGroup(ctx context.Context, req *CreateRequest) (*CreateResponse, error) {
	resp, e := call[CreateResponse](ctx, c, APICreate, PathCreateContactGroup, req)
	if e != nil {
		e.Results, e.Group = createResults(resp), createGroup(resp)
		return nil, e
	}
	if res := createResults(resp); firstFailed(res) >= 0 {
		return resp, partialError(APICreate, res, createGroup(resp))
	}
	return resp, nil
}

func createResults(r *CreateResponse) []ContactResult {
	var out []ContactResult
	for _, g := range r.GroupResultItem {
		out = append(out, g.ResultItem...)
	}
	return out
}

func createGroup(r *CreateResponse) *GroupItem {
	if len(r.GroupResultItem) == 0 || (r.GroupResultItem[0].GroupItem == GroupItem{}) {
		return nil
	}
	g := r.GroupResultItem[0].GroupItem
	return &g
}

func firstFailed(res []ContactResult) int {
	for i, r := range res {
		if r.ResultCode != 0 {
			return i
		}
	}
	return -1
}

func partialError(api string, res []ContactResult, g *GroupItem) *Error {
	f := res[firstFailed(res)]
	return &Error{API: api, Class: Classify(f.ResultCode), Code: f.ResultCode, Info: f.ResultInfo,
		HTTPStatus: http.StatusOK, Partial: true, Results: res, Group: g}
}

// GetContactGroup fetches one page of the account's groups and grouped conversations.
func (c *Client) GetContactGroup(ctx context.Context, req *GetRequest) (*GetResponse, error) {
	resp, e := call[GetResponse](ctx, c, APIGet, PathGetContactGroup, req)
	if e != nil {
		return nil, e
	}
	return resp, nil
}

// GetAllContactGroups pages through get_contact_group while CompleteFlag == 0 and returns every
// group (deduplicated by id) and conversation (deduplicated). A server that never completes, or whose
// NextStartIndex does not advance, yields an *Error of class transient.
func (c *Client) GetAllContactGroups(ctx context.Context, account string) ([]GroupItem, []ContactInfo, error) {
	var (
		groups      []GroupItem
		contacts    []ContactInfo
		seen        = map[int64]bool{}
		seenContact = map[string]bool{}
		start       = 0
	)
	for range maxGetPages {
		page, err := c.GetContactGroup(ctx, &GetRequest{FromAccount: account, StartIndex: start})
		if err != nil {
			return nil, nil, err
		}
		for _, g := range page.GroupItem {
			if !seen[g.GroupID] {
				seen[g.GroupID] = true
				groups = append(groups, g)
			}
		}
		for _, ci := range page.ContactItem {
			// Pages can overlap when the account changes between them; keep the first copy.
			if k := ci.Item().Key(); !seenContact[k] {
				seenContact[k] = true
				contacts = append(contacts, ci)
			}
		}
		if page.CompleteFlag != 0 {
			return groups, contacts, nil
		}
		if page.NextStartIndex <= start {
			return nil, nil, &Error{API: APIGet, Class: ClassTransient, HTTPStatus: http.StatusOK, Malformed: true,
				Err: fmt.Errorf("%w: NextStartIndex %d does not advance from %d", ErrMalformedResponse, page.NextStartIndex, start)}
		}
		start = page.NextStartIndex
	}
	return nil, nil, &Error{API: APIGet, Class: ClassTransient, HTTPStatus: http.StatusOK, Malformed: true,
		Err: fmt.Errorf("%w: not complete after %d pages", ErrMalformedResponse, maxGetPages)}
}

// UpdateContactGroup renames a group or adds/removes conversations. Per-conversation failures
// come back like a partial create: the response and an *Error with Partial set.
func (c *Client) UpdateContactGroup(ctx context.Context, req *UpdateRequest) (*UpdateResponse, error) {
	resp, e := call[UpdateResponse](ctx, c, APIUpdate, PathUpdateContactGroup, req)
	if e != nil {
		e.Results = updateResults(resp)
		return nil, e
	}
	if res := updateResults(resp); firstFailed(res) >= 0 {
		g := &GroupItem{GroupName: resp.UpdateGroupResult.GroupName, GroupID: resp.UpdateGroupResult.GroupID}
		return resp, partialError(APIUpdate, res, g)
	}
	return resp, nil
}

func updateResults(r *UpdateResponse) []ContactResult {
	var out []ContactResult
	for _, x := range r.UpdateGroupResult.ContactResultItem {
		out = append(out, ContactResult{ContactItem: x.ContactItem, ResultCode: x.ResultCode, ResultInfo: x.ResultInfo})
	}
	return out
}

// DelContactGroup deletes groups by name; a missing group is code 51009 (permanent).
func (c *Client) DelContactGroup(ctx context.Context, req *DeleteRequest) (*DeleteResponse, error) {
	resp, e := call[DeleteResponse](ctx, c, APIDelete, PathDelContactGroup, req)
	if e != nil {
		return nil, e
	}
	return resp, nil
}

// Gate admits the HTTP requests of one call: Wait blocks until the next request may be sent
// (for example until a rate limiter has a slot for it), or returns an error to abandon the call.
// A call can send more than one request (the re-sign retry after 70001/70052), and every one of
// them reaches the server and counts against its quota, so every one passes the gate.
type Gate interface {
	Wait(ctx context.Context) error
}

// SendGate is an optional second method of a Gate: when the Gate has it, Send is asked once the
// request's headers are in the connection's write buffer, in the transport's writer right before
// the buffer is flushed, and an error aborts that request unsent (the connection is closed before
// any byte leaves; the call fails with an error matching Send's). Over HTTP/2 the headers frame
// may already be out then, but the body, which the API needs to act, never is. Wait runs earlier, before signing,
// connecting and queueing for the connection's writer: a process paused or starved between Wait
// and the write would otherwise send a request its caller no longer may send.
type SendGate interface {
	Send() error
}

type gateKey struct{}

// WithGate returns a context whose calls pass each of their HTTP requests through g. The gate
// travels with the context rather than the client because it belongs to one call: the caller's
// limiter may already hold a slot for the first request, as with net/http/httptrace hooks.
func WithGate(ctx context.Context, g Gate) context.Context {
	return context.WithValue(ctx, gateKey{}, g)
}

func gateFrom(ctx context.Context) Gate {
	g, _ := ctx.Value(gateKey{}).(Gate)
	return g
}

// envelope is any response type: they all embed BaseResponse.
type envelope interface{ envelope() *BaseResponse }

func (b *BaseResponse) envelope() *BaseResponse { return b }

// call performs one API call, re-signing and retrying once on 70001/70052. The Gate carried by
// ctx, if any, admits every HTTP request, the retry included. Each attempt decodes
// into a fresh response, so nothing of a rejected attempt leaks into the answer. On failure the
// *Error comes with whatever the last body held (per-item results of a failed call), never nil.
func call[T any, PT interface {
	*T
	envelope
}](ctx context.Context, c *Client, api, path string, req any) (PT, *Error) {
	body, err := json.Marshal(req)
	if err != nil {
		return new(T), &Error{API: api, Class: ClassPermanent, Err: fmt.Errorf("encode request: %w", err)}
	}
	gate := gateFrom(ctx)
	for attempt := 0; ; attempt++ {
		if gate != nil {
			if err := gate.Wait(ctx); err != nil {
				return PT(new(T)), &Error{API: api, Class: ClassTransient, Err: fmt.Errorf("rate gate: %w", err)}
			}
		}
		sig, epoch := c.currentSig()
		resp := PT(new(T))
		e := c.attempt(ctx, api, path, sig, body, resp, resp.envelope())
		if e == nil {
			return resp, nil
		}
		if e.Class == ClassCredentials && attempt == 0 && ctx.Err() == nil {
			c.log.Warn("im: usersig rejected, regenerating", zap.String("api", api), zap.Int("code", e.Code))
			c.refreshAfterReject(epoch)
			continue
		}
		return resp, e
	}
}

// attempt is one HTTP exchange; it records metrics and never lets the sig into an error.
func (c *Client) attempt(ctx context.Context, api, path, sig string, body []byte, resp any, base *BaseResponse) (e *Error) {
	start := time.Now()
	defer func() {
		code := "0"
		if e != nil {
			code = e.MetricCode()
		}
		d := time.Since(start)
		c.m.APIRequests.WithLabelValues(api, code).Inc()
		c.m.APIDuration.WithLabelValues(api).Observe(d.Seconds())
		if e != nil {
			c.log.Debug("im: call failed", zap.String("api", api), zap.String("code", code),
				zap.Duration("took", d), zap.String("error", e.Error()))
		}
	}()

	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	q := url.Values{}
	q.Set("sdkappid", strconv.FormatInt(c.cfg.SDKAppID, 10))
	q.Set("identifier", c.cfg.Admin)
	q.Set("usersig", sig)
	q.Set("random", strconv.FormatUint(uint64(rand.Uint32()), 10))
	q.Set("contenttype", "json")
	u := c.base + path + "?" + q.Encode()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return &Error{API: api, Class: ClassConfig, Err: redact(fmt.Errorf("build request: %w", err), sig)}
	}
	var refused atomic.Pointer[error]
	if sg, ok := gateFrom(ctx).(SendGate); ok {
		var conn atomic.Value // net.Conn
		hreq = hreq.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			GotConn: func(i httptrace.GotConnInfo) { conn.Store(i.Conn) },
			WroteHeaders: func() {
				if err := sg.Send(); err != nil {
					refused.Store(&err)
					if c, _ := conn.Load().(net.Conn); c != nil {
						_ = c.Close()
					}
				}
			},
		}))
		// The transport replays a request that wrote nothing when it can rewind the body: not
		// one its gate refused.
		hreq.GetBody = nil
	}
	hreq.Header.Set("Content-Type", "application/json")
	hres, err := c.hc.Do(hreq)
	if r := refused.Load(); r != nil && err != nil {
		// Answered anyway (it left before the close) is an answer like any other.
		return &Error{API: api, Class: ClassTransient, Err: fmt.Errorf("request not sent: %w", *r)}
	}
	if err != nil {
		return &Error{API: api, Class: ClassTransient, Network: true, Err: redact(err, sig)}
	}
	defer hres.Body.Close()
	data, err := io.ReadAll(io.LimitReader(hres.Body, c.cfg.MaxResponseBytes+1))
	if err != nil {
		// The request was sent; whatever the server did, we don't know the outcome.
		return &Error{API: api, Class: ClassTransient, Network: true, HTTPStatus: hres.StatusCode,
			Err: redact(fmt.Errorf("read body: %w", err), sig)}
	}
	if hres.StatusCode != http.StatusOK {
		return &Error{API: api, Class: httpClass(hres.StatusCode), HTTPStatus: hres.StatusCode}
	}
	if int64(len(data)) > c.cfg.MaxResponseBytes {
		return &Error{API: api, Class: ClassTransient, HTTPStatus: hres.StatusCode, Malformed: true,
			Err: fmt.Errorf("%w: over %d bytes", ErrResponseTooLarge, c.cfg.MaxResponseBytes)}
	}
	if err := json.Unmarshal(data, resp); err != nil {
		return &Error{API: api, Class: ClassTransient, HTTPStatus: hres.StatusCode, Malformed: true,
			Err: fmt.Errorf("%w: %v", ErrMalformedResponse, err)}
	}
	switch {
	case base.ErrorCode != 0:
		return &Error{API: api, Class: Classify(base.ErrorCode), Code: base.ErrorCode, Info: base.ErrorInfo,
			HTTPStatus: hres.StatusCode}
	case base.ActionStatus != "OK":
		// ErrorCode 0 without "OK" (or an empty object): not an answer we can trust either way.
		return &Error{API: api, Class: ClassTransient, HTTPStatus: hres.StatusCode, Malformed: true,
			Err: fmt.Errorf("%w: ActionStatus %q with ErrorCode 0", ErrMalformedResponse, base.ActionStatus)}
	}
	return nil
}

// httpClass classifies a non-200 status. The API itself always answers 200, so anything else
// comes from a proxy or a wrong endpoint: 5xx/408 are transient, 429 rate-limited, and other
// statuses (404 wrong base URL, 403 blocked) are config — no event is at fault for them.
func httpClass(status int) Class {
	switch {
	case status >= 500 || status == http.StatusRequestTimeout:
		return ClassTransient
	case status == http.StatusTooManyRequests:
		return ClassRateLimited
	case status >= 400:
		return ClassConfig
	}
	return ClassTransient // 1xx/3xx (redirects are not followed): unusable, try again
}

// redact returns err with every occurrence of sig replaced. *url.Error, which quotes the whole
// request URL, is rewritten in place; anything else that still mentions the sig is flattened
// into a message-only error (keeping context errors matchable with errors.Is).
func redact(err error, sig string) error {
	if err == nil || sig == "" {
		return err
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = strings.ReplaceAll(ue.URL, url.QueryEscape(sig), "REDACTED")
		ue.URL = strings.ReplaceAll(ue.URL, sig, "REDACTED")
	}
	msg := err.Error()
	if !strings.Contains(msg, sig) && !strings.Contains(msg, url.QueryEscape(sig)) {
		return err
	}
	msg = strings.ReplaceAll(msg, url.QueryEscape(sig), "REDACTED")
	msg = strings.ReplaceAll(msg, sig, "REDACTED")
	return &redactedError{msg: msg, cause: contextCause(err)}
}

func contextCause(err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return context.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return context.Canceled
	}
	return nil
}

type redactedError struct {
	msg   string
	cause error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.cause }
