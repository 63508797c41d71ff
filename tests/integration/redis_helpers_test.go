package integration_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"allocation/adapters/embeddedredis"
	"allocation/adapters/redis"
	"allocation/tests/testenv"
)

// waitTimeout bounds every wait for something asynchronous over Redis.
const waitTimeout = 5 * time.Second

// logBuffer collects log lines from goroutines that outlive a test's checks.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Count is how many lines contain s.
func (b *logBuffer) Count(s string) int {
	n := 0
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// testLogger logs to a buffer that is shown when the test fails.
func testLogger(t *testing.T) (*slog.Logger, *logBuffer) {
	t.Helper()
	buf := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("service log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// subscribeTo listens on one full channel name, returning once Redis has
// confirmed the subscription, so nothing published afterwards is missed.
func subscribeTo(t *testing.T, rc *goredis.Client, channel string) <-chan *goredis.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ps := rc.Subscribe(ctx, channel)
	t.Cleanup(func() { _ = ps.Close() })
	msg, err := ps.Receive(ctx)
	if err != nil {
		t.Fatalf("subscribe to %s: %v", channel, err)
	}
	if sub, ok := msg.(*goredis.Subscription); !ok || sub.Kind != "subscribe" {
		t.Fatalf("subscribe to %s: got %v, want a subscription confirmation", channel, msg)
	}
	return ps.Channel(goredis.WithChannelSize(1000))
}

// awaitMessage returns the next message on ch, failing after waitTimeout.
func awaitMessage(t *testing.T, ch <-chan *goredis.Message) *goredis.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(waitTimeout):
		t.Fatalf("no message within %s", waitTimeout)
		return nil
	}
}

// startSubscriber runs sub until the test ends and returns once its
// subscription is active. The test fails if Run returns before the test
// ends, or with an error.
func startSubscriber(t *testing.T, sub *redis.Subscriber, channels []string, handle func(context.Context, string, []byte)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx, channels, handle) }()
	t.Cleanup(func() {
		select {
		case err := <-done:
			t.Errorf("Run returned %v while its context was live; it must keep going", err)
			return
		default:
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after cancel, want nil", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("Run did not return within %s of cancel", waitTimeout)
		}
	})
	select {
	case <-sub.Ready():
	case err := <-done:
		t.Fatalf("Run returned before subscribing: %v", err)
	case <-time.After(waitTimeout):
		t.Fatalf("subscription not active within %s", waitTimeout)
	}
}

// publish sends payload on the full channel name.
func publish(t *testing.T, rc *goredis.Client, channel, payload string) {
	t.Helper()
	if err := rc.Publish(context.Background(), channel, payload).Err(); err != nil {
		t.Fatalf("publish on %s: %v", channel, err)
	}
}

// redisConnector returns a client of one Redis server for a test.
type redisConnector func(t testing.TB) *goredis.Client

// redisServers are the Redis servers the service talks to: the real one,
// and the embedded one it starts itself when REDIS_URL is unset. The tests
// of what the service asks of Redis (scripts, pub/sub, streams, lists) run
// on both.
func redisServers() map[string]redisConnector {
	return map[string]redisConnector{"redis": testenv.Redis, "embedded": embeddedRedis}
}

// onEveryRedis runs test once per server.
func onEveryRedis(t *testing.T, test func(t *testing.T, connect redisConnector)) {
	t.Helper()
	onEach(t, redisServers(), test)
}

// embeddedRedis starts an embedded server of the test's own on a free
// port, stopped when the test ends, and returns a client of it.
func embeddedRedis(t testing.TB) *goredis.Client {
	t.Helper()
	srv, err := embeddedredis.Start("127.0.0.1:0")
	if err != nil {
		t.Fatalf("embedded redis: %v", err)
	}
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	t.Cleanup(func() {
		_ = c.Close()
		srv.Close()
	})
	return c
}
