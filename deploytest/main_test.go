package deploytest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMain resolves the pinned helm once (building it if needed), so the tests don't pay for
// `go tool` on every helm call. $HELM, when set, wins.
func TestMain(m *testing.M) {
	if os.Getenv("HELM") == "" {
		r, err := FindRepo(".")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		out, err := exec.Command("go", "-C", filepath.Join(r.Root, "tools"), "tool", "-n", "helm").Output()
		if err != nil {
			fmt.Fprintln(os.Stderr, "deploytest: building the pinned helm:", err)
			os.Exit(1)
		}
		os.Setenv("HELM", strings.TrimSpace(string(out)))
	}
	os.Exit(m.Run())
}
