package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/dispatcher"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/internal/testwait"
)

// statingDispatcher checks, before each dispatch of a record the rule holds back, that the
// group's last commit states the account's previous record done, then hands on to the fake.
type statingDispatcher struct {
	*fakeDispatcher
	e       *env
	mu      sync.Mutex
	offsets map[string]int64 // event id → offset
	prev    map[string]*event.Event
	// early lists dispatches of a record the rule must hold whose account's previous record no
	// commit stated yet.
	early []string
	// creates counts creates dispatched before their account's previous create was stated.
	creates int
}

func (d *statingDispatcher) Dispatch(ctx context.Context, task dispatcher.Task) (dispatcher.Outcome, error) {
	d.mu.Lock()
	prev := d.prev[task.Event.FromAccount]
	d.mu.Unlock()
	if prev != nil {
		off := d.offsets[prev.EventID]
		c := d.e.committed()[0]
		m, err := decodeMeta(c.CommittedOffset, c.Metadata)
		if err != nil {
			d.t.Errorf("committed metadata %q: %v", c.Metadata, err)
		}
		stated := off < c.CommittedOffset
		for _, s := range m.done {
			stated = stated || s.start <= off && off < s.end
		}
		d.mu.Lock()
		switch {
		case stated:
		case prev.EventType == event.TypeContactGroupCreated && task.Event.EventType == event.TypeContactGroupCreated:
			d.creates++
		default:
			d.early = append(d.early, fmt.Sprintf("%s (%s) before %s (offset %d) was committed", task.Event.EventID, task.Event.EventType, prev.EventID, off))
		}
		d.mu.Unlock()
	}
	out, err := d.fakeDispatcher.Dispatch(ctx, task)
	if err == nil {
		d.mu.Lock()
		d.prev[task.Event.FromAccount] = task.Event
		d.mu.Unlock()
	}
	return out, err
}

// TestNextLifecycleRecordWaitsForCommit: an account's lifecycle record is dispatched only once a
// commit states its previous record done, so a successor finds at most one of the account's
// uncertain records applied (a look-up can't see a later record's effect). Creates among
// themselves don't wait.
func TestNextLifecycleRecordWaitsForCommit(t *testing.T) {
	e := newEnv(t, 1)
	d := &statingDispatcher{fakeDispatcher: e.disp, e: e, offsets: map[string]int64{}, prev: map[string]*event.Event{}}
	e.cfgEdit = func(c *Config) { c.Dispatcher = d }
	c := event.Contact{Type: 1, ToAccount: "peer"}
	var evs []*event.Event
	for i := range 5 {
		a := fmt.Sprintf("life%d", i)
		g, h := "g"+a, "h"+a
		evs = append(evs,
			event.NewCreated(a+"-1", a, g, c), event.NewContactsAdded(a+"-2", a, g, event.Contact{Type: 1, ToAccount: "p2"}),
			event.NewRenamed(a+"-3", a, g, h), event.NewContactsRemoved(a+"-4", a, h, c), event.NewDeleted(a+"-5", a, h),
			event.NewCreated(a+"-6", a, g, c))
		for j := 1; j <= 4; j++ {
			evs = append(evs, event.NewCreated(fmt.Sprintf("v1-%d-%d", i, j), fmt.Sprintf("v1acct%d", i), fmt.Sprintf("c%d", j), c))
		}
	}
	seqs := map[string]int64{}
	msgs := make([]kafka.Message, len(evs))
	for i, ev := range evs {
		seqs[ev.FromAccount]++
		ev.Seq = seqs[ev.FromAccount]
		v, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		msgs[i] = kafka.Message{Key: []byte(ev.FromAccount), Value: v}
		d.offsets[ev.EventID] = int64(i) // one partition, produced in order from an empty topic
	}
	e.k.Produce(t, e.topic, msgs...)
	e.start()
	testwait.For(t, 30*time.Second, "every record dispatched", func() bool { return len(e.disp.snapshot()) == len(evs) })
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.early {
		t.Errorf("dispatched %s", s)
	}
	t.Logf("%d records; %d creates went before the previous create was committed", len(evs), d.creates)
}
