// Package kfakepatch provides the build overlay that makes the embedded Kafka broker the tests and
// the chaos suite run on (kfake) keep its consumer-group join barrier the way Apache Kafka does.
//
// kfake counts the members a rebalance waits for in one counter, but it parks a member's JoinGroup
// and its SyncGroup in the same field. Removing a member whose SyncGroup is parked takes one off
// the counter that was never added, and a member that re-joins while its SyncGroup is parked is not
// added. Once the counter is short, a rebalance completes only when its deadline fires, and kfake
// restarts that deadline on every join, so a fleet whose members keep re-joining never re-forms
// (chaos seed 22). Kafka counts only members awaiting a join response.
//
// The fix is applied without keeping a copy of kfake in the repository. Write copies the module
// from the module cache into a build directory, applies exact textual edits to groups.go (each
// target must occur exactly once, or Write fails: kfake changed and the edits must be reviewed),
// and writes a go.mod that replaces kfake by that copy, for `go test -modfile`. (`-overlay` would be
// smaller, but the go command refuses to overlay files in the module cache.) The Makefile's test
// and chaos targets use it; product builds do not: the service never runs kfake, and the
// one-process demo has a single group member, which cannot meet the defect. UPSTREAM.md is the
// bug report to file; once kfake fixes it, this package goes.
package kfakepatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Module is the module whose file the overlay patches.
const Module = "github.com/twmb/franz-go/pkg/kfake"

// patchedFile is the file of Module the edits apply to.
const patchedFile = "groups.go"

// ErrTarget is returned (wrapped) when an edit's target text is not found exactly once: the
// module's source is not the one the edits were written for.
var ErrTarget = errors.New("kfakepatch: edit target not found exactly once")

// Edit replaces Old, which must occur exactly once in the file, by New.
type Edit struct {
	Name string // what the edit does, for errors
	Old  string
	New  string
}

// Edits are the changes to kfake's groups.go: count a member in the join barrier only while its
// parked request is a JoinGroup (awaitingJoin), as Kafka's coordinator does.
func Edits() []Edit {
	return []Edit{
		{
			Name: "removeMember: uncount only a parked JoinGroup, not a parked SyncGroup",
			Old:  "\tif !m.waitingReply.empty() {\n\t\tg.nJoining--\n\t}\n",
			New:  "\tif m.waitingReply.awaitingJoin() {\n\t\tg.nJoining--\n\t}\n",
		},
		{
			Name: "updateMemberAndRebalance: count a re-join whose member was not parked in JoinGroup",
			Old:  "\t\tif m.waitingReply.empty() && !waitingReply.empty() {\n\t\t\tg.nJoining++\n\t\t}\n",
			New:  "\t\tif !m.waitingReply.awaitingJoin() && !waitingReply.empty() {\n\t\t\tg.nJoining++\n\t\t}\n",
		},
		{
			Name: "add clientReq.awaitingJoin after removeMember",
			Old:  "// validateInstanceID checks that the given instanceID and memberID are\n",
			New: "// awaitingJoin reports whether creq is a parked JoinGroup: only those are\n" +
				"// counted in nJoining (patched in by chatgroupd's internal/kfakepatch).\n" +
				"func (creq *clientReq) awaitingJoin() bool {\n" +
				"\tif creq.empty() {\n\t\treturn false\n\t}\n" +
				"\t_, ok := creq.kreq.(*kmsg.JoinGroupRequest)\n\treturn ok\n}\n\n" +
				"// validateInstanceID checks that the given instanceID and memberID are\n",
		},
	}
}

// Apply returns src with every edit applied, or an error wrapping ErrTarget naming the first edit
// whose target is missing or ambiguous.
func Apply(src []byte, edits []Edit) ([]byte, error) {
	out := src
	for _, e := range edits {
		if n := bytes.Count(out, []byte(e.Old)); n != 1 {
			return nil, fmt.Errorf("%w: %q occurs %d times (edit %q)", ErrTarget, firstLine(e.Old), n, e.Name)
		}
		out = bytes.Replace(out, []byte(e.Old), []byte(e.New), 1)
	}
	return out, nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}

// Write builds the patched kfake for the main module at modRoot into dir and returns the
// absolute path of the go.mod to pass as `-modfile`. dir gets: kfake/, a copy of the module's
// non-test Go files, go.mod and LICENSE from the module cache with groups.go patched; go.mod, the
// main module's go.mod plus a replace of kfake by that copy; and go.sum, the main module's.
// Only the build that is given -modfile uses the patched broker.
func Write(ctx context.Context, modRoot, dir string) (string, error) {
	kfakeDir, err := goList(ctx, modRoot, "-m", "-f", "{{.Dir}}", Module)
	if err != nil {
		return "", err
	}
	gomod, err := goList(ctx, modRoot, "-m", "-f", "{{.GoMod}}")
	if err != nil {
		return "", err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return "", fmt.Errorf("kfakepatch: %w", err)
	}
	copyDir := filepath.Join(dir, "kfake")
	if err := os.RemoveAll(copyDir); err != nil {
		return "", fmt.Errorf("kfakepatch: %w", err)
	}
	if err := copyModule(kfakeDir, copyDir); err != nil {
		return "", err
	}
	name := filepath.Join(copyDir, patchedFile)
	src, err := os.ReadFile(name)
	if err != nil {
		return "", fmt.Errorf("kfakepatch: %w", err)
	}
	patched, err := Apply(src, Edits())
	if err != nil {
		return "", fmt.Errorf("%w in %s (kfake changed: review the edits in internal/kfakepatch)",
			err, filepath.Join(kfakeDir, patchedFile))
	}
	if err := os.WriteFile(name, patched, 0o644); err != nil {
		return "", fmt.Errorf("kfakepatch: %w", err)
	}
	mod, err := os.ReadFile(gomod)
	if err != nil {
		return "", fmt.Errorf("kfakepatch: %w", err)
	}
	mod = fmt.Appendf(mod, "\n// Written by internal/kfakepatch: the embedded broker with Kafka's join barrier.\nreplace %s => %s\n", Module, copyDir)
	sum, err := os.ReadFile(strings.TrimSuffix(gomod, ".mod") + ".sum")
	if err != nil {
		return "", fmt.Errorf("kfakepatch: %w", err)
	}
	out := filepath.Join(dir, "go.mod")
	for name, data := range map[string][]byte{out: mod, filepath.Join(dir, "go.sum"): sum} {
		if err := os.WriteFile(name, data, 0o644); err != nil {
			return "", fmt.Errorf("kfakepatch: %w", err)
		}
	}
	return out, nil
}

// copyModule copies what a build of module directory from needs (its non-test Go files, go.mod and
// LICENSE) into to, writable.
func copyModule(from, to string) error {
	ents, err := os.ReadDir(from)
	if err != nil {
		return fmt.Errorf("kfakepatch: %w", err)
	}
	if err := os.MkdirAll(to, 0o755); err != nil {
		return fmt.Errorf("kfakepatch: %w", err)
	}
	for _, e := range ents {
		n := e.Name()
		if !e.Type().IsRegular() || (n != "go.mod" && n != "LICENSE" && (!strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go"))) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(from, n))
		if err != nil {
			return fmt.Errorf("kfakepatch: %w", err)
		}
		if err := os.WriteFile(filepath.Join(to, n), data, 0o644); err != nil {
			return fmt.Errorf("kfakepatch: %w", err)
		}
	}
	return nil
}

// Patched reports whether kfake as compiled into the running binary is the patched copy: the
// directory its source was compiled from (as the binary records it for kfake.NewCluster) holds a
// groups.go carrying every edit. It returns that directory, or why not. A binary built with
// -trimpath records no directory and is reported as unpatched.
func Patched() (string, error) {
	fn := runtime.FuncForPC(reflect.ValueOf(kfake.NewCluster).Pointer())
	if fn == nil {
		return "", errors.New("kfakepatch: kfake.NewCluster has no symbol in this binary")
	}
	file, _ := fn.FileLine(fn.Entry())
	dir := filepath.Dir(file)
	src, err := os.ReadFile(filepath.Join(dir, patchedFile))
	if err != nil {
		return "", fmt.Errorf("kfakepatch: kfake compiled from %s: %w", dir, err)
	}
	for _, e := range Edits() {
		if !bytes.Contains(src, []byte(e.New)) {
			return "", fmt.Errorf("kfakepatch: kfake compiled from %s, unpatched (no edit %q)", dir, e.Name)
		}
	}
	return dir, nil
}

// goList runs `go list args...` in modRoot and returns its single line of output.
func goList(ctx context.Context, modRoot string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", append([]string{"list"}, args...)...)
	cmd.Dir = modRoot
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("kfakepatch: go list %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	s := strings.TrimSpace(string(out))
	if s == "" || strings.Contains(s, "\n") {
		return "", fmt.Errorf("kfakepatch: go list %s: want one directory, got %q", strings.Join(args, " "), s)
	}
	return s, nil
}
