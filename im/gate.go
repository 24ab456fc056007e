package im

import "context"

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
