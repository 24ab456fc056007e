// Package logging builds chatgroupd's zap loggers: JSON for machines, console for humans, at a
// validated level. Every line is passed through a redactor so that a UserSig (which travels in
// the IM request URL) or the secret key never reaches the log, whatever field carries it.
package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/buffer"
	"go.uber.org/zap/zapcore"
)

// Formats accepted by New.
const (
	FormatJSON    = "json"
	FormatConsole = "console"
)

// Redacted replaces every secret value in logs and redacted strings.
const Redacted = "REDACTED"

// ErrInvalid is wrapped by New's errors for a bad level or format, so flag parsing can branch.
var ErrInvalid = errors.New("logging: invalid setting")

// minSecretLen keeps New from "redacting" short secrets that would match ordinary words.
const minSecretLen = 8

// New returns a logger writing to w at level ("debug", "info", "warn", "error"; empty means
// info) in format ("json", the default when empty, or "console"). Any extra secrets (the IM
// secret key) are replaced by REDACTED wherever they appear, as are usersig= query values.
func New(level, format string, w io.Writer, secrets ...string) (*zap.Logger, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	if w == nil {
		return nil, fmt.Errorf("%w: nil writer", ErrInvalid)
	}
	var enc zapcore.Encoder
	switch strings.ToLower(format) {
	case "", FormatJSON:
		cfg := zap.NewProductionEncoderConfig()
		cfg.EncodeTime = zapcore.RFC3339NanoTimeEncoder
		cfg.TimeKey = "ts"
		enc = zapcore.NewJSONEncoder(cfg)
	case FormatConsole:
		cfg := zap.NewDevelopmentEncoderConfig()
		cfg.EncodeTime = zapcore.RFC3339TimeEncoder
		cfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(cfg)
	default:
		return nil, fmt.Errorf("%w: log format %q (want json or console)", ErrInvalid, format)
	}
	r := newRedactor(secrets)
	core := zapcore.NewCore(&redactingEncoder{Encoder: enc, r: r}, zapcore.Lock(zapcore.AddSync(w)), lvl)
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(w)))), nil
}

// ParseLevel validates a level name; empty means info. Only the levels chatgroupd logs at are
// accepted, so a typo fails at startup instead of silently logging everything.
func ParseLevel(level string) (zapcore.Level, error) {
	switch strings.ToLower(level) {
	case "":
		return zapcore.InfoLevel, nil
	case "debug":
		return zapcore.DebugLevel, nil
	case "info":
		return zapcore.InfoLevel, nil
	case "warn", "warning":
		return zapcore.WarnLevel, nil
	case "error":
		return zapcore.ErrorLevel, nil
	}
	return 0, fmt.Errorf("%w: log level %q (want debug, info, warn or error)", ErrInvalid, level)
}

// sigPattern matches a usersig query parameter, raw or once URL-escaped (inside another URL),
// up to the end of its value: the next '&', or its escaped form %26. Percent escapes other than
// %26 belong to the value (url.Values.Encode writes the sig's '*' as %2A).
var sigPattern = regexp.MustCompile(`(?i)(usersig(?:=|%3D))(?:%(?:[013-9a-f][0-9a-f]|2[0-57-9a-f])|[^&%\s"'\\<>])+`)

// Redact returns s with every usersig= query value replaced by REDACTED. Use it for strings
// that leave the process other than through the logger: error texts in HTTP answers, DLQ
// headers, panics.
func Redact(s string) string {
	if !containsFold(s, "usersig") {
		return s
	}
	return sigPattern.ReplaceAllString(s, "${1}"+Redacted)
}

// RedactSecrets is Redact that also replaces every given secret, raw or query-escaped (as it
// travels in a URL). Empty secrets are ignored.
func RedactSecrets(s string, secrets ...string) string {
	for _, sec := range secrets {
		if sec == "" {
			continue
		}
		// The escaped form first: it contains pieces of the raw one.
		s = strings.ReplaceAll(s, url.QueryEscape(sec), Redacted)
		s = strings.ReplaceAll(s, sec, Redacted)
	}
	return Redact(s)
}

// RedactError returns err with RedactSecrets applied to its message; nil stays nil, and an
// error that shows no secret is returned unchanged. A *url.Error in the chain, which quotes the
// whole request URL, is rewritten in place. An error whose message had to change becomes a
// message-only error: the rest of its chain may still hold the secret (fmt.Errorf keeps the text
// it was given), so only context.Canceled and context.DeadlineExceeded stay matchable with
// errors.Is.
func RedactError(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = RedactSecrets(ue.URL, secrets...)
	}
	msg := err.Error()
	red := RedactSecrets(msg, secrets...)
	if red == msg {
		return err
	}
	return &redactedError{msg: red, cause: contextCause(err)}
}

// contextCause is the context error err wraps, if any.
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

// containsFold reports whether s contains the lower-case ASCII word sub, ignoring case,
// without allocating: most lines carry no sig and must stay cheap.
func containsFold[T string | []byte](s T, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		j := 0
		for ; j < len(sub); j++ {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != sub[j] {
				break
			}
		}
		if j == len(sub) {
			return true
		}
	}
	return false
}

// redactor rewrites encoded log lines; it runs on the final bytes so that every field type
// (strings, errors, Stringers, nested objects, With() context) is covered.
type redactor struct {
	secrets [][]byte
}

func newRedactor(secrets []string) *redactor {
	r := &redactor{}
	seen := map[string]bool{}
	for _, s := range secrets {
		if len(s) < minSecretLen {
			continue
		}
		for _, f := range secretForms(s) {
			if !seen[f] {
				seen[f] = true
				r.secrets = append(r.secrets, []byte(f))
			}
		}
	}
	// Longest first: an escaped form contains pieces of the raw one, and replacing the raw
	// bytes first would leave the escape characters around a REDACTED that no longer matches.
	sort.SliceStable(r.secrets, func(i, j int) bool { return len(r.secrets[i]) > len(r.secrets[j]) })
	return r
}

// secretForms returns the ways s can appear in an encoded line: raw (console messages), as zap's
// JSON encoder escapes it, as encoding/json escapes it (HTML-safe), as Go's %q quotes it, and
// %q's form once more JSON-escaped (an error text quoting the secret, logged as a JSON field). A
// secret holding '"', '\\', a control character or '<' differs between these, and matching the raw
// bytes alone would let it through.
func secretForms(s string) []string {
	forms := []string{s, zapJSONEscape(s)}
	if b, err := json.Marshal(s); err == nil {
		forms = append(forms, string(b[1:len(b)-1]))
	}
	q := strconv.Quote(s)
	q = q[1 : len(q)-1]
	forms = append(forms, q, zapJSONEscape(q))
	return forms
}

// zapJSONEscape returns s as zap's JSON encoder writes it inside a string value.
func zapJSONEscape(s string) string {
	enc := zapcore.NewJSONEncoder(zapcore.EncoderConfig{})
	buf, err := enc.EncodeEntry(zapcore.Entry{}, []zapcore.Field{zap.String("k", s)})
	if err != nil {
		return s
	}
	defer buf.Free()
	out := buf.String()
	const pre = `{"k":"`
	i, j := strings.Index(out, pre), strings.LastIndex(out, `"}`)
	if i < 0 || j < i+len(pre) {
		return s
	}
	return out[i+len(pre) : j]
}

// apply returns the redacted line and whether anything changed.
func (r *redactor) apply(b []byte) ([]byte, bool) {
	changed := false
	for _, s := range r.secrets {
		if bytes.Contains(b, s) {
			b = bytes.ReplaceAll(b, s, []byte(Redacted))
			changed = true
		}
	}
	if containsFold(b, "usersig") {
		b = sigPattern.ReplaceAll(b, []byte("${1}"+Redacted))
		changed = true
	}
	return b, changed
}

// redactingEncoder wraps a zapcore.Encoder and redacts each finished entry.
type redactingEncoder struct {
	zapcore.Encoder
	r *redactor
}

func (e *redactingEncoder) Clone() zapcore.Encoder {
	return &redactingEncoder{Encoder: e.Encoder.Clone(), r: e.r}
}

func (e *redactingEncoder) EncodeEntry(ent zapcore.Entry, fields []zapcore.Field) (*buffer.Buffer, error) {
	buf, err := e.Encoder.EncodeEntry(ent, fields)
	if err != nil {
		return buf, err
	}
	if out, changed := e.r.apply(buf.Bytes()); changed {
		buf.Reset()
		_, _ = buf.Write(out)
	}
	return buf, nil
}
