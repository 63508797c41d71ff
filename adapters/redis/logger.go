package redis

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// ClientLogger hands go-redis's own log lines to slog, so that they come
// out as JSON like every other line instead of as plain text on stderr.
// Install it with goredis.SetLogger; go-redis only logs what went wrong
// or was adjusted, hence the warning level.
type ClientLogger struct {
	log *slog.Logger
}

// NewClientLogger returns a go-redis logger writing to log.
func NewClientLogger(log *slog.Logger) ClientLogger {
	return ClientLogger{log: log.With("component", "go-redis")}
}

// Printf implements go-redis's Logging interface.
func (l ClientLogger) Printf(ctx context.Context, format string, v ...any) {
	msg := strings.TrimSpace(strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: "))
	l.log.WarnContext(ctx, msg)
}
