package integration_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"allocation/adapters/embeddedredis"
	"allocation/tests/testenv"
)

// The publisher's dedupe keys (SET NX EX) must expire on the embedded
// server as on a real Redis, or they pile up for as long as it runs.
func TestEmbeddedRedisExpiresKeysAsTimePasses(t *testing.T) {
	t.Parallel()
	rc := embeddedRedis(t)
	ctx := context.Background()
	if ok, err := rc.SetNX(ctx, "published:m1", "1", 200*time.Millisecond).Result(); err != nil || !ok {
		t.Fatalf("SET NX EX: %v, %v", ok, err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if n, err := rc.Exists(ctx, "published:m1").Result(); err != nil || n != 0 {
			return errors.Join(errors.New("the key outlived its expiry"), err)
		}
		return nil
	})
}

// A second server on a taken address fails to start with an error that
// names the address, rather than serving nobody.
func TestEmbeddedRedisRefusesATakenAddress(t *testing.T) {
	t.Parallel()
	first, err := embeddedredis.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(first.Close)
	if second, err := embeddedredis.Start(first.Addr()); err == nil || !strings.Contains(err.Error(), first.Addr()) {
		if second != nil {
			second.Close()
		}
		t.Fatalf("second server on %s: %v, want an error naming the address", first.Addr(), err)
	}
}
