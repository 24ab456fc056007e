package ratelimit

import (
	"testing"

	"github.com/chatgroupd/chatgroupd/internal/leakcheck"
)

// TestMain fails the run when a test leaves a goroutine behind.
func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }
