package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// fakeSig looks like a real UserSig (base64 with the *, -, _ substitutions).
const fakeSig = "eAEBrABT-3siVExTLnZlciI6IjIuMCIs*FAKE_SIG_abc123-xyz_"

const fakeKey = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"

func imURL(sig string) string {
	return "https://console.tim.qq.com/v4/recentcontact/create_contact_group?sdkappid=1400000000" +
		"&identifier=administrator&usersig=" + sig + "&random=42&contenttype=json"
}

type stringer string

func (s stringer) String() string { return string(s) }

func TestNewRedactsUserSigEverywhere(t *testing.T) {
	for _, format := range []string{"json", "console"} {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			log, err := New("debug", format, &buf, fakeKey)
			if err != nil {
				t.Fatal(err)
			}
			u := imURL(fakeSig)
			urlErr := &url.Error{Op: "Post", URL: u, Err: errors.New("context deadline exceeded")}
			log.Info("message "+u, zap.String("url", u))
			log.Warn("call failed", zap.Error(fmt.Errorf("im: create: %w", urlErr)))
			log.Error("stringer", zap.Stringer("u", stringer(u)), zap.Any("any", map[string]string{"u": u}))
			log.With(zap.String("ctx", u)).Debug("with context")
			log.Info("escaped", zap.String("nested", "https://proxy/?target="+url.QueryEscape(u)))
			log.Info("last param", zap.String("u", "https://x/v4?usersig="+fakeSig))
			log.Info("upper", zap.String("u", "https://x/v4?UserSig="+fakeSig+"&a=b"))
			log.Info("key", zap.String("k", fakeKey), zap.Error(errors.New("bad key "+fakeKey)))
			_ = log.Sync()

			out := buf.String()
			if n := strings.Count(out, "\n"); n != 8 {
				t.Fatalf("want 8 lines, got %d:\n%s", n, out)
			}
			if strings.Contains(out, "FAKE_SIG") || strings.Contains(out, fakeSig) {
				t.Errorf("sig leaked into the log:\n%s", out)
			}
			if strings.Contains(out, fakeKey) {
				t.Errorf("secret key leaked into the log:\n%s", out)
			}
			if !strings.Contains(out, "usersig="+Redacted) {
				t.Errorf("no redaction marker in:\n%s", out)
			}
			// The rest of the URL survives: operators still need to see which API and app.
			if !strings.Contains(out, "create_contact_group?sdkappid=1400000000") || !strings.Contains(out, "random=42") {
				t.Errorf("redaction ate more than the sig:\n%s", out)
			}
		})
	}
}

func TestNewJSONIsValidJSONPerLine(t *testing.T) {
	var buf bytes.Buffer
	log, err := New("", "", &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("dead letter", zap.String("reason", "rejected"), zap.String("url", imURL(fakeSig)))
	log.Debug("hidden at info")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want 1 line at the default info level, got %d: %q", len(lines), buf.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatalf("not JSON: %v: %s", err, lines[0])
	}
	for _, k := range []string{"ts", "level", "msg", "reason", "url"} {
		if _, ok := m[k]; !ok {
			t.Errorf("key %q missing from %s", k, lines[0])
		}
	}
	if m["level"] != "info" || m["msg"] != "dead letter" {
		t.Errorf("unexpected entry %v", m)
	}
	if !strings.Contains(m["url"].(string), "usersig="+Redacted+"&random=42") {
		t.Errorf("url not redacted in place: %v", m["url"])
	}
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		level, format string
		wantErr       bool
		enabled       zapcore.Level
	}{
		{"", "", false, zapcore.InfoLevel},
		{"debug", "json", false, zapcore.DebugLevel},
		{"INFO", "console", false, zapcore.InfoLevel},
		{"warn", "JSON", false, zapcore.WarnLevel},
		{"warning", "json", false, zapcore.WarnLevel},
		{"error", "json", false, zapcore.ErrorLevel},
		{"verbose", "json", true, 0},
		{"fatal", "json", true, 0},
		{"info", "logfmt", true, 0},
		{"info", "text", true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.level+"/"+tt.format, func(t *testing.T) {
			log, err := New(tt.level, tt.format, &bytes.Buffer{})
			if tt.wantErr {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("want ErrInvalid, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !log.Core().Enabled(tt.enabled) || (tt.enabled > zapcore.DebugLevel && log.Core().Enabled(tt.enabled-1)) {
				t.Errorf("level %q: core not enabled exactly from %v", tt.level, tt.enabled)
			}
		})
	}
	if _, err := New("info", "json", nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("nil writer: want ErrInvalid, got %v", err)
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"no secrets here", "no secrets here"},
		{"?usersig=abc&x=1", "?usersig=" + Redacted + "&x=1"},
		{"?USERSIG=abc", "?USERSIG=" + Redacted},
		{`Post "https://h/v4/a?usersig=a*b-c_d": EOF`, `Post "https://h/v4/a?usersig=` + Redacted + `": EOF`},
		{"target=https%3A%2F%2Fh%2F%3Fusersig%3Dabc%26x%3D1", "target=https%3A%2F%2Fh%2F%3Fusersig%3D" + Redacted + "%26x%3D1"},
		{"a usersig=1 and usersig=2", "a usersig=" + Redacted + " and usersig=" + Redacted},
		{"usersig is a word", "usersig is a word"},
		{"?usersig=eAEB%2Aab%2Dc&random=1", "?usersig=" + Redacted + "&random=1"},
		{"?usersig=%26", "?usersig=%26"},
	}
	for _, tt := range tests {
		if got := Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRedactError(t *testing.T) {
	if RedactError(nil, fakeSig) != nil {
		t.Fatal("nil must stay nil")
	}
	plain := errors.New("plain")
	if RedactError(plain, fakeSig) != plain {
		t.Error("an error without a sig must be returned unchanged")
	}
	// A request URL in a *url.Error, as the IM client's transport returns it: rewritten in place,
	// and context errors stay matchable.
	ue := &url.Error{Op: "Post", URL: "http://h/p?usersig=" + url.QueryEscape(fakeSig) + "&x=1", Err: context.DeadlineExceeded}
	err := RedactError(ue, fakeSig)
	if strings.Contains(err.Error(), url.QueryEscape(fakeSig)) || !strings.Contains(err.Error(), "usersig="+Redacted) ||
		!errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("url.Error: %v", err)
	}
	if strings.Contains(ue.URL, url.QueryEscape(fakeSig)) {
		t.Errorf("url.Error.URL not rewritten: %s", ue.URL)
	}
	// The sig outside a usersig= parameter, in a wrapped error whose text fmt.Errorf fixed
	// before: redacted by value, and no error left in the chain shows it.
	err = RedactError(fmt.Errorf("wrapped: %w", errors.New("saw "+fakeSig)), fakeSig)
	if !strings.Contains(err.Error(), Redacted) {
		t.Errorf("plain: %v", err)
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		if strings.Contains(e.Error(), fakeSig) {
			t.Errorf("sig left in the chain: %q", e.Error())
		}
	}
	// Without the sig's value, the usersig= pattern still applies.
	err = RedactError(&url.Error{Op: "Post", URL: imURL(fakeSig), Err: context.Canceled})
	if strings.Contains(err.Error(), fakeSig) || !errors.Is(err, context.Canceled) {
		t.Errorf("pattern only: %v", err)
	}
}

func TestRedactSecrets(t *testing.T) {
	tests := []struct{ in, want string }{
		{"key " + fakeKey + " used", "key " + Redacted + " used"},
		{"q=" + url.QueryEscape(fakeSig), "q=" + Redacted},
		{imURL("other"), imURL(Redacted)},
		{"nothing", "nothing"},
	}
	for _, tt := range tests {
		if got := RedactSecrets(tt.in, fakeKey, fakeSig, ""); got != tt.want {
			t.Errorf("RedactSecrets(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func FuzzRedact(f *testing.F) {
	f.Add("https://h/v4?usersig=" + fakeSig + "&random=1")
	f.Add("usersig%3Dabc")
	f.Add("plain text")
	f.Fuzz(func(t *testing.T, s string) {
		out := Redact(s)
		if Redact(out) != out {
			t.Fatalf("not idempotent: %q -> %q -> %q", s, out, Redact(out))
		}
		if !containsFold(s, "usersig") && out != s {
			t.Fatalf("changed a string without usersig: %q -> %q", s, out)
		}
	})
}

func ExampleRedact() {
	fmt.Println(Redact("POST https://console.tim.qq.com/v4/recentcontact/create_contact_group?sdkappid=1&usersig=eJw1j*secret_&random=7"))
	// Output: POST https://console.tim.qq.com/v4/recentcontact/create_contact_group?sdkappid=1&usersig=REDACTED&random=7
}

// TestNewRedactsEscapedSecrets: a secret holding characters the encoders escape ('"', '\',
// control characters, '<', non-ASCII) is redacted in every form it takes on the line — as a
// field, in a message, quoted with %q inside an error, in a reflected map — in both formats.
// Matching the raw bytes only (as before) leaks all but the first of these keys.
func TestNewRedactsEscapedSecrets(t *testing.T) {
	keys := []string{
		`abc"def\ghi-0123456789`,
		"tab\tnew\nline-0123456789",
		`<script>&amp;-0123456789`,
		"ключ-секрет-\u2028-0123456789",
		`\\"\"""\\-0123456789`,
	}
	for _, key := range keys {
		for _, format := range []string{"json", "console"} {
			var buf bytes.Buffer
			log, err := New("debug", format, &buf, key)
			if err != nil {
				t.Fatal(err)
			}
			log.Info("message with the key " + key)
			log.Info("field", zap.String("k", key))
			log.Warn("quoted", zap.Error(fmt.Errorf("bad key %q", key)))
			log.Info("reflected", zap.Any("m", map[string]string{"k": key}))
			log.Info("quoted field", zap.String("q", fmt.Sprintf("%q", key)))
			_ = log.Sync()
			out := buf.String()
			quoted := strconv.Quote(key)
			for _, leak := range []string{key, quoted[1 : len(quoted)-1]} {
				if strings.Contains(out, leak) {
					t.Errorf("%s: key %q leaked in form %q:\n%s", format, key, leak, out)
				}
			}
			if format != "json" {
				continue
			}
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				var m map[string]any
				if err := json.Unmarshal([]byte(line), &m); err != nil {
					t.Fatalf("line is not JSON after redaction: %v\n%s", err, line)
				}
				walk(m, func(s string) {
					if strings.Contains(s, key) || strings.Contains(s, quoted[1:len(quoted)-1]) {
						t.Errorf("key %q readable after decoding the JSON line: %q", key, s)
					}
				})
			}
		}
	}
}

func walk(v any, f func(string)) {
	switch x := v.(type) {
	case string:
		f(x)
	case map[string]any:
		for _, e := range x {
			walk(e, f)
		}
	case []any:
		for _, e := range x {
			walk(e, f)
		}
	}
}
