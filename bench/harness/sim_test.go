package harness

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
)

// buildChatgroupd builds the chatgroupd binary, whose imsim command serves the simulator.
func buildChatgroupd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "chatgroupd")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/chatgroupd/chatgroupd/cmd/chatgroupd").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestSimProcessServesAndCounts(t *testing.T) {
	if testing.Short() {
		t.Skip("builds chatgroupd")
	}
	bin := buildChatgroupd(t)
	const key = "00112233445566778899aabbccddeeff"
	cfg := imsim.Config{SDKAppID: 1400000001, SecretKey: key, RateLimit: 2, Faults: imsim.Faults{Latency: time.Millisecond}, Seed: 1}
	s, err := startSimProcess([]string{bin, "imsim"}, cfg, filepath.Join(t.TempDir(), "imsim.log"), "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	c, err := im.New(im.Config{SDKAppID: cfg.SDKAppID, SecretKey: key, BaseURL: s.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var codes []int
	for i := range 3 {
		_, err := c.CreateContactGroup(ctx, &im.CreateRequest{FromAccount: "u1", GroupContactItem: []im.GroupContactItem{{
			GroupName: "g" + string(rune('a'+i)), ContactItem: []im.ContactItem{{Type: im.ContactC2C, ToAccount: "p"}}}}})
		code := 0
		if e, ok := errors.AsType[*im.Error](err); ok {
			code = e.Code
		} else if err != nil {
			t.Fatal(err)
		}
		codes = append(codes, code)
	}
	if codes[0] != 0 || codes[1] != 0 || codes[2] != im.CodeFrequency {
		t.Fatalf("codes %v, want two accepted and one 60007 (the rate limit reached the process)", codes)
	}
	got := s.create(ctx)
	if got.Total != 3 || got.Accepted != 2 || got.RateLimited != 1 || got.MaxWindow != 3 || got.Created != 2 {
		t.Fatalf("stats %+v", got)
	}
	s.close()
	if again := s.create(ctx); again != got {
		t.Fatalf("after exit: %+v, want the last counters %+v", again, got)
	}
}

func TestSimProcessStartFailures(t *testing.T) {
	cfg := imsim.Config{SDKAppID: 1, SecretKey: "k"}
	log := filepath.Join(t.TempDir(), "imsim.log")
	for _, tc := range []struct {
		name    string
		command []string
		want    string
	}{
		{"no command", nil, "no command"},
		{"missing binary", []string{filepath.Join(t.TempDir(), "absent")}, "start"},
		{"exits at once", []string{"false"}, "exited before listening"},
		{"never listens", []string{"sh", "-c", "sleep 30"}, "no address within"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := startSimProcessWithin(tc.command, cfg, log, "", 300*time.Millisecond)
			if err == nil {
				s.close()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to say %q", err, tc.want)
			}
		})
	}
}
