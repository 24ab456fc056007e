package harness

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// RaisePriority lowers the nice value of every thread of this process by n (Linux keeps nice per
// thread; threads started later inherit it). The harness holds the simulator, whose clock is what
// the one-second windows are measured with: on a busy shared machine a starved simulator reads
// requests late and in bursts, and counts windows over the limit that no client sent. It needs
// root (CAP_SYS_NICE); it returns the error otherwise and changes nothing.
func RaisePriority(n int) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("priority: %w", err)
	}
	cur, err := syscall.Getpriority(syscall.PRIO_PROCESS, 0)
	if err != nil {
		return fmt.Errorf("priority: %w", err)
	}
	// The raw syscall returns 20-nice.
	nice := 20 - cur
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, nice-n); err != nil {
			return fmt.Errorf("priority: thread %d: %w", tid, err)
		}
	}
	return nil
}

// Deprioritised returns s run through nice(1) at +n, undoing RaisePriority(n) for the child so
// that subjects run at the priority the harness was started with. nice execs the subject in
// place: the pid, CPU time and memory measured are the subject's.
func (s Subject) Deprioritised(n int) Subject {
	s.Command = append([]string{"nice", "-n", strconv.Itoa(n)}, s.Command...)
	return s
}
