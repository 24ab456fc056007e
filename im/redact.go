package im

import (
	"context"
	"errors"
	"net/url"
	"strings"
)

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
