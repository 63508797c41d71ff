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
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
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

// Prefix returns a random REDIS_PREFIX such as "t3f9a1c2d4e5b.". The
// prefix is remembered, so that KeysLeft can tell whether the package left
// anything under it on the shared Redis.
func Prefix() string {
	p := RandomName("t") + "."
	prefixes.Lock()
	defer prefixes.Unlock()
	prefixes.given = append(prefixes.given, p)
	return p
}

// prefixes are those Prefix gave out in this test binary.
var prefixes struct {
	sync.Mutex
	given []string
}

// DeleteKeysAtEnd deletes every key under prefix on rc (streams with their
// consumer groups, lists, strings) when the test ends. Register it before
// starting what writes there, so that it runs after that has stopped.
func DeleteKeysAtEnd(tb testing.TB, rc redis.UniversalClient, prefix string) {
	tb.Helper()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := DeleteKeys(ctx, rc, prefix); err != nil {
			tb.Errorf("delete the keys under %s: %v", prefix, err)
		}
	})
}

// DeleteKeys deletes every key under prefix (SCAN MATCH prefix*), and the
// publisher's published-id hashes of its streams ({prefix…}:published:…,
// named with a Cluster hash tag), and returns the names it deleted. On a
// Cluster it scans every master: SCAN sees the keys of one node.
func DeleteKeys(ctx context.Context, rc redis.UniversalClient, prefix string) ([]string, error) {
	cluster, ok := rc.(*redis.ClusterClient)
	if !ok {
		return deleteKeys(ctx, rc, prefix)
	}
	var mu sync.Mutex
	var deleted []string
	err := cluster.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		keys, err := deleteKeys(ctx, node, prefix)
		mu.Lock()
		defer mu.Unlock()
		deleted = append(deleted, keys...)
		return err
	})
	return deleted, err
}

// deleteKeys is DeleteKeys on one node.
func deleteKeys(ctx context.Context, rc redis.UniversalClient, prefix string) ([]string, error) {
	var deleted []string
	for _, pattern := range []string{escapeGlob(prefix) + "*", "{" + escapeGlob(prefix) + "*"} {
		iter := rc.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			key := iter.Val()
			if err := rc.Del(ctx, key).Err(); err != nil {
				return deleted, err
			}
			deleted = append(deleted, key)
		}
		if err := iter.Err(); err != nil {
			return deleted, err
		}
	}
	return deleted, nil
}

// KeysLeft deletes what is left on RedisURL under the prefixes Prefix gave
// out, and returns it: a test that does not clean up after itself. Call it
// from TestMain after m.Run, and fail the run when it returns anything.
func KeysLeft() ([]string, error) {
	prefixes.Lock()
	given := slices.Clone(prefixes.given)
	prefixes.Unlock()
	if len(given) == 0 {
		return nil, nil // no test here used Redis
	}
	opts, err := redis.ParseURL(RedisURL())
	if err != nil {
		return nil, err
	}
	rc := redis.NewClient(opts)
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var left []string
	for _, p := range given {
		keys, err := DeleteKeys(ctx, rc, p)
		left = append(left, keys...)
		if err != nil {
			return left, err
		}
	}
	return left, nil
}

// ExitUnlessClean is what TestMain does after m.Run in a package whose
// tests use Redis: exit with code, or with 1 when tests left keys behind
// under their prefixes (which it deletes).
func ExitUnlessClean(code int) {
	left, err := KeysLeft()
	switch {
	case err != nil:
		fmt.Fprintf(os.Stderr, "testenv: looking for keys the tests left on Redis: %v\n", err)
		code = 1
	case len(left) > 0:
		fmt.Fprintf(os.Stderr, "testenv: tests left %d keys on Redis under their prefixes (now deleted); every test must remove what it creates (testenv.DeleteKeysAtEnd): %s\n", len(left), strings.Join(left, " "))
		code = 1
	}
	os.Exit(code)
}

// escapeGlob escapes the characters SCAN MATCH treats as a pattern.
func escapeGlob(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\^`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

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

// SQLiteDir is a temporary directory for SQLite files, removed when the test
// ends. Unlike t.TempDir it retries the removal for a while: database/sql
// may still be opening a connection when the pool closes (it opens them on
// a goroutine Close does not wait for), and that connection creates the
// -wal and -shm files again for the moment it lives.
func SQLiteDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "allocation-sqlite-")
	if err != nil {
		tb.Fatalf("temporary directory: %v", err)
	}
	tb.Cleanup(func() {
		Eventually(tb, 10*time.Second, func() error { return os.RemoveAll(dir) })
	})
	return dir
}
