package dispatcher

import "go.uber.org/zap"

// SetShare gives this replica owned/total of every API's budget, as SetPartitions does for a
// caller that knows only how many partitions it owns (total <= 0: the whole budget). Only the
// tests still think in counts; the consumer calls SetPartitions.
func (d *Dispatcher) SetShare(owned, total int) {
	for _, l := range d.partitionLimiters() {
		l.setShare(owned, total)
	}
	d.log.Info("rate share set", zap.Int("owned", owned), zap.Int("total", total),
		zap.Float64("create_calls_per_s", d.create.rateNow()), zap.Float64("create_calls_per_s_in_1s", d.create.target()))
}
