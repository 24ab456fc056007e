package consumer

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/dispatcher"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
)

// startLog wraps a Dispatcher and notes when each dispatch of an account began.
type startLog struct {
	Dispatcher
	mu     sync.Mutex
	starts map[string][]time.Time
}

func (s *startLog) Dispatch(ctx context.Context, t dispatcher.Task) (dispatcher.Outcome, error) {
	// A start is when the request may be written: once admitted (the wrapped dispatcher's
	// admission then passes at once).
	if err := admitFake(ctx, t); err != nil {
		return dispatcher.Outcome{}, err
	}
	s.mu.Lock()
	s.starts[t.Event.FromAccount] = append(s.starts[t.Event.FromAccount], time.Now())
	s.mu.Unlock()
	return s.Dispatcher.Dispatch(ctx, t)
}

func (s *startLog) since(acct string, t0 time.Time) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []time.Time
	for _, t := range s.starts[acct] {
		if !t.Before(t0) {
			out = append(out, t)
		}
	}
	return out
}

// TestSuccessorWaitsOutPreviousCalls: a member dies (no drain, no final commit) while one
// account's call is in flight. At the API that call goes on after its sender is gone, up to the
// API client's timeout (chaos: a slow account's create ran 6s while the successor looked the
// same account up and created again). The successor must dispatch nothing of that account
// before UncertainHold has passed since it got the partition, then everything exactly once and
// in seq order. With the hold off the successor dispatches at once, so the check can fail.
func TestSuccessorWaitsOutPreviousCalls(t *testing.T) {
	const hold = 3 * time.Second
	for _, tc := range []struct {
		name string
		hold time.Duration
	}{{"held", hold}, {"hold off", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 1)
			sl := &startLog{Dispatcher: e.disp, starts: map[string][]time.Time{}}
			e.cfgEdit = func(c *Config) { c.Dispatcher, c.UncertainHold = sl, tc.hold }
			var msgs []kafka.Message
			var all []string
			for i := 1; i <= 3; i++ {
				id := fmt.Sprintf("slow%d", i)
				msgs = append(msgs, evMsg(id, "slow", int64(i)))
				all = append(all, id)
			}
			e.k.Produce(t, e.topic, msgs...)
			h := make(chan struct{})
			e.disp.mu.Lock()
			e.disp.hold["slow"] = h
			e.disp.mu.Unlock()
			a := e.start()
			a.c.crash = true
			testwait.For(t, 15*time.Second, "the slow call in flight and its horizon committed", func() bool {
				e.disp.mu.Lock()
				active := e.disp.active["slow"] == 1
				e.disp.mu.Unlock()
				c, ok := e.committed()[0]
				if !active || !ok {
					return false
				}
				m, err := decodeMeta(c.CommittedOffset, c.Metadata)
				return err == nil && m.horizon > c.CommittedOffset
			})
			a.stop(t)
			close(h)
			t0 := time.Now()
			b := e.start()
			testwait.For(t, 20*time.Second, "the successor assigned", b.c.Ready)
			assigned := time.Now()
			testwait.For(t, 30*time.Second, "all committed", func() bool { return e.committedTotal() == int64(len(all)) })
			calls := e.disp.snapshot()
			checkOnce(t, calls, all)
			starts := sl.since("slow", t0)
			if len(starts) == 0 {
				t.Fatal("the successor never dispatched the slow account")
			}
			waited := starts[0].Sub(assigned)
			t.Logf("successor's first dispatch of the account %v after it was assigned (hold %v)", waited.Round(time.Millisecond), tc.hold)
			if tc.hold < 0 {
				if waited >= hold/2 {
					t.Errorf("hold off: first dispatch %v after the assignment; the check could not tell", waited)
				}
				return
			}
			// Ready is seen up to a poll late, so allow a little.
			if waited < hold-200*time.Millisecond {
				t.Errorf("successor dispatched the account %v after getting the partition, before the hold of %v: beside a call that may still run", waited, hold)
			}
			var seqs []int64
			for _, c := range calls {
				if c.Account == "slow" {
					seqs = append(seqs, c.Seq)
				}
			}
			for i := 1; i < len(seqs); i++ {
				if seqs[i] < seqs[i-1] {
					t.Errorf("slow account applied out of order: %v", seqs)
				}
			}
		})
	}
}
