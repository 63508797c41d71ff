package redis

import (
	"context"
	"log/slog"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// watchInterval is how often Watch pings Redis: a publisher paused by an
// outage resumes within about this long of Redis coming back, where its own
// backoff could wait up to 30 s. Four PINGs a second cost Redis nothing.
const watchInterval = 250 * time.Millisecond

// Watch pings Redis until ctx ends. It calls lost when Redis stops
// answering, so that requests stop trying to publish at once (a frozen Redis
// would hold each for its read timeout), and back when it answers again, so
// that the outbox publishes what it kept meanwhile instead of waiting out
// its backoff.
func Watch(ctx context.Context, c goredis.UniversalClient, log *slog.Logger, lost, back func(context.Context)) {
	down := false
	t := time.NewTicker(watchInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, watchInterval)
		err := c.Ping(pctx).Err()
		cancel()
		switch {
		case err != nil && !down && ctx.Err() == nil:
			down = true
			log.WarnContext(ctx, "redis is not answering; events are kept in the outbox until it does", "error", err)
			lost(ctx)
		case err == nil && down:
			down = false
			log.InfoContext(ctx, "redis is back; publishing what the outbox kept")
			back(ctx)
		}
	}
}
