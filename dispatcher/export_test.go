package dispatcher

import (
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/ratelimit"
)

// SetShare gives a new dispatcher owned/total of every API's budget (total <= 0: the whole
// budget), for a caller that knows only how many partitions it owns; the consumer calls
// SetPartitions. On a limiter that has no share yet, a ceiling with nothing at once is exactly
// such a first share: in force one window from now.
func (d *Dispatcher) SetShare(owned, total int) {
	for _, l := range d.partitionLimiters() {
		budget := map[*ratelimit.Limiter]float64{d.create: d.cfg.RateLimit, d.get: d.cfg.GetRateLimit,
			d.update: d.cfg.UpdateRateLimit, d.delete: d.cfg.DeleteRateLimit}[l]
		if total > 0 {
			budget *= float64(min(max(owned, 0), total)) / float64(total)
		}
		l.SetCeiling(budget, 0)
	}
	d.log.Info("rate share set", zap.Int("owned", owned), zap.Int("total", total),
		zap.Float64("create_calls_per_s", d.create.Rate()), zap.Float64("create_calls_per_s_in_1s", d.create.Target()))
}
