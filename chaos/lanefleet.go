package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
)

// The replicas' log messages a triggered step waits for (Step.On), and the figures count.
const (
	logParked   = "account parked in the retry lane"
	logUnparked = "account unparked"
	// logSucceeding is what a fleet-budget successor logs when it counts its dead
	// predecessor's calls as its own (budget.Runner).
	logSucceeding = "budget: succeeding the previous member of this instance"
	// laneHdrUnpark is the consumer's unpark-marker header (consumer/lane.go).
	laneHdrUnpark = "chatgroupd-lane-unpark"
)

var triggerMsg = map[Trigger]string{OnPark: logParked, OnUnpark: logUnparked}

// An OnCalls trigger fires once a replica has written callsBurst create requests within
// callsSpan, counted from when the step was armed: it called at about its full share of the
// budget (200/3 here) in the last second, and its last calls are as recent as they get. A replica
// that spreads its calls evenly gets there about 0.8 s after the arming; one that writes its
// second's calls in one bunch (its limiter lets them out as its calls of the window before age
// out, about 66 within 100-200 ms once a second, and hardly any in between) near the end of its
// next bunch, where a kill at a fixed time would find the last bunch anywhere up to a second old.
// Below that share the step acts at its deadline.
const (
	callsBurst = 50
	callsSpan  = time.Second
)

// matcher is a triggered step's log event in one replica's log: fed the lines the replica
// logged since the last look, at now, it reports whether the event has happened.
type matcher func(lines [][]byte, now time.Time) bool

// newMatcher returns a matcher of trigger on for one replica.
func newMatcher(on Trigger) (matcher, error) {
	if msg, ok := triggerMsg[on]; ok {
		want := []byte(`"msg":"` + msg)
		return func(lines [][]byte, _ time.Time) bool {
			return slices.ContainsFunc(lines, func(l []byte) bool { return bytes.Contains(l, want) })
		}, nil
	}
	if on != OnCalls {
		return nil, fmt.Errorf("unknown trigger %q", on)
	}
	write, create := []byte(`"msg":"request written"`), []byte(`"api":"`+im.APICreate+`"`)
	var seen []time.Time // when each create write still within callsSpan was seen
	return func(lines [][]byte, now time.Time) bool {
		for _, l := range lines {
			if bytes.Contains(l, write) && bytes.Contains(l, create) {
				seen = append(seen, now)
			}
		}
		cut := now.Add(-callsSpan)
		i := 0
		for i < len(seen) && seen[i].Before(cut) {
			i++
		}
		seen = seen[i:]
		return len(seen) >= callsBurst
	}, nil
}

// laneTopic is the run's retry-lane topic.
func (r *run) laneTopic() string { return r.topic + ".retry" }

// waitArmed waits until slot's triggered step, if any, has acted.
func (r *run) waitArmed(slot int) {
	if done := r.armed[slot]; done != nil {
		<-done
		delete(r.armed, slot)
	}
}

// slots are the replicas a start, stop, kill, pause or resume step is about: Slots, else Slot.
func (st Step) slots() []int {
	if len(st.Slots) > 0 {
		return st.Slots
	}
	return []int{st.Slot}
}

// trigger arms st, a stop, kill or pause with On: the first of its replicas whose log shows
// st.On's event after now gets sig at once; if none does within st.Within (for a lane event, no
// parked account on their partitions), replica st.Slot gets it then. The schedule goes on
// meanwhile; the replicas' later steps wait for it (waitArmed).
func (r *run) trigger(st Step, sig syscall.Signal) error {
	if _, err := newMatcher(st.On); err != nil {
		return err
	}
	var watch []*logWatch
	for _, i := range st.slots() {
		if p := r.slots[i]; p != nil && !p.exited() {
			match, _ := newMatcher(st.On) // one per replica: a matcher may count
			w := &logWatch{p: p, match: match}
			if fi, err := os.Stat(p.logPath); err == nil {
				w.from = fi.Size()
			}
			watch = append(watch, w)
		}
	}
	if len(watch) == 0 {
		r.cfg.Logf("%v on %s: replicas %v already gone", sig, st.On, st.slots())
		return nil
	}
	done := make(chan struct{})
	for _, i := range st.slots() {
		r.armed[i] = done
	}
	fallback := r.slots[st.Slot]
	go func() {
		defer close(done)
		p := waitLog(watch, st.Within)
		hit := p != nil
		if hit {
			r.triggered.Add(1)
		} else {
			r.triggerMissed.Add(1)
			p = fallback
		}
		r.cfg.Logf("signal %d (%v) to %s: %s logged: %v (within %v)", sig, sig, p.name, st.On, hit, st.Within)
		if !p.exited() {
			_ = r.signalProc(p, sig)
		}
	}()
	return nil
}

// bringBack is the start or resume after a triggered step with Slots: it starts every one of
// them whose process was stopped or killed, or resumes every one (SIGCONT harms none running).
func (r *run) bringBack(ctx context.Context, st Step) error {
	for _, i := range st.Slots {
		p := r.slots[i]
		switch {
		case st.Kind == KindResume:
			if p != nil && !p.exited() {
				_ = p.cmd.Process.Signal(syscall.SIGCONT)
			}
		case p == nil || p.exited() || p.termed.Load() || p.killed.Load():
			if err := r.start(ctx, i); err != nil {
				return err
			}
		}
	}
	return nil
}

// logWatch follows one replica's log from byte from, for match.
type logWatch struct {
	p       *proc
	match   matcher
	from    int64
	partial []byte
}

// waitLog returns the first of ws whose log shows its event within d, polling every few
// milliseconds; nil at d or when all have exited.
func waitLog(ws []*logWatch, d time.Duration) *proc {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(3 * time.Millisecond) {
		alive := false
		for _, w := range ws {
			if w.p.exited() {
				continue
			}
			alive = true
			if w.match(w.lines(), time.Now()) {
				return w.p
			}
		}
		if !alive {
			return nil
		}
	}
	return nil
}

// lines reads what w's log has gained and returns the lines it completed.
func (w *logWatch) lines() [][]byte {
	f, err := os.Open(w.p.logPath)
	if err != nil {
		return nil
	}
	b, _ := io.ReadAll(io.NewSectionReader(f, w.from, 1<<40))
	f.Close()
	w.from += int64(len(b))
	w.partial = append(w.partial, b...)
	k := bytes.LastIndexByte(w.partial, '\n')
	if k < 0 {
		return nil
	}
	done := bytes.Split(w.partial[:k], []byte{'\n'})
	w.partial = slices.Clone(w.partial[k+1:])
	return done
}

// countLogs counts the lines of every replica log in dir whose message starts with msg.
func countLogs(dir, msg string) int {
	n := 0
	scanReplicaLogs(dir, func(b []byte) {
		var line struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal(b, &line) == nil && strings.HasPrefix(line.Msg, msg) {
			n++
		}
	})
	return n
}

// laneCounts reads the retry lane: its records and its markers.
func (r *run) laneCounts(ctx context.Context) (records, markers int, err error) {
	msgs, err := kafkatest.ReadAll(ctx, r.cfg.Brokers, r.laneTopic())
	if err != nil {
		return 0, 0, fmt.Errorf("chaos: read %s: %w", r.laneTopic(), err)
	}
	for _, m := range msgs {
		marker := false
		for _, h := range m.Headers {
			marker = marker || h.Key == laneHdrUnpark
		}
		if marker {
			markers++
		} else {
			records++
		}
	}
	return records, markers, nil
}
