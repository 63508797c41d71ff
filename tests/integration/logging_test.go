package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"allocation/adapters/redis"
	"allocation/bootstrap"
	"allocation/tests/testenv"
)

// logLines decodes every line of a JSON log, failing the test on one that
// is not JSON: a plain-text line among them breaks log shippers.
func logLines(t *testing.T, logs string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, raw := range strings.Split(strings.TrimSpace(logs), "\n") {
		if raw == "" {
			continue
		}
		var line map[string]any
		if err := json.Unmarshal([]byte(raw), &line); err != nil {
			t.Fatalf("a log line is not JSON (%v): %s", err, raw)
		}
		lines = append(lines, line)
	}
	return lines
}

// While Redis is unreachable the subscriber says when it tries again as a
// duration people read ("1.5s"), not as a count of nanoseconds.
func TestRedisReconnectWarningsGiveTheWaitAsADuration(t *testing.T) {
	t.Parallel()
	logs := &lockedBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	rc := goredis.NewClient(&goredis.Options{Addr: freeLoopbackAddr(t), MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { _ = rc.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- redis.NewSubscriber(rc, testenv.Prefix(), log).Run(ctx, []string{"allocate"}, func(context.Context, string, []byte) {})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	var warning map[string]any
	testenv.Eventually(t, 10*time.Second, func() error {
		for _, line := range logLines(t, logs.String()) {
			if line["msg"] == "redis subscription lost, re-subscribing" {
				warning = line
				return nil
			}
		}
		return fmt.Errorf("no reconnect warning yet; log:\n%s", logs.String())
	})
	wait, ok := warning["retry_in"].(string)
	if !ok {
		t.Fatalf("retry_in is %T %v, want a duration string such as 500ms", warning["retry_in"], warning["retry_in"])
	}
	if d, err := time.ParseDuration(wait); err != nil || d <= 0 {
		t.Fatalf("retry_in %q is not a positive duration: %v", wait, err)
	}
}

// go-redis's own log lines (here: a TTL it rounds up) come out through the
// service's JSON log, marked as go-redis's, once the service is built.
func TestGoRedisLogsComeOutAsJSONThroughTheServiceLog(t *testing.T) {
	logs := &lockedBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	cfg := bootstrap.Config{DataDir: testenv.SQLiteDir(t), EmbeddedRedisAddr: "127.0.0.1:0", HTTPAddr: ":0", ConsumerConcurrency: 1}
	ctx := context.Background()
	if err := bootstrap.Migrate(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	app, err := bootstrap.New(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.Close)

	// Logged by go-redis while it builds the command: no server needed.
	rc := goredis.NewClient(&goredis.Options{Addr: freeLoopbackAddr(t), MaxRetries: -1})
	t.Cleanup(func() { _ = rc.Close() })
	_ = rc.Set(ctx, testenv.RandomName("k"), "v", time.Microsecond)

	for _, line := range logLines(t, logs.String()) {
		if line["component"] == "go-redis" && strings.Contains(fmt.Sprint(line["msg"]), "truncating to 1ms") {
			if line["level"] != "WARN" {
				t.Errorf("go-redis line at level %v, want WARN", line["level"])
			}
			return
		}
	}
	t.Fatalf("go-redis's line is not in the service log:\n%s", logs.String())
}

// An admin address that cannot be listened on fails Run, and the API
// listener it had opened is closed again rather than left serving.
func TestAnAdminAddressInUseFailsRunAndClosesTheAPIListener(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	httpAddr := freeLoopbackAddr(t)
	cfg := bootstrap.Config{DataDir: testenv.SQLiteDir(t), EmbeddedRedisAddr: "127.0.0.1:0", HTTPAddr: httpAddr,
		AdminAddr: busy.Addr().String(), ConsumerConcurrency: 1}
	ctx := context.Background()
	if err := bootstrap.Migrate(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	app, err := bootstrap.New(ctx, cfg, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.Close)
	err = app.Run(ctx, bootstrap.Parts{HTTP: true})
	if err == nil || !strings.Contains(err.Error(), "admin") {
		t.Fatalf("Run: %v, want an error about the admin listener", err)
	}
	if c, err := net.Dial("tcp", httpAddr); err == nil {
		c.Close()
		t.Fatalf("the API listener on %s still accepts connections", httpAddr)
	}
}
