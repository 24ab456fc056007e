package consumer

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/dispatcher"
	"github.com/chatgroupd/chatgroupd/event"
)

// Headers of retry-lane records. Everything else of the source record (key in a header, value,
// headers, timestamp) travels unchanged, so a dead letter written from the lane is the one the
// main topic would have produced.
const (
	laneHdrPrefix     = "chatgroupd-lane-"
	laneHdrSrcOffset  = laneHdrPrefix + "src-offset"  // the record's offset in the main topic
	laneHdrSrcKey     = laneHdrPrefix + "src-key"     // the record's key in the main topic
	laneHdrRetryStart = laneHdrPrefix + "retry-start" // unix nanos when its retrying began (stalled head only)
	laneHdrAttempts   = laneHdrPrefix + "attempts"    // API calls already made for it
	laneHdrReason     = laneHdrPrefix + "reason"      // why it is in the lane: stall (the head) or follow
	laneHdrUnpark     = laneHdrPrefix + "unpark"      // a marker: the key's account's records up to its value (a lane offset) ended
	laneHdrCode       = laneHdrPrefix + "code"        // the stalled head's last failure code
	laneHdrInfo       = laneHdrPrefix + "info"        // and its text
)

// Park reasons (metrics label and lane header).
const (
	parkStall  = "stall"
	parkBudget = "budget" // parked early: the held-back events would outgrow the commit metadata
	parkFollow = "follow"
)

// lanePart is one owned partition's retry lane: partition p of the lane topic, read by the member
// that owns partition p of the main topic. Guarded by engine.mu.
type lanePart struct {
	id      int
	accts   map[string]*laneAcct // parked accounts
	readPos int64                // next lane offset to read
	unended map[int64]*laneRec   // lane records read and not yet ended
	// loaded: the lane was read to the end it had at assignment, so accts lists every parked
	// account; the main partition is not fetched before that.
	loaded bool
	// marks are unpark markers read while loading: records before them are ended already.
	commitOK bool // the lane position may be committed (loaded)
	// keep overrides laneKeep (tests measuring what the cap saves); 0: laneKeep.
	keep int
}

// keepN is how many records per parked account are held in memory.
func (lp *lanePart) keepN() int {
	if lp.keep > 0 {
		return lp.keep
	}
	return laneKeep
}

// What a parked account's lane records may hold in memory: the next laneKeep records (and at most
// laneKeepBytes of their values, the head always). The rest stay in the lane, the source of truth,
// and are read again as the head advances (laneRefill). A hot parked account with thousands of
// queued events then costs its partition a few tens of kilobytes, not megabytes.
const (
	laneKeep      = 64
	laneKeepBytes = 1 << 20
)

// laneAcct is one parked account of a partition.
type laneAcct struct {
	name string
	q    []*laneRec // lane records held in memory, not ended, in lane order
	// qBytes is the value bytes of q.
	qBytes int
	// left: records of the account were read but not held (q was full); skipFrom is the lane
	// offset of the first: everything of it from there on is read again from the lane once q
	// empties. lastSkipped is the last such offset, skipped how many there are (gauge only).
	left                  bool
	skipFrom, lastSkipped int64
	skipped               int
	// seen maps each event (id and replay count) to the lane offset of its first copy: a later
	// copy (forwarded again after a crash) is a duplicate, the first one is not, however often
	// it is read.
	seen       map[uint64]int64
	forwarding int   // main-topic records being produced to the lane
	lastProd   int64 // lane offset of the last record produced for it by this member (-1 none)
	lastEnded  int64 // lane offset of its last record that ended here (-1 none)
	// end is what a successor would not know of the account's last ended lane records: no
	// marker written since states them (stated.go).
	end       unstatedEnd
	unparking bool // an unpark marker is being written: forwards wait
	worker    bool // a lane worker goroutine drives q
	reason    string
	since     time.Time // parked since
}

// laneRec is one record read from the lane.
type laneRec struct {
	msg      kafka.Message
	ev       *event.Event
	verr     error
	key      uint64
	replay   int
	start    time.Time // retry start carried from an earlier dispatch (zero: none)
	attempts int
	srcOff   int64
}

// laneTopic is the retry lane's topic name.
func (c *Config) laneTopic() string {
	if c.LaneTopic != "" {
		return c.LaneTopic
	}
	return c.Topic + ".retry"
}

func hdr(hs []kafka.Header, k string) (string, bool) {
	for _, h := range hs {
		if h.Key == k {
			return string(h.Value), true
		}
	}
	return "", false
}

// laneProduce writes one record to the lane partition with acks=all and returns its offset. The
// caller ends the main-topic record only after this returned nil: the commit never passes a
// record before the lane holds it.
func (e *engine) laneProduce(ctx context.Context, part int, key, value []byte, hs []kafka.Header, t time.Time) (int64, error) {
	resp, err := e.c.client.Produce(ctx, &kafka.ProduceRequest{
		Topic: e.cfg.laneTopic(), Partition: part, RequiredAcks: kafka.RequireAll,
		Records: kafka.NewRecordReader(kafka.Record{Key: kafka.NewBytes(key), Value: kafka.NewBytes(value), Headers: hs, Time: t}),
	})
	if err == nil && resp.Error != nil {
		err = resp.Error
	}
	if err != nil {
		return 0, fmt.Errorf("retry lane produce: %w", err)
	}
	return resp.BaseOffset, nil
}

// laneParked returns the account's park state when r's account is parked (waiting while an
// unpark marker is being written). Called with mu held.
func (e *engine) laneParked(r *rec) *laneAcct {
	lp := r.a.p.lane
	for {
		la := lp.accts[r.a.name]
		if la == nil || !la.unparking {
			return la
		}
		e.laneCond.Wait()
	}
}

// laneForward moves r (a record of a parked account, or the head that just stalled, out) into
// the lane, retrying until the lane acknowledges it; false means the generation ended first (r
// did not end). reason is parkStall for the stalled head (out carries its budget), else follow.
func (e *engine) laneForward(r *rec, la *laneAcct, reason string, out dispatcher.Outcome) bool {
	m := r.msg
	hs := make([]kafka.Header, 0, len(m.Headers)+5)
	for _, h := range m.Headers {
		if !strings.HasPrefix(h.Key, laneHdrPrefix) {
			hs = append(hs, h)
		}
	}
	hs = append(hs,
		kafka.Header{Key: laneHdrSrcOffset, Value: []byte(strconv.FormatInt(m.Offset, 10))},
		kafka.Header{Key: laneHdrSrcKey, Value: m.Key},
		kafka.Header{Key: laneHdrReason, Value: []byte(reason)})
	if !out.RetryStart.IsZero() {
		hs = append(hs, kafka.Header{Key: laneHdrRetryStart, Value: []byte(strconv.FormatInt(out.RetryStart.UnixNano(), 10))},
			kafka.Header{Key: laneHdrAttempts, Value: []byte(strconv.Itoa(out.Attempts))},
			kafka.Header{Key: laneHdrCode, Value: []byte(strconv.Itoa(out.Code))},
			kafka.Header{Key: laneHdrInfo, Value: []byte(truncate(out.Info, 512))})
	}
	backoff := 100 * time.Millisecond
	for {
		off, err := e.laneProduce(e.dctx, m.Partition, []byte(r.a.name), m.Value, hs, m.Time)
		if err == nil {
			e.mu.Lock()
			la.lastProd = max(la.lastProd, off)
			e.mu.Unlock()
			return true
		}
		e.cfg.Logger.Warn("retry lane write failed; retrying, account waits", zap.Int("partition", m.Partition),
			zap.Int64("offset", m.Offset), zap.String("account", r.a.name), zap.Error(err))
		if !sleepCtx(e.claim, backoff) {
			return false
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// laneProcess handles r when the lane is on: a record of a parked account is forwarded. It
// returns handled=false when r's account is not parked (dispatch it as usual).
func (e *engine) laneProcess(r *rec) (handled, ended bool) {
	e.mu.Lock()
	la := e.laneParked(r)
	if la == nil {
		e.mu.Unlock()
		return false, false
	}
	la.forwarding++
	e.mu.Unlock()
	ended = e.laneForward(r, la, parkFollow, dispatcher.Outcome{})
	e.mu.Lock()
	la.forwarding--
	e.mu.Unlock()
	return true, ended
}

// park parks r's account because r stalled, and forwards r as the lane's head for it.
func (e *engine) park(r *rec, out dispatcher.Outcome) bool {
	p := r.a.p
	e.mu.Lock()
	la := e.laneParked(r)
	reason := parkStall
	if r.a.parkAsked {
		reason = parkBudget
	}
	if la == nil {
		la = newLaneAcct(r.a.name, reason, e.cfg.Now())
		p.lane.accts[r.a.name] = la
		e.metrics().LaneParks.WithLabelValues(reason).Inc()
		e.metrics().LaneParked.WithLabelValues(e.cfg.Topic, strconv.Itoa(p.id)).Inc()
	}
	la.forwarding++
	e.mu.Unlock()
	e.cfg.Logger.Warn("account parked in the retry lane: its head event keeps failing transiently",
		zap.Int("partition", p.id), zap.String("account", r.a.name), zap.Int64("offset", r.msg.Offset), zap.String("reason", reason),
		zap.Int("code", out.Code), zap.String("info", out.Info))
	ok := e.laneForward(r, la, reason, out)
	e.mu.Lock()
	la.forwarding--
	e.mu.Unlock()
	return ok
}

// truncate cuts s to at most n bytes (headers stay small).
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
