package consumer

import (
	"context"
	"net"
	"net/http/httptrace"
	"slices"
	"sync"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
)

// Hand-over without a blind wait (DESIGN.md, "Uncertain records and the dispatch horizon").
//
// A new owner must not dispatch an account while a request of the previous owner for it may still
// run at the API. Without knowing more it waits UncertainHold from its set-up. The previous owner
// knows more once it has drained: each partition follows its requests through net/http/httptrace
// hooks on the context handed to Dispatcher.Dispatch (the IM client makes every request under it),
// so when the last runner has returned it knows, per partition, whether every request it wrote got
// its answer, and when the others were written. Its final commit states that (metadata v3):
// "nothing runs any more", or "nothing runs after Q" (its clock). A member that dies, or whose
// final commit is refused, states nothing, and its successor holds in full.

// callWatch follows the API requests of one partition (main and lane records) within a generation.
type callWatch struct {
	mu sync.Mutex
	// until is the latest end, by the UncertainHold rule (written + UncertainHold), of requests
	// written without an answer; zero when none.
	until time.Time
	// unknown: a request may have been written at a time not seen (a connection taken with no
	// write reported by the time its dispatch returned): nothing can be stated.
	unknown bool
	// sent holds the main-topic offsets whose dispatch took a connection (a request of theirs
	// may have reached the API) or returned an outcome: the final commit lists those that did
	// not end as uncertain; every other record it never sent (metadata v4).
	sent map[int64]struct{}
	// admitted holds the offsets admitted to be written (admit.go) that did not take a
	// connection yet: periodic commits list them with sent (a write may follow at any moment),
	// the final commit does not (every runner has returned, and every write takes a connection
	// first: one admitted ahead of its grant and never granted was never sent).
	admitted map[int64]struct{}
}

// markSent records that the record at off may have reached the API.
func (w *callWatch) markSent(off int64) {
	w.mu.Lock()
	w.markSentLocked(off)
	w.mu.Unlock()
}

func (w *callWatch) markSentLocked(off int64) {
	if off < 0 {
		return
	}
	if w.sent == nil {
		w.sent = map[int64]struct{}{}
	}
	w.sent[off] = struct{}{}
}

// markAdmitted records that the record at off may be written from now on.
func (w *callWatch) markAdmitted(off int64) {
	w.mu.Lock()
	if w.admitted == nil {
		w.admitted = map[int64]struct{}{}
	}
	w.admitted[off] = struct{}{}
	w.mu.Unlock()
}

// forget drops off, which ended: the encoder would take it out of the list anyway (it is done),
// and periodic commits list the set again and again, which must not grow with every record of
// the generation.
func (w *callWatch) forget(off int64) {
	w.mu.Lock()
	delete(w.sent, off)
	delete(w.admitted, off)
	w.mu.Unlock()
}

// sentSpans returns the offsets markSent recorded, and with admitted those markAdmitted did,
// as sorted spans.
func (w *callWatch) sentSpans(admitted bool) []span {
	w.mu.Lock()
	offs := make([]int64, 0, len(w.sent))
	for o := range w.sent {
		offs = append(offs, o)
	}
	if admitted {
		for o := range w.admitted {
			if _, dup := w.sent[o]; !dup {
				offs = append(offs, o)
			}
		}
	}
	w.mu.Unlock()
	slices.Sort(offs)
	var out []span
	for _, o := range offs {
		if n := len(out); n > 0 && out[n-1].end == o {
			out[n-1].end++
			continue
		}
		out = append(out, span{o, o + 1})
	}
	return out
}

// reqWatch is one dispatch's view: its requests go one after another.
type reqWatch struct {
	w        *callWatch
	off      int64 // the main-topic record's offset, −1 for a lane record
	hold     time.Duration
	now      func() time.Time
	pending  bool // a connection was taken for a request whose write was not reported yet
	open     bool // the current request was written and has no answer yet
	answered bool // the current request got the first byte of its answer
	wrote    time.Time
	done     bool     // the dispatch returned
	conn     net.Conn // the current request's connection, from GotConn
	unstamp  func()   // stops the current request's write stamps (im.OnWrite); nil when none
}

// trace returns ctx carrying hooks that follow the dispatch's requests, and the function to call
// once the dispatch returned. hold is how long a written request may run at the API. off is the
// main-topic record's offset (−1 for a lane record, which a successor takes as uncertain anyway).
func (w *callWatch) trace(ctx context.Context, hold time.Duration, now func() time.Time, off int64) (context.Context, func()) {
	r := &reqWatch{w: w, hold: hold, now: now, off: off}
	ct := &httptrace.ClientTrace{
		GotConn: r.gotConn,
		WroteRequest: func(httptrace.WroteRequestInfo) {
			// WroteRequest fires before the transport flushes the request: the write time
			// moves to each Write on the connection that completes after it (im.OnWrite),
			// armed before the time is taken, so it is never earlier than the last byte.
			w.mu.Lock()
			conn := r.conn
			w.mu.Unlock()
			var stop func()
			if conn != nil {
				stop, _ = im.OnWrite(conn, func() {
					w.mu.Lock()
					if t := r.now(); r.open && t.After(r.wrote) {
						r.wrote = t
					}
					w.mu.Unlock()
				})
			}
			w.mu.Lock()
			r.stopStamps()
			r.unstamp = stop
			// Written, even with an error: some of it may have reached the server.
			r.pending = false
			if !r.answered {
				r.open, r.wrote = true, r.now()
			}
			if r.done {
				r.fold()
			}
			w.mu.Unlock()
		},
		GotFirstResponseByte: func() {
			w.mu.Lock()
			// The server answered: it is done with the request (the API answers when it acted).
			r.answered, r.open, r.pending = true, false, false
			w.mu.Unlock()
		},
	}
	return httptrace.WithClientTrace(ctx, ct), func() {
		w.mu.Lock()
		r.stopStamps()
		r.fold()
		r.done = true
		w.mu.Unlock()
	}
}

// gotConn is the GotConn hook: a request is about to be written on info.Conn.
func (r *reqWatch) gotConn(info httptrace.GotConnInfo) {
	w := r.w
	w.mu.Lock()
	defer w.mu.Unlock()
	// Taken before any byte of the request is written: from here on it may reach the API.
	w.markSentLocked(r.off)
	r.stopStamps()
	r.conn = info.Conn
	r.fold()
	r.pending, r.open, r.answered = true, false, false
	if r.done {
		// A request started after its dispatch returned: nothing can be stated.
		w.unknown = true
	}
}

// stopStamps ends the previous request's write stamps. w.mu held.
func (r *reqWatch) stopStamps() {
	if r.unstamp != nil {
		r.unstamp()
		r.unstamp = nil
	}
}

// fold records the current request in the partition's watch. w.mu held.
func (r *reqWatch) fold() {
	if r.pending {
		r.w.unknown = true
	}
	if r.open {
		if end := r.wrote.Add(r.hold); end.After(r.w.until) {
			r.w.until = end
		}
	}
	r.pending, r.open = false, false
}

// statement is the hand-over statement of a final commit sent at sent: nil when nothing can be
// stated, until 0 when nothing of the partition runs at the API any more, else the unix
// millisecond (rounded up) after which nothing runs. inherited is the hold this member applied
// itself: a call of an earlier owner may run until then, and the successor must know it too.
func (w *callWatch) statement(inherited, sent time.Time) *handover {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.unknown {
		return nil
	}
	until := w.until
	if inherited.After(until) {
		until = inherited
	}
	if !until.After(sent) {
		// Every request ended before the commit was sent, so before the successor reads it:
		// no clock is involved.
		return &handover{}
	}
	ms := until.UnixMilli()
	if time.UnixMilli(ms).Before(until) {
		ms++
	}
	return &handover{until: ms}
}

// handoverHold returns until when the accounts of a partition just set up must dispatch nothing:
// the full hold from now without a statement, else what is left of the window stated by the
// previous owner's final commit, its clock taken as up to skew behind ours. Never longer than the
// full hold, which is safe whatever the clocks say: every request of the previous owner was
// written before this assignment (its membership lease) and runs at most hold.
func handoverHold(now time.Time, hold, skew time.Duration, ho *handover) time.Time {
	full := now.Add(hold)
	if ho == nil || skew < 0 {
		return full
	}
	if ho.until == 0 {
		return now
	}
	until := time.UnixMilli(ho.until).Add(skew)
	if until.After(full) {
		return full
	}
	if until.Before(now) {
		return now
	}
	return until
}

// prevHold is the uncertain hold, stated here once: after getting a partition, a call of the
// previous owner may still be running at the API for a while (Config.UncertainHold from set-up,
// shortened by the previous owner's hand-over statement, handoverHold). Until then nothing of an
// account with an uncertain main-topic record is dispatched (its records keep their order: the
// account waits as a whole), nor any lane record, uncertain or not (a lane worker of the previous
// owner may still have a call of its head running).
type prevHold struct {
	until time.Time // the previous owner's calls end by then, whether or not records wait for it
	main  time.Time // until, when uncertain main-topic records were inherited (else zero)
	lane  time.Time // until, when the lane held records at assignment (else zero)
}

// inherited is how long this partition's records waited for the previous owner: what the final
// commit's statement must still cover of it (callWatch.statement).
func (h prevHold) inherited() time.Time {
	if h.lane.After(h.main) {
		return h.lane
	}
	return h.main
}

// prevSent is what the previous owner's final commit stated of the records it sent (metadata
// v4): when known, only the offsets in spans, of those below the inherited horizon and not done,
// may have reached the API; the others are not uncertain (no existence check, no hold).
type prevSent struct {
	known bool
	spans []span // sorted, disjoint; never changed (the final commit lists them again)
	at    int    // ingest's cursor in spans: offsets arrive in increasing order
}

// mayHave reports whether the record at off may have been sent by the previous owner. Offsets
// are asked in increasing order.
func (s *prevSent) mayHave(off int64) bool {
	if !s.known {
		return true
	}
	for s.at < len(s.spans) && s.spans[s.at].end <= off {
		s.at++
	}
	return s.at < len(s.spans) && s.spans[s.at].start <= off
}

// uncertainFrom is the offsets a member that took a partition at watermark w with horizon
// inherited takes as uncertain, as spans (completed ranges not taken out).
func (s *prevSent) uncertainFrom(w, inherited int64) []span {
	if !s.known {
		if inherited <= w {
			return nil
		}
		return []span{{w, inherited}}
	}
	return clipSpans(s.spans, w, inherited)
}

// sentStatement is a commit's list of p's offsets below its horizon that may have reached the
// API: those this member inherited as uncertain and those it sent itself (completed ones are
// taken out by the encoder), and with admitted (periodic commits) those admitted to be written.
// The final commit leaves the admitted ones out: every runner has returned, so one that took no
// connection never wrote. mu held.
func (p *part) sentStatement(admitted bool) []span {
	var inh []span
	if p.hasPrev {
		inh = p.prev.uncertainFrom(p.tr.watermark(), p.inherited)
	}
	return mergeSpans(append(inh, p.calls.sentSpans(admitted)...))
}
