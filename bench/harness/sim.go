package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
)

// sim is the IM simulator of one run, served on a loopback port, in this process or in a
// child process of its own.
type sim struct {
	URL   string
	stats func(context.Context) (imsim.Stats, error)
	// calls reads the call log (imsim.Config.CallLog).
	calls func(context.Context) ([]imsim.Call, error)
	stop  func()
	last  createStats
}

// startSim serves a fresh simulator on 127.0.0.1 inside the harness. With rec set, successful
// creates are timed against the events' occurred_at; with fault set, its accounts' creates fail
// before they reach the simulator; with stateFile set, it starts from the groups in that file
// (imsim.Server.LoadState).
func startSim(cfg imsim.Config, rec *applyRecorder, fault *accountFault, stateFile string) (*sim, error) {
	s, err := imsim.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("imsim: %w", err)
	}
	if stateFile != "" {
		if err := s.LoadState(stateFile); err != nil {
			return nil, fmt.Errorf("imsim: %w", err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("imsim listen: %w", err)
	}
	var h http.Handler = s
	if rec != nil {
		h = rec.wrap(s)
	}
	if fault != nil {
		h = fault.wrap(h)
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln) //nolint:errcheck // ends with ErrServerClosed at close
	return &sim{
		URL:   "http://" + ln.Addr().String(),
		stats: func(context.Context) (imsim.Stats, error) { return s.Stats(), nil },
		calls: func(context.Context) ([]imsim.Call, error) { return s.Calls(), nil },
		stop: func() {
			s.Close() // releases hung requests first
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = hs.Shutdown(ctx)
		},
	}, nil
}

// simProcessStartup bounds how long a simulator process may take to print its address.
const simProcessStartup = 15 * time.Second

// startSimProcess runs the simulator as `<command> --addr 127.0.0.1:0 ...` (command is, say,
// ["bin/chatgroupd", "imsim"]) and reads its counters from /admin/stats. Its log goes to
// logPath. Only the settings a scenario uses are passed on: the app, the key, the rate limit,
// the latency, the seed, the call log and (when set) the state file to start from.
//
// In a process of its own the simulator's clock, which the one-second windows are counted
// with, no longer waits for the embedded Kafka's goroutines: in this process a request could
// sit read-ready for several milliseconds behind them (Go preempts a busy goroutine only every
// 10 ms), so calls sent more than a second apart were counted in one window. The real API does
// not share a CPU with our broker either.
func startSimProcess(command []string, cfg imsim.Config, logPath, stateFile string) (*sim, error) {
	return startSimProcessWithin(command, cfg, logPath, stateFile, simProcessStartup)
}

// startSimProcessWithin is startSimProcess with the bound on its start-up.
func startSimProcessWithin(command []string, cfg imsim.Config, logPath, stateFile string, startup time.Duration) (*sim, error) {
	if len(command) == 0 {
		return nil, errors.New("imsim process: no command")
	}
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("imsim log: %w", err)
	}
	args := append(append([]string{}, command[1:]...),
		"--addr", "127.0.0.1:0", "--sdkappid", strconv.FormatInt(cfg.SDKAppID, 10),
		"--rate-limit", strconv.Itoa(cfg.RateLimit), "--latency", cfg.Faults.Latency.String(),
		"--seed", strconv.FormatUint(cfg.Seed, 10), "--log-level", "warn", "--admin-api")
	if cfg.CallLog {
		args = append(args, "--call-log")
	}
	if stateFile != "" {
		args = append(args, "--state-file", stateFile)
	}
	cmd := exec.Command(command[0], args...)
	cmd.Env = append(withoutChatgroupdEnv(os.Environ()), "CHATGROUPD_SECRET_KEY="+cfg.SecretKey)
	cmd.Stderr = lf
	out, err := cmd.StdoutPipe()
	if err != nil {
		lf.Close()
		return nil, fmt.Errorf("imsim process: %w", err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("imsim process: start %s: %w", command[0], err)
	}
	exited := make(chan struct{})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "imsim listening on "); ok {
				select {
				case addr <- u:
				default:
				}
			}
		}
	}()
	go func() {
		_ = cmd.Wait()
		lf.Close()
		close(exited)
	}()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	var url string
	select {
	case url = <-addr:
	case <-exited:
		return nil, fmt.Errorf("imsim process: exited before listening (log: %s)", logPath)
	case <-time.After(startup):
		stop()
		return nil, fmt.Errorf("imsim process: no address within %v (log: %s)", startup, logPath)
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	return &sim{URL: url, stop: stop, stats: func(ctx context.Context) (imsim.Stats, error) {
		return fetchStats(ctx, hc, url)
	}, calls: func(ctx context.Context) ([]imsim.Call, error) {
		return fetchCalls(ctx, url)
	}}, nil
}

// fetchCalls reads a simulator's /admin/calls (it needs --call-log).
func fetchCalls(ctx context.Context, base string) ([]imsim.Call, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/admin/calls", nil)
	if err != nil {
		return nil, fmt.Errorf("imsim calls: %w", err)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("imsim calls: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("imsim calls: HTTP %d", resp.StatusCode)
	}
	var calls []imsim.Call
	if err := json.NewDecoder(resp.Body).Decode(&calls); err != nil {
		return nil, fmt.Errorf("imsim calls: %w", err)
	}
	return calls, nil
}

// fetchStats reads a simulator's /admin/stats.
func fetchStats(ctx context.Context, hc *http.Client, base string) (imsim.Stats, error) {
	var st imsim.Stats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/admin/stats", nil)
	if err != nil {
		return st, fmt.Errorf("imsim stats: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return st, fmt.Errorf("imsim stats: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("imsim stats: HTTP %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("imsim stats: %w", err)
	}
	return st, nil
}

func (s *sim) close() { s.stop() }

// createStats is the create API's part of the simulator's stats.
type createStats struct {
	Total, Accepted, RateLimited, MaxWindow, Created, DuplicateCreates int
}

// create reads the create API's counters. A simulator process that does not answer keeps the
// last counters it gave: a missed sample only makes the next one cover a longer time.
func (s *sim) create(ctx context.Context) createStats {
	st, err := s.stats(ctx)
	if err != nil {
		return s.last
	}
	c := st.APIs[im.APICreate]
	s.last = createStats{Total: c.Total, Accepted: c.Accepted, RateLimited: c.RateLimited, MaxWindow: c.MaxWindow,
		Created: st.GroupsCreated, DuplicateCreates: st.DuplicateCreates}
	return s.last
}

// applyRecorder measures end-to-end latency: from an event's occurred_at to the moment the
// simulator answered its create with success. Events are known by (account, group name).
type applyRecorder struct {
	mu        sync.Mutex
	occurred  map[string]time.Time
	latencies []time.Duration
	last      time.Time // when the latest sample was applied
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
			r.last = done
			delete(r.occurred, key) // a second success for the same event is not a second sample
		}
		r.mu.Unlock()
	})
}

// lastApplied is when the latest sample was applied (zero before the first).
func (r *applyRecorder) lastApplied() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
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
