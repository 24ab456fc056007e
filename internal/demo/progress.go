package demo

import (
	"fmt"
	"strings"
	"time"

	"github.com/chatgroupd/chatgroupd/metrics"
)

func (d *run) printProgress(produced int, c counts) {
	el := time.Since(d.start).Seconds()
	p := progressFigures{
		elapsed: el, produced: produced, consumed: c.consumed, ended: c.processed,
		applied: c.outcomes[metrics.OutcomeApplied], duplicates: c.outcomes[metrics.OutcomeDuplicate],
		deadLettered: c.deadLettered(),
		rate:         c.creates / max(el, 0.001),
	}
	if d.cfg.TTY {
		// One redraw is one terminal line: cut to the width (read again each time, so a resized
		// window is followed), or the terminal wraps it and every redraw scrolls a new line.
		fmt.Fprintf(d.cfg.Out, "\r%s\x1b[K", fitProgress(d.cfg.Width(), p))
		return
	}
	fmt.Fprintln(d.cfg.Out, p.full(0))
}

// progressFigures is one progress report.
type progressFigures struct {
	elapsed                                            float64
	produced                                           int
	consumed, ended, applied, duplicates, deadLettered float64
	rate                                               float64
}

func (p progressFigures) bar(width int) string {
	if width <= 0 {
		return ""
	}
	done := 0
	if p.produced > 0 {
		done = int(float64(width) * min(p.ended/float64(p.produced), 1))
	}
	return "[" + strings.Repeat("#", done) + strings.Repeat(".", width-done) + "] "
}

func (p progressFigures) full(bar int) string {
	return p.bar(bar) + fmt.Sprintf("%5.1fs  produced %d  consumed %.0f  ended %.0f  applied %.0f  duplicates %.0f  dead-lettered %.0f  create calls %.0f/s",
		p.elapsed, p.produced, p.consumed, p.ended, p.applied, p.duplicates, p.deadLettered, p.rate)
}

// fitProgress returns the longest form of p that fits a terminal width columns wide, leaving the
// last column free (writing it makes some terminals wrap). Every form is ASCII: bytes are columns.
func fitProgress(width int, p progressFigures) string {
	forms := []string{
		p.full(24),
		p.bar(16) + fmt.Sprintf("%5.1fs  ended %.0f/%d  applied %.0f  dup %.0f  dlq %.0f  %.0f calls/s",
			p.elapsed, p.ended, p.produced, p.applied, p.duplicates, p.deadLettered, p.rate),
		p.bar(10) + fmt.Sprintf("%5.1fs ended %.0f/%d %.0f/s", p.elapsed, p.ended, p.produced, p.rate),
		fmt.Sprintf("%.0fs %.0f/%d", p.elapsed, p.ended, p.produced),
	}
	for _, f := range forms {
		if len(f) <= width-1 {
			return f
		}
	}
	last := forms[len(forms)-1]
	return last[:max(0, min(len(last), width-1))]
}
