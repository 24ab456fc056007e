package demo

import (
	"testing"

	"github.com/chatgroupd/chatgroupd/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }
