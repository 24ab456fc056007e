package consumer

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/event"
)

// fetch reads one partition: first the history before the watermark into the dedupe window, then
// live records into the engine, pausing while the partition's buffer is full.
func (e *engine) fetch(ctx context.Context, p *part) {
	cfg := e.cfg
	f := &fetcher{rt: cfg.Transport, addr: kafka.TCP(cfg.Brokers...), topic: cfg.Topic, part: p.id,
		next: p.readFrom, maxWait: 250 * time.Millisecond, maxBytes: 4 << 20}
	if f.rt == nil {
		f.rt = kafka.DefaultTransport
	}
	start := p.tr.next
	if cfg.RetryLane {
		// Every parked account must be known before any of its main-topic events is seen.
		lf, ok := e.laneLoad(ctx, p)
		if !ok {
			return
		}
		var tail sync.WaitGroup
		defer tail.Wait()
		tail.Go(func() { e.laneTail(ctx, p, lf) })
	}
	for {
		msgs, err := f.fetch(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, kafka.OffsetOutOfRange) && e.outOfRange(ctx, f) {
				continue
			}
			cfg.Logger.Warn("fetch failed, retrying", zap.Int("partition", p.id), zap.Int64("offset", f.next), zap.Error(err))
			if !sleepCtx(ctx, time.Second) {
				return
			}
			continue
		}
		for _, m := range msgs {
			if m.Offset < start {
				e.readBack(p, m)
				continue
			}
			if !e.ingest(ctx, p, m) {
				return
			}
		}
		e.passed(p, f.next, start)
	}
}

// passed tells the tracker the fetch went past every offset below next. Offsets the fetch left
// out (transaction markers, aborted records) are otherwise only known as skipped once a later
// record arrives: at the log's tail — where a real broker writes the markers, after the
// transaction's last record — they would hold the watermark one or two short of the log end.
func (e *engine) passed(p *part, next, start int64) {
	if next <= start {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(p.tr.ents) == 0 && next > p.tr.next {
		p.tr.next = next
	}
}

// outOfRange handles a fetch offset the log no longer holds. Below the log start (retention
// deleted records before we read them) the fetch moves to the start and reports true. Beyond
// the log end the log was truncated under us: nothing safe can be done within this generation
// (the tracker already passed those offsets), so it says so loudly and reports false.
func (e *engine) outOfRange(ctx context.Context, f *fetcher) bool {
	cfg := e.cfg
	lo, err := e.c.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
		cfg.Topic: {kafka.FirstOffsetOf(f.part), kafka.LastOffsetOf(f.part)}}})
	if err != nil {
		return false
	}
	for _, b := range lo.Topics[cfg.Topic] {
		if b.Partition != f.part || b.Error != nil {
			continue
		}
		if f.next < b.FirstOffset {
			cfg.Logger.Warn("fetch position below the log start: records lost to retention", zap.Int("partition", f.part),
				zap.Int64("offset", f.next), zap.Int64("log_start", b.FirstOffset))
			cfg.Metrics.OffsetResets.WithLabelValues("below_log_start").Inc()
			f.next = b.FirstOffset
			return true
		}
		if f.next > b.LastOffset {
			cfg.Logger.Error("fetch position beyond the log end: the log was truncated under this member; the partition stalls until reassigned",
				zap.Int("partition", f.part), zap.Int64("offset", f.next), zap.Int64("log_end", b.LastOffset))
		}
	}
	return false
}

// readBack remembers a record that ended before the watermark: its dedupe key and its seq.
func (e *engine) readBack(p *part, m kafka.Message) {
	ev, err := event.Parse(m.Value)
	if err != nil {
		return
	}
	key := e.c.hash.id(ev.EventID, replayCount(m.Headers))
	ah := e.c.hash.account(ev.FromAccount)
	e.mu.Lock()
	before := p.win.len()
	p.win.add(key, ah, ev.Seq)
	e.cfg.Metrics.DedupeEntries.Add(float64(p.win.len() - before))
	e.mu.Unlock()
}
