package budget

import (
	"testing"
	"time"
)

type dbgSink struct {
	t    *testing.T
	name string
	w    *simWorld
	l    *simLimiter
}

func (d *dbgSink) SetCeiling(n, now int) {
	d.t.Logf("%v %s SetCeiling(%d, %d) share before %d", d.w.now.Sub(time.Unix(1_900_000_000, 0)), d.name, n, now, d.l.share)
	d.l.SetCeiling(n, now)
}

func (d *dbgSink) SetFence(until time.Time) { d.l.SetFence(until) }

func (d *dbgSink) Preload(n int) { d.l.Preload(n) }

func TestDbg(t *testing.T) {
	w := newWorld(t, 1, 200)
	busy, idle := w.join(), w.join()
	for _, sm := range []*simMember{busy, idle} {
		sm.m.sink = &dbgSink{t: t, name: sm.id, w: w, l: sm.lim}
	}
	busy.backlog = 1e9
	w.run(20 * time.Second)
	idle.backlog = 1e9
	w.run(2 * time.Second)
}
