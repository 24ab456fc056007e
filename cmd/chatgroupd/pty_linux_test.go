//go:build linux

package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/internal/testwait"
	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair cols columns wide: what the demo writes to tty, the test
// reads from ptm, as a terminal would receive it.
func openPTY(t *testing.T, cols int) (ptm, tty *os.File) {
	t.Helper()
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(ptm.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptm.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetWinsize(int(tty.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: uint16(cols)}); err != nil {
		t.Fatal(err)
	}
	return ptm, tty
}

// terminalRows replays out on a terminal cols wide with auto-wrap, and returns how many times the
// cursor moved down (newlines and wraps) and the longest redraw in columns.
func terminalRows(out []byte, cols int) (rows, widest int) {
	col := 0
	esc := regexp.MustCompile(`^\x1b\[[0-9;]*[A-Za-z]`)
	for i := 0; i < len(out); i++ {
		switch c := out[i]; {
		case c == '\r':
			col = 0
		case c == '\n':
			rows++
			col = 0
		case c == 0x1b:
			if m := esc.Find(out[i:]); m != nil {
				i += len(m) - 1
			}
		case c < 0x20:
		default:
			if col == cols { // a character written past the last column wraps
				rows++
				col = 0
			}
			col++
			widest = max(widest, col)
		}
	}
	return rows, widest
}

// TestDemoProgressOnPTY runs the demo with its output on a pseudo-terminal 80 and 160 columns
// wide: each redraw must replace the previous one on the same line — the progress phase moves
// the cursor down exactly once (the newline that ends it), nothing is wrapped, no redraw
// reaches the last column. The old 138-column line wrapped on every redraw at 80 columns.
func TestDemoProgressOnPTY(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo twice")
	}
	for _, cols := range []int{80, 160} {
		t.Run(fmt.Sprint(cols), func(t *testing.T) {
			ptm, tty := openPTY(t, cols)
			defer ptm.Close()
			var got bytes.Buffer
			copied := make(chan struct{})
			go func() { _, _ = io.Copy(&got, ptm); close(copied) }()
			ctx := testwait.Context(t, 2*time.Minute)
			err := run(ctx, []string{"demo", "--count", "500", "--accounts", "10", "--latency", "1ms", "--jitter", "1ms",
				"--fault-rate", "0", "--seed", "3", "--timeout", "90s", "--rate-limit", "180"}, mapEnv(map[string]string{"COLUMNS": "999"}), tty, io.Discard)
			tty.Close()
			<-copied // EIO once the terminal side is closed and drained
			if err != nil {
				t.Fatalf("demo: %v\n%s", err, got.String())
			}
			out := got.Bytes()
			first := bytes.IndexByte(out, '\n') + 1 // after the header line
			end := bytes.Index(out, []byte("SUMMARY"))
			if first <= 0 || end < first {
				t.Fatalf("no progress redraws before the summary:\n%q", out)
			}
			phase := out[first:end]
			redraws := bytes.Count(phase, []byte("\x1b[K"))
			// The pty turns "\n" into "\r\n"; the summary starts after a blank line.
			rows, widest := terminalRows(phase, cols)
			t.Logf("%d columns: %d redraws, widest %d columns, cursor moved down %d times", cols, redraws, widest, rows)
			if redraws < 5 {
				t.Fatalf("only %d redraws:\n%q", redraws, phase)
			}
			if widest > cols-1 {
				t.Errorf("a redraw is %d columns wide on a %d-column terminal", widest, cols)
			}
			if cols >= 140 && !bytes.Contains(phase, []byte("produced 500  consumed")) {
				t.Errorf("a %d-column terminal has room for the full line but got a shorter one", cols)
			}
			if rows > 2 { // the newline ending the progress line and the blank line before SUMMARY
				t.Errorf("the progress phase took %d terminal lines for %d redraws; want one line:\n%s", rows, redraws, strings.ReplaceAll(string(phase), "\x1b[K", "⟨K⟩"))
			}
		})
	}
}
