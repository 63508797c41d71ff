package bootstrap

import (
	"context"
	"net"
	"time"
)

// announceReady logs "allocation ready" with the API's URL once the
// database and Redis answer, as GET /readyz would: the line a person who
// has just typed `make run` waits for. While they do not answer it keeps
// asking, every second at most, until ctx ends.
func (a *App) announceReady(ctx context.Context, addr net.Addr) {
	wait := 50 * time.Millisecond
	for {
		err := a.db.PingContext(ctx)
		if err == nil {
			err = a.redis.Ping(ctx).Err()
		}
		if err == nil {
			a.log.Info("allocation ready", "url", localURL(addr))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// localURL is the URL that reaches addr from this machine: a listener on
// every interface (":8080") is reached at localhost.
func localURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String()
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}
