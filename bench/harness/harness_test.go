package harness

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	for _, tc := range []struct {
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 0.5, 0},
		{ms(7), 0.99, 7 * time.Millisecond},
		{ms(5, 1, 3, 2, 4), 0.5, 3 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.5, 5 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.99, 10 * time.Millisecond},
	} {
		if got := percentile(tc.in, tc.p); got != tc.want {
			t.Errorf("percentile(%v, %v) = %v, want %v", tc.in, tc.p, got, tc.want)
		}
	}
}

func TestTrailingRate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var hist []sample
	for i := 0; i <= 30; i++ { // 100 ms apart, 20 calls each: 200/s
		hist = append(hist, sample{t: t0.Add(time.Duration(i) * 100 * time.Millisecond), accepted: 20 * i})
	}
	if got := trailingRate(hist, 30, time.Second, t0); got < 199.9 || got > 200.1 {
		t.Errorf("trailing rate = %v, want 200", got)
	}
	if got := trailingRate(hist, 5, time.Second, t0); got != 0 {
		t.Errorf("rate over less than a second of history = %v, want 0", got)
	}
	if got := trailingRate(hist, 30, time.Second, t0.Add(2500*time.Millisecond)); got != 0 {
		t.Errorf("rate reaching before notBefore = %v, want 0", got)
	}
}

func TestScenariosAreValidAndSelectable(t *testing.T) {
	for _, scale := range []Scale{Quick, Full} {
		all := Scenarios(scale)
		for _, s := range all {
			if err := s.Validate(); err != nil {
				t.Errorf("scale %d: %v", scale, err)
			}
			if s.Kind == KindUtil && float64(s.Backlog) < s.RateLimit*(s.Warmup+s.Window).Seconds() {
				t.Errorf("%s: backlog %d runs dry before the window ends", s.Name, s.Backlog)
			}
		}
		util, err := Select(all, "util")
		if err != nil || len(util) != 6 {
			t.Fatalf("Select(util) = %d scenarios, %v; want the 6 utilisation ones", len(util), err)
		}
		two, err := Select(all, "cpu,cpu,restart")
		if err != nil || len(two) != 2 {
			t.Fatalf("Select(cpu,cpu,restart) = %v, %v; want 2 without repeats", two, err)
		}
		if _, err := Select(all, "nope"); err == nil {
			t.Fatal("Select accepted a pattern that matches nothing")
		}
	}
	if err := (Scenario{Name: "x", Kind: "weird", Partitions: 1, Accounts: 1, RateLimit: 1, Timeout: 1, Backlog: 1}).Validate(); err == nil {
		t.Fatal("unknown kind accepted")
	}
}

func TestRunFlagsMirrorChatgroupdRun(t *testing.T) {
	args := strings.Join(runFlags{Brokers: []string{"127.0.0.1:1", "127.0.0.1:2"}, Topic: "t", Group: "g", DLQTopic: "d",
		Endpoint: "http://127.0.0.1:3", SDKAppID: 14, RateLimit: 200}.args(), " ")
	for _, want := range []string{"--brokers 127.0.0.1:1,127.0.0.1:2", "--topic t", "--group g", "--dlq-topic d",
		"--im-endpoint http://127.0.0.1:3", "--sdkappid 14", "--rate-limit 200", "--metrics-addr 127.0.0.1:0"} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
}

func TestReadLiveOwnProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc")
	}
	ls, err := readLive(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if ls.RSS <= 0 || ls.HWM < ls.RSS {
		t.Fatalf("rss %d, hwm %d: want 0 < rss <= hwm", ls.RSS, ls.HWM)
	}
}

func TestApplyRecorderTimesSuccessfulCreatesOnce(t *testing.T) {
	rec := newApplyRecorder()
	at := time.Now().Add(-50 * time.Millisecond)
	rec.expect("alice", "g1", at)
	rec.expect("bob", "g2", at)
	answer := 0
	h := rec.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(im.BaseResponse{ActionStatus: "OK", ErrorCode: answer})
	}))
	call := func(acct, group string) {
		body, _ := json.Marshal(im.CreateRequest{FromAccount: acct, GroupContactItem: []im.GroupContactItem{{GroupName: group}}})
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, im.PathCreateContactGroup, bytes.NewReader(body)))
	}
	answer = 50002
	call("bob", "g2") // failed: not applied, no sample
	answer = 0
	call("alice", "g1")
	call("alice", "g1") // the same event again: not a second sample
	call("carol", "g3") // never expected
	p50, _, n := rec.percentiles()
	if n != 1 || p50 < 50*time.Millisecond || p50 > 5*time.Second {
		t.Fatalf("samples %d, p50 %v; want one sample of about 50ms", n, p50)
	}
}

func TestWriteTablesComparesFirstSubject(t *testing.T) {
	var b strings.Builder
	WriteTables(&b, []Result{
		{Scenario: "util-100ms-1000acc", Kind: KindUtil, Subject: "chatgroupd", CallsPerSec: 198, Utilisation: 0.99, MaxWindow: 200},
		{Scenario: "util-100ms-1000acc", Kind: KindUtil, Subject: "naive", CallsPerSec: 60, Utilisation: 0.3, MaxWindow: 60},
		{Scenario: "cpu", Kind: KindCPU, Subject: "chatgroupd", Ended: 100000, CPU: 5 * time.Second, PeakRSS: 50 << 20},
		{Scenario: "cpu", Kind: KindCPU, Subject: "naive", Ended: 100000, CPU: 10 * time.Second, PeakRSS: 100 << 20, Err: "a|b"},
	})
	out := b.String()
	for _, want := range []string{"| util-100ms-1000acc | chatgroupd | 198.0 | 0.990 | 200 |", "calls/s ×3.30",
		"CPU per 100k ×2.00, peak RSS ×2.00", "⚠ a/b"} {
		if !strings.Contains(out, want) {
			t.Errorf("tables lack %q:\n%s", want, out)
		}
	}
}
