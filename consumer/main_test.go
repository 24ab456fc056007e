package consumer

import (
	"testing"

	"github.com/chatgroupd/chatgroupd/internal/leakcheck"
)

// TestMain fails the run when a test leaves a goroutine behind: the consumer starts fetches,
// a commit loop, runners, lane workers and timers per generation, and each must end with it.
func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }
