package kfakepatch

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestApply(t *testing.T) {
	edits := []Edit{{Name: "one", Old: "a\n", New: "A\n"}, {Name: "two", Old: "b\n", New: "B\n"}}
	for _, tc := range []struct {
		name, src, want, errHas string
	}{
		{name: "each target once", src: "x\na\nb\n", want: "x\nA\nB\n"},
		{name: "target missing: kfake changed", src: "x\na\n", errHas: `"b" occurs 0 times (edit "two")`},
		{name: "target twice: ambiguous", src: "a\nb\na\n", errHas: `"a" occurs 2 times (edit "one")`},
		{name: "a later target made by an earlier edit counts", src: "a\nb\nB\n", want: "A\nB\nB\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Apply([]byte(tc.src), edits)
			if tc.errHas != "" {
				if !errors.Is(err, ErrTarget) || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("Apply: err %v, want ErrTarget with %q", err, tc.errHas)
				}
				return
			}
			if err != nil || string(got) != tc.want {
				t.Fatalf("Apply = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestWrite: the edits apply to the kfake go.mod pins, and Write builds a copy that
// Patched would accept. A kfake upgrade that moves a target fails here first.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	modfile, err := Write(context.Background(), filepath.Join("..", ".."), dir)
	if err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile(modfile)
	if err != nil {
		t.Fatal(err)
	}
	copyDir := filepath.Join(dir, "kfake")
	if want := "replace " + Module + " => " + copyDir + "\n"; !strings.HasSuffix(string(mod), want) {
		t.Errorf("go.mod does not end with %q:\n%s", want, mod)
	}
	src, err := os.ReadFile(filepath.Join(copyDir, patchedFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range Edits() {
		if !strings.Contains(string(src), e.New) {
			t.Errorf("patched %s lacks edit %q", patchedFile, e.Name)
		}
	}
	if _, err := os.Stat(filepath.Join(copyDir, "acl_test.go")); !os.IsNotExist(err) {
		t.Errorf("test files copied (stat: %v)", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.sum")); err != nil {
		t.Error(err)
	}
}

func TestWriteErrors(t *testing.T) {
	if _, err := Write(context.Background(), t.TempDir(), t.TempDir()); err == nil || !strings.Contains(err.Error(), "go list") {
		t.Errorf("Write outside a module: err %v, want the go list failure", err)
	}
	// A file where the output directory should be.
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(context.Background(), filepath.Join("..", ".."), f); err == nil {
		t.Error("Write into a file: no error")
	}
}
