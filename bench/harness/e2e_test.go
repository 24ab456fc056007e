package harness

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/bench/naive"
	"github.com/chatgroupd/chatgroupd/bench/peer"
)

// helperEnv makes the test binary act as the naive peer, so the harness can be tested end to end
// without building binaries.
const helperEnv = "BENCH_HELPER_SUBJECT" // not CHATGROUPD_*: the harness strips those

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "naive" {
		os.Args = append([]string{"naive"}, os.Args[2:]...) // drop the -test.run marker
		peer.Main("naive", naive.Run)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestRunnerMeasuresAChildProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Kafka, a simulator and a child process")
	}
	t.Setenv(helperEnv, "naive")
	b, err := StartBroker(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r, err := NewRunner(Config{Broker: b, OutDir: t.TempDir(), StopGrace: 10 * time.Second,
		Subjects: []Subject{{Name: "naive", Command: []string{os.Args[0], "-test.run=^$"}}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	res, err := r.Run(ctx, Scenario{Name: "tiny", Kind: KindCPU, Partitions: 2, Accounts: 5, RateLimit: Unlimited,
		Backlog: 300, Timeout: 60 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 {
		t.Fatalf("%d results, want 1", len(res))
	}
	got := res[0]
	logs, _ := os.ReadFile(got.Log)
	if got.Err != "" || !got.Complete || got.Ended != 300 || got.Created != 300 {
		t.Fatalf("result %+v\nsubject log:\n%s", got, logs)
	}
	if got.CPU <= 0 || got.PeakRSS <= 0 || !got.CleanExit || got.DuplicateCreates != 0 || got.MaxWindow <= 0 {
		t.Fatalf("cpu %v, peak rss %d, clean exit %v, duplicates %d, max window %d: want a measured clean run",
			got.CPU, got.PeakRSS, got.CleanExit, got.DuplicateCreates, got.MaxWindow)
	}
}
