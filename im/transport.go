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
