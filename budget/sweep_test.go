package budget

import (
	"os"
	"strconv"
	"testing"
)

// TestSimulationSweep runs CHATGROUPD_BUDGET_SWEEP more schedules (0: skipped), for a long
// search beyond the ones make test runs.
func TestSimulationSweep(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("CHATGROUPD_BUDGET_SWEEP"))
	if n <= 0 {
		t.Skip("CHATGROUPD_BUDGET_SWEEP not set")
	}
	for seed := uint64(1_000_000); seed < uint64(1_000_000+n); seed++ {
		if worst, _ := randomSchedule(t, seed, nil); worst > 20+int(seed%5)*20 {
			t.Fatalf("schedule %d: %d calls in one second, budget %d", seed, worst, 20+int(seed%5)*20)
		}
	}
	t.Logf("%d more schedules: 0 windows over the budget", n)
}
