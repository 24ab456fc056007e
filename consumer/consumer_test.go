package consumer

import (
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// TestPerAccountOrder: many accounts over 4 partitions, each account's events applied one at a
// time in offset order, and everything committed.
func TestPerAccountOrder(t *testing.T) {
	e := newEnv(t, 4)
	const accounts, per = 50, 20
	var msgs []kafka.Message
	for i := 0; i < per; i++ {
		for a := 0; a < accounts; a++ {
			msgs = append(msgs, evMsg(fmt.Sprintf("a%d-e%d", a, i), fmt.Sprintf("acct%d", a), int64(i+1)))
		}
	}
	e.k.Produce(t, e.topic, msgs...)
	r := e.start()
	waitFor(t, 20*time.Second, "all applied", func() bool { return len(e.disp.snapshot()) >= accounts*per })
	waitFor(t, 10*time.Second, "all committed", func() bool { return e.committedTotal() == accounts*per })
	if !r.c.Ready() {
		t.Error("Ready() false while consuming")
	}
	last := map[string]int64{}
	for _, c := range e.disp.snapshot() {
		if c.Seq != last[c.Account]+1 {
			t.Fatalf("account %s: seq %d after %d", c.Account, c.Seq, last[c.Account])
		}
		last[c.Account] = c.Seq
		if c.Uncertain {
			t.Errorf("fresh group dispatched %s as uncertain", c.ID)
		}
	}
	r.stop(t)
	if r.c.Ready() {
		t.Error("Ready() true after Run returned")
	}
}
