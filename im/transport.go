package im

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/internal/logging"
)

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

// attempt is one HTTP exchange; it reports to the Observer and never lets the sig into an error.
func (c *Client) attempt(ctx context.Context, api, path, sig string, body []byte, resp any, base *BaseResponse) (e *Error) {
	start := time.Now()
	defer func() { c.report(api, time.Since(start), e) }()

	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	hreq, refused, err := c.newRequest(ctx, path, sig, body)
	if err != nil {
		return &Error{API: api, Class: ClassConfig, Err: logging.RedactError(fmt.Errorf("build request: %w", err), sig)}
	}
	hres, err := c.hc.Do(hreq)
	if r := refused.Load(); r != nil && err != nil {
		// Answered anyway (it left before the close) is an answer like any other.
		return &Error{API: api, Class: ClassTransient, Err: fmt.Errorf("request not sent: %w", *r)}
	}
	if err != nil {
		return &Error{API: api, Class: ClassTransient, Network: true, Err: logging.RedactError(err, sig)}
	}
	defer hres.Body.Close()
	data, err := io.ReadAll(io.LimitReader(hres.Body, c.cfg.MaxResponseBytes+1))
	if err != nil {
		// The request was sent; whatever the server did, we don't know the outcome.
		return &Error{API: api, Class: ClassTransient, Network: true, HTTPStatus: hres.StatusCode,
			Err: logging.RedactError(fmt.Errorf("read body: %w", err), sig)}
	}
	return decode(api, hres.StatusCode, data, c.cfg.MaxResponseBytes, resp, base)
}

// report tells the Observer about one request and logs a failed one.
func (c *Client) report(api string, took time.Duration, e *Error) {
	code := "0"
	if e != nil {
		code = e.MetricCode()
	}
	c.obs.RequestDone(api, code, took)
	if e != nil {
		c.log.Debug("im: call failed", zap.String("api", api), zap.String("code", code),
			zap.Duration("took", took), zap.String("error", e.Error()))
	}
}

// newRequest builds the signed POST of body to path. When ctx carries a SendGate, the request
// asks it right before its headers are flushed; the returned pointer then holds the gate's
// refusal, if any.
func (c *Client) newRequest(ctx context.Context, path, sig string, body []byte) (*http.Request, *atomic.Pointer[error], error) {
	q := url.Values{}
	q.Set("sdkappid", strconv.FormatInt(c.cfg.SDKAppID, 10))
	q.Set("identifier", c.cfg.Admin)
	q.Set("usersig", sig)
	q.Set("random", strconv.FormatUint(uint64(rand.Uint32()), 10))
	q.Set("contenttype", "json")
	u := c.base + path + "?" + q.Encode()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	refused := new(atomic.Pointer[error])
	if sg, ok := gateFrom(ctx).(SendGate); ok {
		hreq = guardSend(ctx, hreq, sg, refused)
	}
	hreq.Header.Set("Content-Type", "application/json")
	return hreq, refused, nil
}

// guardSend makes hreq ask sg once its headers are written and, on a refusal, store it in
// refused and close the connection before the buffer is flushed.
func guardSend(ctx context.Context, hreq *http.Request, sg SendGate, refused *atomic.Pointer[error]) *http.Request {
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
	return hreq
}
