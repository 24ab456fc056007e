package instancelock

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestAcquireInvalid(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, dir, id, member string }{
		{"empty dir", "", "replica-0", "m"},
		{"empty id", dir, "", "m"},
		{"slash in id", dir, "../escape", "m"},
		{"backslash in id", dir, `a\b`, "m"},
		{"NUL in id", dir, "a\x00b", "m"},
		{"newline in member", dir, "replica-0", "m\nx"},
		{"space around member", dir, "replica-0", " m"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if l, _, err := Acquire(tc.dir, tc.id, tc.member); err == nil {
				l.Close()
				t.Fatalf("Acquire(%q, %q, %q) = nil error", tc.dir, tc.id, tc.member)
			}
		})
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("invalid input left files in %s: %v", dir, entries)
	}
}

// TestAcquireSameProcess walks one lock file through its life within a process: flock locks
// belong to the open file description, so a second Acquire here conflicts as one elsewhere does.
func TestAcquireSameProcess(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "locks") // Acquire creates it
	var held *Lock
	for _, step := range []struct {
		name     string
		release  bool // Close the held lock before this step
		member   string
		wantPrev string
		wantErr  error
	}{
		{name: "first", member: "m1", wantPrev: ""},
		{name: "while held", member: "m2", wantErr: ErrHeld},
		{name: "after close", release: true, member: "m2", wantPrev: "m1"},
		{name: "again", release: true, member: "m3", wantPrev: "m2"},
	} {
		if step.release {
			if err := held.Close(); err != nil {
				t.Fatal(err)
			}
			if err := held.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
		}
		l, prev, err := Acquire(dir, "replica-0", step.member)
		if step.wantErr != nil {
			if !errors.Is(err, step.wantErr) || l != nil {
				t.Fatalf("%s: Acquire = %v, %v; want %v", step.name, l, err, step.wantErr)
			}
			if !strings.Contains(err.Error(), "replica-0.lock") {
				t.Errorf("%s: error %q does not name the file", step.name, err)
			}
			continue
		}
		if err != nil || prev != step.wantPrev {
			t.Fatalf("%s: Acquire = %q, %v; want %q", step.name, prev, err, step.wantPrev)
		}
		held = l
	}
	defer held.Close()
	for name, want := range map[string]os.FileMode{dir: 0o700, held.Path(): 0o600} {
		if fi, err := os.Stat(name); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v, %v; want mode %v", name, fi.Mode(), err, want)
		}
	}
	// Another instance id is another lock.
	other, prev, err := Acquire(dir, "replica-1", "o1")
	if err != nil || prev != "" {
		t.Fatalf("other id: %q, %v", prev, err)
	}
	other.Close()
}

const (
	helperEnv    = "INSTANCELOCK_TEST_HELPER_DIR"
	helperMember = "child-member"
)

// TestHelperProcess is the child of TestAcquireAcrossProcesses, not a test: it takes the lock,
// says so, and waits to be stopped or killed.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("helper process only")
	}
	if _, _, err := Acquire(dir, "replica-0", helperMember); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("locked")
	time.Sleep(time.Hour)
}

// TestAcquireAcrossProcesses is why the package exists: a frozen holder keeps the lock, a killed
// one loses it, and the next holder learns the dead one's member id.
func TestAcquireAcrossProcesses(t *testing.T) {
	for _, tc := range []struct {
		name string
		stop bool // SIGSTOP the holder first: frozen, it must still hold the lock
	}{
		{name: "killed"},
		{name: "stopped then killed", stop: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			child := startHolder(t, dir)
			if tc.stop {
				if err := child.Process.Signal(syscall.SIGSTOP); err != nil {
					t.Fatal(err)
				}
				waitStopped(t, child.Process.Pid)
			}
			if _, _, err := Acquire(dir, "replica-0", "parent"); !errors.Is(err, ErrHeld) {
				t.Fatalf("Acquire while the child holds the lock: %v; want ErrHeld", err)
			}
			if tc.stop {
				child.Process.Signal(syscall.SIGCONT)
			}
			child.Process.Kill()
			child.Wait()
			l, prev, err := Acquire(dir, "replica-0", "parent")
			if err != nil || prev != helperMember {
				t.Fatalf("Acquire after the child died = %q, %v; want %q", prev, err, helperMember)
			}
			l.Close()
		})
	}
}

// startHolder re-runs the test binary as TestHelperProcess and returns once it holds the lock.
func startHolder(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "locked" {
		t.Fatalf("helper said %q, %v", line, err)
	}
	return cmd
}

// waitStopped waits until Linux reports pid stopped, so the Acquire that follows meets a frozen
// holder rather than one the signal has not reached yet. Elsewhere it trusts the signal.
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	stat := fmt.Sprintf("/proc/%d/stat", pid)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		b, err := os.ReadFile(stat)
		if err != nil {
			return // no procfs
		}
		// The state follows the parenthesised command name, which may hold spaces.
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 && strings.HasPrefix(string(b[i:]), ") T") {
			return
		}
	}
	t.Fatalf("pid %d not stopped after 10 s", pid)
}
