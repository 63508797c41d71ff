package redis

import (
	"context"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Reconnection backoff: quick at first (a blip), capped so that a long outage
// costs one attempt every few seconds.
const (
	reconnectInitial = 100 * time.Millisecond
	reconnectMax     = 5 * time.Second
)

// untilCancelled runs session again and again until ctx ends, waiting with
// exponential backoff between failures, each logged as msg with attrs. A session calls healthy once it is
// connected, which resets the backoff. It returns nil when ctx ends.
func untilCancelled(ctx context.Context, log *slog.Logger, msg string, attrs []any, session func(healthy func()) error) error {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = reconnectInitial
	bo.MaxInterval = reconnectMax
	bo.MaxElapsedTime = 0 // never give up while ctx lives
	failures := 0         // in a row, since the session was last healthy
	for {
		err := session(func() {
			bo.Reset()
			failures = 0
		})
		if ctx.Err() != nil {
			return nil
		}
		failures++
		wait := bo.NextBackOff()
		log.WarnContext(ctx, msg, append(attrs, "failures", failures, "retry_in", wait.String(), "error", err)...)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}
