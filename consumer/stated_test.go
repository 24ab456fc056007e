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

// markerCounter counts, at each dispatch of a lifecycle account's lane records, the markers the
// lane holds for it, then hands on.
type markerCounter struct {
	*stallDispatcher
	t    *testing.T
	e    *env
	acct string
	mu   sync.Mutex
	seen []laneSeen
}

type laneSeen struct {
	typ     event.Type
	markers int
}

func (d *markerCounter) Dispatch(ctx context.Context, task dispatcher.Task) (dispatcher.Outcome, error) {
	if task.Event.FromAccount == d.acct && task.StallLimit == 0 { // the lane's, not the main topic's
		n := 0
		for _, m := range d.e.k.ReadAll(d.t, d.e.topic+".retry") {
			if _, ok := hdr(m.Headers, laneHdrUnpark); ok && string(m.Key) == d.acct {
				n++
			}
		}
		d.mu.Lock()
		d.seen = append(d.seen, laneSeen{task.Event.EventType, n})
		d.mu.Unlock()
	}
	return d.stallDispatcher.Dispatch(ctx, task)
}

// TestLaneLifecycleWaitsForMarker: a parked account's next lifecycle record in the retry lane is
// dispatched only once a marker in the lane states its previous one ended (the lane's committed
// position can't: it is one offset for every parked account).
func TestLaneLifecycleWaitsForMarker(t *testing.T) {
	e, sd := laneEnv(t, "life")
	d := &markerCounter{stallDispatcher: sd, t: t, e: e, acct: "life"}
	edit := e.cfgEdit
	e.cfgEdit = func(c *Config) { edit(c); c.Dispatcher = d }
	c := event.Contact{Type: 1, ToAccount: "peer"}
	evs := []*event.Event{
		event.NewCreated("l1", "life", "g", c), event.NewContactsAdded("l2", "life", "g", event.Contact{Type: 1, ToAccount: "p2"}),
		event.NewRenamed("l3", "life", "g", "h"), event.NewContactsRemoved("l4", "life", "h", c), event.NewDeleted("l5", "life", "h"),
		event.NewCreated("l6", "life", "g", c), event.NewCreated("l7", "life", "k", c),
	}
	msgs := make([]kafka.Message, len(evs))
	for i, ev := range evs {
		ev.Seq = int64(i + 1)
		v, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		msgs[i] = kafka.Message{Key: []byte("life"), Value: v}
	}
	e.k.Produce(t, e.topic, msgs...)
	e.start()
	testwait.For(t, 30*time.Second, "account parked with its records", func() bool { return len(e.k.ReadAll(t, e.topic+".retry")) >= len(evs) })
	sd.clear()
	testwait.For(t, 30*time.Second, "every record applied", func() bool { return len(sd.snapshot()) == len(evs) })
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.seen) != len(evs) {
		t.Fatalf("%d lane dispatches seen, want %d", len(d.seen), len(evs))
	}
	for i := 1; i < len(d.seen); i++ {
		cur, prev := d.seen[i], d.seen[i-1]
		create := cur.typ == event.TypeContactGroupCreated && evs[i-1].EventType == event.TypeContactGroupCreated
		if !create && cur.markers <= prev.markers {
			t.Errorf("record %d (%s) dispatched with %d markers in the lane, as many as at record %d: its predecessor's end was not stated", i+1, cur.typ, cur.markers, i)
		}
	}
	t.Logf("markers at each dispatch: %+v", d.seen)
}
