// Package testenv gives integration and e2e tests their own slice of the real
// services: a fresh PostgreSQL database and a random Redis prefix per run. A
// service that cannot be reached fails the test with a message saying how to
// start it; nothing is skipped silently.
package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	_ "github.com/lib/pq" // the driver the adapters use too
	"github.com/redis/go-redis/v9"
)

const startHint = "start PostgreSQL and Redis with `make services`"

// AdminDatabaseURL is the server the tests create their databases on.
func AdminDatabaseURL() string {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// RedisURL is the Redis the tests use; each run namespaces itself with Prefix.
func RedisURL() string {
	if u := os.Getenv("TEST_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

// RandomName returns prefix followed by random hex, safe in SQL identifiers.
func RandomName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// Prefix returns a random REDIS_PREFIX such as "t3f9a1c2d4e5b.".
func Prefix() string { return RandomName("t") + "." }

// FreshDatabase creates an empty database with a random name, drops it when
// the test ends, and returns its URL. It fails the test when PostgreSQL is down.
func FreshDatabase(tb testing.TB) string {
	tb.Helper()
	admin := AdminDatabaseURL()
	db, err := sql.Open("postgres", admin)
	if err != nil {
		tb.Fatalf("open %s: %v", admin, err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	name := RandomName("allocation_test_")
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("PostgreSQL at %s is not usable (%v): %s, or set TEST_DATABASE_URL", redact(admin), err, startHint)
	}
	tb.Cleanup(func() {
		db, err := sql.Open("postgres", admin)
		if err != nil {
			tb.Errorf("drop database %s: %v", name, err)
			return
		}
		defer db.Close()
		if _, err := db.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)"); err != nil {
			tb.Errorf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		tb.Fatalf("parse %s: %v", admin, err)
	}
	u.Path = "/" + name
	return u.String()
}

// Redis returns a client for RedisURL, closed when the test ends. It fails the
// test when Redis is down.
func Redis(tb testing.TB) *redis.Client {
	tb.Helper()
	opts, err := redis.ParseURL(RedisURL())
	if err != nil {
		tb.Fatalf("parse %s: %v", RedisURL(), err)
	}
	c := redis.NewClient(opts)
	tb.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		tb.Fatalf("Redis at %s is not reachable (%v): %s, or set TEST_REDIS_URL", RedisURL(), err, startHint)
	}
	return c
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, ok := u.User.Password(); ok {
		return strings.Replace(raw, u.User.String()+"@", u.User.Username()+":***@", 1)
	}
	return raw
}

// Eventually retries check with exponential backoff until it returns nil or
// timeout passes, then fails the test with the last error it saw.
func Eventually(tb testing.TB, timeout time.Duration, check func() error) {
	tb.Helper()
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 5 * time.Millisecond
	bo.MaxInterval = 250 * time.Millisecond
	bo.MaxElapsedTime = timeout
	if err := backoff.Retry(check, bo); err != nil {
		tb.Fatalf("gave up after %s: %v", timeout, err)
	}
}
