package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/chatgroupd/chatgroupd/internal/kafkatest"
)

// The replicas' log messages a triggered step waits for (Step.On), and the figures count.
const (
	logParked   = "account parked in the retry lane"
	logUnparked = "account unparked"
	// laneHdrUnpark is the consumer's unpark-marker header (consumer/lane.go).
	laneHdrUnpark = "chatgroupd-lane-unpark"
)

var triggerMsg = map[Trigger]string{OnPark: logParked, OnUnpark: logUnparked}

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
// st.On's event after now gets sig at once; if none does within st.Within (no parked account
// on their partitions), replica st.Slot gets it then. The schedule goes on meanwhile; the
// replicas' later steps wait for it (waitArmed).
func (r *run) trigger(st Step, sig syscall.Signal) error {
	msg, ok := triggerMsg[st.On]
	if !ok {
		return fmt.Errorf("unknown trigger %q", st.On)
	}
	var watch []*logWatch
	for _, i := range st.slots() {
		if p := r.slots[i]; p != nil && !p.exited() {
			w := &logWatch{p: p}
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
		p := waitLog(watch, msg, st.Within)
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

// logWatch follows one replica's log from byte from.
type logWatch struct {
	p       *proc
	from    int64
	partial []byte
}

// waitLog returns the first of ws whose log shows a line with message msg (a prefix of it)
// within d, polling every few milliseconds; nil at d or when all have exited.
func waitLog(ws []*logWatch, msg string, d time.Duration) *proc {
	want := []byte(`"msg":"` + msg)
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(3 * time.Millisecond) {
		alive := false
		for _, w := range ws {
			if w.p.exited() {
				continue
			}
			alive = true
			if w.seen(want) {
				return w.p
			}
		}
		if !alive {
			return nil
		}
	}
	return nil
}

// seen reads what w's log has gained and reports whether it holds want.
func (w *logWatch) seen(want []byte) bool {
	f, err := os.Open(w.p.logPath)
	if err != nil {
		return false
	}
	b, _ := io.ReadAll(io.NewSectionReader(f, w.from, 1<<40))
	f.Close()
	w.from += int64(len(b))
	w.partial = append(w.partial, b...)
	if bytes.Contains(w.partial, want) {
		return true
	}
	if k := bytes.LastIndexByte(w.partial, '\n'); k >= 0 {
		w.partial = w.partial[k+1:]
	}
	return false
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
