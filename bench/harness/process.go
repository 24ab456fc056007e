package harness

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Subject is a consumer under test, run as a child process so its CPU and memory are its own.
type Subject struct {
	Name string
	// Command is the binary and any leading arguments (e.g. ["bin/chatgroupd", "run"]); the
	// harness appends the `chatgroupd run` flags it shares with the peers, then Extra.
	Command []string
	Extra   []string
	// Fleet is set for a subject whose replicas share one budget (chatgroupd): fleet scenarios
	// run Scenario.Replicas processes of it. Other subjects run one process (their limiter is
	// per process, so more would multiply the budget).
	Fleet bool
}

// runFlags are the flags every subject gets, named as `chatgroupd run` names them.
type runFlags struct {
	Brokers   []string
	Topic     string
	Group     string
	DLQTopic  string
	Endpoint  string
	SDKAppID  int64
	RateLimit float64
}

func (f runFlags) args() []string {
	return []string{
		"--brokers", strings.Join(f.Brokers, ","), "--topic", f.Topic, "--group", f.Group, "--dlq-topic", f.DLQTopic,
		"--im-endpoint", f.Endpoint, "--sdkappid", strconv.FormatInt(f.SDKAppID, 10),
		"--rate-limit", strconv.FormatFloat(f.RateLimit, 'f', -1, 64), "--metrics-addr", "127.0.0.1:0",
		"--log-level", "warn",
	}
}

// proc is one running subject.
type proc struct {
	cmd     *exec.Cmd
	started time.Time
	exited  chan struct{}
	waitErr error
	log     *os.File
}

// startProc launches s with flags; its output goes to logPath. The child gets this process's
// environment without any CHATGROUPD_* variable (they would override flags of the subject),
// plus the secret key.
func startProc(s Subject, f runFlags, secretKey, logPath string) (*proc, error) {
	if len(s.Command) == 0 {
		return nil, fmt.Errorf("subject %s: no command", s.Name)
	}
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("subject log: %w", err)
	}
	args := append(append(append([]string{}, s.Command[1:]...), f.args()...), s.Extra...)
	cmd := exec.Command(s.Command[0], args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(withoutChatgroupdEnv(os.Environ()), "CHATGROUPD_SECRET_KEY="+secretKey)
	// Its own process group, so a Ctrl-C of the harness does not hit the child first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", s.Name, err)
	}
	p := &proc{cmd: cmd, started: time.Now(), exited: make(chan struct{}), log: lf}
	go func() {
		p.waitErr = cmd.Wait()
		lf.Close()
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// alive reports whether the process has not exited yet.
func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits up to grace, then SIGKILLs. It returns whether the process
// exited by itself in time with status 0.
func (p *proc) stop(grace time.Duration) (clean bool) {
	if !p.alive() {
		return p.waitErr == nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return p.waitErr == nil
	case <-time.After(grace):
		p.kill()
		return false
	}
}

// term sends SIGTERM and returns at once.
func (p *proc) term() {
	if p.alive() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
}

// kill sends SIGKILL and waits for the exit.
func (p *proc) kill() {
	if p.alive() {
		_ = p.cmd.Process.Kill()
	}
	<-p.exited
}

// cpu returns the CPU time (user+system) of an exited process, from wait4's rusage.
func (p *proc) cpu() time.Duration {
	if st := p.cmd.ProcessState; st != nil {
		return st.UserTime() + st.SystemTime()
	}
	return 0
}

// liveStats reads CPU time and RSS of a running process from /proc (Linux); zeros elsewhere.
type liveStats struct {
	CPU      time.Duration
	RSS, HWM int64 // bytes
}

// clockTick is USER_HZ, 100 on every Linux this runs on.
const clockTick = 10 * time.Millisecond

func readLive(pid int) (liveStats, error) {
	var ls liveStats
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ls, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return ls, errors.New("malformed /proc stat")
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 13 {
		return ls, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseInt(fields[11], 10, 64) // field 14 of stat
	st, _ := strconv.ParseInt(fields[12], 10, 64) // field 15
	ls.CPU = time.Duration(ut+st) * clockTick
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return ls, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		for _, kv := range []struct {
			name string
			dst  *int64
		}{{"VmRSS:", &ls.RSS}, {"VmHWM:", &ls.HWM}} {
			if rest, ok := strings.CutPrefix(line, kv.name); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				*kv.dst = kb * 1024
			}
		}
	}
	return ls, sc.Err()
}

// withoutChatgroupdEnv drops the CHATGROUPD_* variables from env: in a child they would
// override the flags the harness gives it.
func withoutChatgroupdEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "CHATGROUPD_") {
			out = append(out, kv)
		}
	}
	return out
}
