package servicelayer

import (
	"context"
	"log/slog"
)

// CauseHandler adds the cause ctx carries (request or message id) to every
// record logged with a context, so that all the lines of one unit of work can
// be found together.
type CauseHandler struct{ slog.Handler }

func (h CauseHandler) Handle(ctx context.Context, r slog.Record) error {
	if c := CauseOf(ctx); c.CorrelationID != "" {
		r.AddAttrs(slog.String("correlation_id", c.CorrelationID), slog.String("causation_id", c.CausationID))
	}
	return h.Handler.Handle(ctx, r)
}

func (h CauseHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return CauseHandler{h.Handler.WithAttrs(attrs)}
}

func (h CauseHandler) WithGroup(name string) slog.Handler {
	return CauseHandler{h.Handler.WithGroup(name)}
}
