package imcheck

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/chatgroupd/chatgroupd/internal/logging"
)

// Format names the transcript layout. A change that breaks readers of recorded transcripts
// (fixtures) must bump it.
const Format = "chatgroupd-imcheck/v1"

// Redacted replaces the UserSig wherever the transcript would show it.
const Redacted = logging.Redacted

// maxRecordedBody caps a recorded response body; the API's answers are far smaller, and a
// misdirected endpoint must not blow up the transcript.
const maxRecordedBody = 1 << 20

// Transcript is everything one probe run sent and received, and what it concluded. Its JSON
// form is stable (see Format): a transcript recorded against the real API can be committed as a
// fixture the simulator must reproduce.
type Transcript struct {
	Format       string        `json:"format"`
	Target       string        `json:"target"`
	SDKAppID     int64         `json:"sdkappid"`
	Admin        string        `json:"admin"`
	Accounts     []string      `json:"accounts"`
	Prefix       string        `json:"prefix"` // every group the probe creates starts with it
	Started      time.Time     `json:"started"`
	Calls        []Call        `json:"calls"`
	Observations []Observation `json:"observations"`
	// Cleanup lists groups the probe created and could not delete (empty after a clean run).
	Leftover []string `json:"leftover"`
}

// Call is one HTTP exchange. The UserSig never appears: Query shows it as Redacted, and error
// texts have it replaced.
type Call struct {
	Seq        int               `json:"seq"`
	Step       string            `json:"step"`
	API        string            `json:"api"`
	Query      map[string]string `json:"query"`
	Request    json.RawMessage   `json:"request"`
	HTTPStatus int               `json:"http_status,omitempty"`
	// Response is the body as sent: JSON when it parses, else a JSON string of it.
	Response json.RawMessage `json:"response,omitempty"`
	Error    string          `json:"error,omitempty"`
}

// Observation is what the probe concluded about one assumption. Value is comparable across
// runs (no ids, counts of calls or times); IMSimFlags are the simulator flags that reproduce it.
type Observation struct {
	ID         string   `json:"id"`
	Assumption string   `json:"assumption"`
	Probed     bool     `json:"probed"`
	Value      string   `json:"value"`
	IMSimFlags []string `json:"imsim_flags,omitempty"`
}

type stepKey struct{}

// withStep labels the calls made with ctx in the transcript.
func withStep(ctx context.Context, step string) context.Context {
	return context.WithValue(ctx, stepKey{}, step)
}

type unpacedKey struct{}

// unpaced marks calls that skip the --rate pacing (the rate-window probe's bursts).
func unpaced(ctx context.Context) context.Context { return context.WithValue(ctx, unpacedKey{}, true) }

// recorder is the probe's HTTP transport: it paces calls, and records each exchange.
type recorder struct {
	next   http.RoundTripper
	pace   *rate.Limiter // nil: unpaced
	onCall func(n int)

	mu    sync.Mutex
	calls []Call
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if r.pace != nil && ctx.Value(unpacedKey{}) == nil {
		if err := r.pace.Wait(ctx); err != nil {
			return nil, fmt.Errorf("imcheck pace: %w", err)
		}
	}
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("imcheck: read request body: %w", err)
		}
		body = b
		req.Body = io.NopCloser(bytes.NewReader(b))
	}
	q := req.URL.Query()
	sig := q.Get("usersig")
	c := Call{API: path.Base(req.URL.Path), Query: map[string]string{}, Request: rawJSON(body)}
	if s, ok := ctx.Value(stepKey{}).(string); ok {
		c.Step = s
	}
	for _, k := range []string{"sdkappid", "identifier", "contenttype"} {
		if v := q.Get(k); v != "" {
			c.Query[k] = v
		}
	}
	if sig != "" {
		c.Query["usersig"] = Redacted
	}
	resp, err := r.next.RoundTrip(req)
	if err != nil {
		c.Error = logging.RedactSecrets(err.Error(), sig)
		r.add(c)
		return nil, err
	}
	data, rerr := io.ReadAll(io.LimitReader(resp.Body, maxRecordedBody+1))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(data))
	c.HTTPStatus = resp.StatusCode
	c.Response = rawJSON(data)
	if rerr != nil {
		c.Error = logging.RedactSecrets(rerr.Error(), sig)
		resp.Body = io.NopCloser(io.MultiReader(bytes.NewReader(data), errReader{rerr}))
	}
	r.add(c)
	return resp, nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func (r *recorder) add(c Call) {
	r.mu.Lock()
	c.Seq = len(r.calls) + 1
	r.calls = append(r.calls, c)
	n := len(r.calls)
	r.mu.Unlock()
	if r.onCall != nil {
		r.onCall(n)
	}
}

func (r *recorder) snapshot() []Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Call(nil), r.calls...)
}

// rawJSON returns b when it is one JSON value, else b as a JSON string (an HTML 502 page).
func rawJSON(b []byte) json.RawMessage {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil
	}
	if json.Valid(b) {
		var buf bytes.Buffer
		if json.Compact(&buf, b) == nil {
			return buf.Bytes()
		}
	}
	s, _ := json.Marshal(string(b)) // a string always marshals
	return s
}

// WriteJSON writes t as indented JSON with one call per line, so that a committed fixture
// diffs call by call.
func (t *Transcript) WriteJSON(w io.Writer) error {
	head := *t
	head.Calls = nil
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(head); err != nil {
		return fmt.Errorf("imcheck transcript: %w", err)
	}
	var calls bytes.Buffer
	calls.WriteString(`"calls": [`)
	for i, c := range t.Calls {
		var line bytes.Buffer
		ce := json.NewEncoder(&line)
		ce.SetEscapeHTML(false)
		if err := ce.Encode(c); err != nil {
			return fmt.Errorf("imcheck transcript: %w", err)
		}
		if i > 0 {
			calls.WriteString(",")
		}
		calls.WriteString("\n    ")
		calls.Write(bytes.TrimRight(line.Bytes(), "\n"))
	}
	if len(t.Calls) > 0 {
		calls.WriteString("\n  ")
	}
	calls.WriteString("]")
	out := bytes.Replace(b.Bytes(), []byte(`"calls": null`), calls.Bytes(), 1)
	if _, err := w.Write(out); err != nil {
		return fmt.Errorf("imcheck transcript: %w", err)
	}
	return nil
}

// ErrFormat is returned by ReadTranscript for a transcript of another format.
var ErrFormat = errors.New("imcheck transcript: unknown format")

// ReadTranscript decodes a transcript WriteJSON wrote, refusing other formats and unknown fields.
func ReadTranscript(rd io.Reader) (*Transcript, error) {
	dec := json.NewDecoder(rd)
	dec.DisallowUnknownFields()
	var t Transcript
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("imcheck transcript: %w", err)
	}
	if t.Format != Format {
		return nil, fmt.Errorf("%w %q (want %q)", ErrFormat, t.Format, Format)
	}
	if len(t.Accounts) < 1 || len(t.Accounts) > 2 || t.Accounts[0] == "" {
		return nil, fmt.Errorf("imcheck transcript: %d accounts, want one or two", len(t.Accounts))
	}
	return &t, nil
}
