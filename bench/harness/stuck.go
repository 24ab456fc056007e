package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/internal/loadgen"
)

// stuckPrefix names the stuck account of a KindStuck scenario (its generator's prefix).
const stuckPrefix = "stuck"

// accountFault answers every create call of the accounts named with prefix with code, before
// the simulator sees it (so such calls take no room in its rate window). It stands in for a
// per-account fault of the simulator itself.
type accountFault struct {
	prefix string
	code   int
	calls  atomic.Int64
}

func (f *accountFault) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != im.PathCreateContactGroup {
			h.ServeHTTP(w, req)
			return
		}
		body, err := io.ReadAll(io.LimitReader(req.Body, 2<<20))
		if err != nil {
			http.Error(w, "read body", http.StatusBadRequest)
			return
		}
		var cr struct {
			FromAccount string `json:"From_Account"`
		}
		if json.Unmarshal(body, &cr) == nil && strings.HasPrefix(cr.FromAccount, f.prefix+"-") {
			f.calls.Add(1)
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(im.BaseResponse{ActionStatus: "FAIL", ErrorCode: f.code,
				ErrorInfo: "bench: injected per-account fault"})
			return
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(w, req)
	})
}

// stuck produces LiveRate events/s for Window into the scenario's topic, every StuckEvery-th of
// them the stuck account's, and measures how the other accounts' events fare: each one's
// occurred_at → applied latency, and their applied/s from the start of production until the
// last one was applied.
func (rn *run) stuck(ctx context.Context, rec *applyRecorder, fault *accountFault) error {
	gen, err := rn.r.generator(rn.sc)
	if err != nil {
		return err
	}
	// One account, never retired within the run (20 groups is the API's per-user limit).
	sgen, err := loadgen.New(loadgen.Config{Accounts: 1, GroupsPerAccount: 20, Seed: rn.r.cfg.Seed, Prefix: stuckPrefix})
	if err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	prod, p, stop, err := rn.warmUp(ctx, gen)
	if err != nil {
		return err
	}
	defer stop()
	total := int(rn.sc.LiveRate * rn.sc.Window.Seconds())
	tick := time.NewTicker(time.Duration(float64(time.Second) / rn.sc.LiveRate))
	defer tick.Stop()
	began := time.Now()
	others := 0
	for i := 0; i < total; i++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		var r loadgen.Record
		if i%rn.sc.StuckEvery == rn.sc.StuckEvery-1 {
			r = sgen.Next()
			rn.res.StuckEvents++
		} else {
			r = gen.Next()
			ev, err := event.Parse(r.Value)
			if err != nil {
				return fmt.Errorf("generated event: %w", err)
			}
			rec.expect(ev.FromAccount, ev.GroupName, ev.OccurredAt)
			others++
		}
		if err := prod.w.WriteMessages(ctx, kafkaMessage(r)); err != nil {
			return fmt.Errorf("produce: %w", err)
		}
	}
	rn.res.Expected = others
	_, err = rn.poll(ctx, p, true, func(s sample) bool {
		_, _, n := rec.percentiles()
		return n >= others
	})
	rn.res.E2EP50, rn.res.E2EP99, rn.res.E2ESamples = rec.percentiles()
	rn.res.Ended = rn.res.E2ESamples
	rn.res.Complete = err == nil
	if last := rec.lastApplied(); !last.IsZero() {
		rn.res.Elapsed = last.Sub(began)
		rn.res.CreatedPerSec = float64(rn.res.E2ESamples) / last.Sub(began).Seconds()
	}
	if fault != nil {
		rn.res.StuckCalls = int(fault.calls.Load())
	}
	if n := len(rn.hist); n > 0 {
		rn.res.DLQ = int(rn.hist[n-1].dlq)
	}
	return err
}
