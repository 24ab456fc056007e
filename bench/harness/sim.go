package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
)

// sim is the IM simulator of one run, served on a loopback port.
type sim struct {
	*imsim.Server
	URL string
	srv *http.Server
	rec *applyRecorder
}

// startSim serves a fresh simulator on 127.0.0.1. With rec set, successful creates are timed
// against the events' occurred_at.
func startSim(cfg imsim.Config, rec *applyRecorder) (*sim, error) {
	s, err := imsim.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("imsim: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("imsim listen: %w", err)
	}
	var h http.Handler = s
	if rec != nil {
		h = rec.wrap(s)
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln) //nolint:errcheck // ends with ErrServerClosed at close
	return &sim{Server: s, URL: "http://" + ln.Addr().String(), srv: hs, rec: rec}, nil
}

func (s *sim) close() {
	s.Server.Close() // releases hung requests first
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
}

// createStats is the create API's part of the simulator's stats.
type createStats struct {
	Total, Accepted, RateLimited, MaxWindow, Created, DuplicateCreates int
}

func (s *sim) create() createStats {
	st := s.Stats()
	c := st.APIs[im.APICreate]
	return createStats{Total: c.Total, Accepted: c.Accepted, RateLimited: c.RateLimited, MaxWindow: c.MaxWindow,
		Created: st.GroupsCreated, DuplicateCreates: st.DuplicateCreates}
}

// applyRecorder measures end-to-end latency: from an event's occurred_at to the moment the
// simulator answered its create with success. Events are known by (account, group name).
type applyRecorder struct {
	mu        sync.Mutex
	occurred  map[string]time.Time
	latencies []time.Duration
}

func newApplyRecorder() *applyRecorder { return &applyRecorder{occurred: map[string]time.Time{}} }

// expect registers an event about to be produced.
func (r *applyRecorder) expect(account, group string, at time.Time) {
	r.mu.Lock()
	r.occurred[account+"\x00"+group] = at
	r.mu.Unlock()
}

// wrap records successful creates passing through h.
func (r *applyRecorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != im.PathCreateContactGroup {
			h.ServeHTTP(w, req)
			return
		}
		body, err := io.ReadAll(io.LimitReader(req.Body, 2<<20))
		if err != nil {
			http.Error(w, "read body", http.StatusBadRequest)
			return
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		tw := &teeWriter{ResponseWriter: w}
		h.ServeHTTP(tw, req)
		done := time.Now()
		var cr im.CreateRequest
		var resp im.BaseResponse
		if json.Unmarshal(body, &cr) != nil || len(cr.GroupContactItem) != 1 || json.Unmarshal(tw.buf.Bytes(), &resp) != nil || resp.ErrorCode != 0 {
			return
		}
		key := cr.FromAccount + "\x00" + cr.GroupContactItem[0].GroupName
		r.mu.Lock()
		if at, ok := r.occurred[key]; ok {
			r.latencies = append(r.latencies, done.Sub(at))
			delete(r.occurred, key) // a second success for the same event is not a second sample
		}
		r.mu.Unlock()
	})
}

// percentiles returns p50 and p99 of the recorded latencies and their count.
func (r *applyRecorder) percentiles() (p50, p99 time.Duration, n int) {
	r.mu.Lock()
	l := slices.Clone(r.latencies)
	r.mu.Unlock()
	return percentile(l, 0.50), percentile(l, 0.99), len(l)
}

// percentile is the nearest-rank percentile of d (sorted in place); 0 for no samples.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(float64(len(d))*p+0.999999) - 1
	return d[max(0, min(i, len(d)-1))]
}

type teeWriter struct {
	http.ResponseWriter
	buf bytes.Buffer
}

func (t *teeWriter) Write(b []byte) (int, error) {
	t.buf.Write(b)
	return t.ResponseWriter.Write(b)
}
