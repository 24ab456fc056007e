package watermillpeer

import (
	"github.com/ThreeDotsLabs/watermill"
	"go.uber.org/zap"
)

// zapAdapter sends Watermill's logs to zap; Trace goes to Debug.
type zapAdapter struct{ log *zap.Logger }

func fields(f watermill.LogFields) []zap.Field {
	out := make([]zap.Field, 0, len(f))
	for k, v := range f {
		out = append(out, zap.Any(k, v))
	}
	return out
}

func (a zapAdapter) Error(msg string, err error, f watermill.LogFields) {
	a.log.Error(msg, append(fields(f), zap.Error(err))...)
}
func (a zapAdapter) Info(msg string, f watermill.LogFields)  { a.log.Info(msg, fields(f)...) }
func (a zapAdapter) Debug(msg string, f watermill.LogFields) { a.log.Debug(msg, fields(f)...) }
func (a zapAdapter) Trace(msg string, f watermill.LogFields) { a.log.Debug(msg, fields(f)...) }
func (a zapAdapter) With(f watermill.LogFields) watermill.LoggerAdapter {
	return zapAdapter{a.log.With(fields(f)...)}
}
