package integration_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"allocation/adapters/redis"
	"allocation/servicelayer"
	"allocation/tests/testenv"
)

// On a Redis Cluster PUBLISH answers how many subscribers of the node that
// ran it heard the message, while the message goes to every node: a
// re-driven pub/sub dead letter counts the subscribers of every node before
// it says that nobody heard it. The dead-letter list's push and trim, one
// transaction on one key, work there too.
func TestDeadLettersAndRedrivesOnARedisCluster(t *testing.T) {
	t.Parallel()
	cluster := testenv.StartRedisCluster(t, 3)
	rc := cluster.Client(t)
	prefix := testenv.Prefix()
	testenv.DeleteKeysAtEnd(t, rc, prefix)
	redriver := redis.NewRedriver(rc, prefix)
	letter := servicelayer.DeadLetter{Channel: "allocate", Payload: []byte(`{"orderid": "o1"}`)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if err := redriver.Redrive(ctx, letter); !errors.Is(err, redis.ErrNoSubscriber) {
		t.Fatalf("re-driven with nobody subscribed: %v, want ErrNoSubscriber", err)
	}
	got := make(chan []byte, 100)
	sub := redis.NewSubscriber(rc, prefix, slog.Default())
	for range 3 {
		if err := sub.DeadLetter(ctx, "allocate", letter.Payload, "test"); err != nil {
			t.Fatalf("dead letter: %v", err)
		}
	}
	if n, err := rc.LLen(ctx, prefix+redis.DeadLetters).Result(); err != nil || n != 3 {
		t.Fatalf("dead-letter list holds %d (%v), want 3", n, err)
	}
	startSubscriber(t, sub, []string{"allocate"}, func(_ context.Context, _ string, payload []byte) {
		got <- payload
	})
	// PUBLISH goes to a node picked at random: twenty tries reach the
	// subscriber's node and the two others, all but surely.
	for i := range 20 {
		if err := redriver.Redrive(ctx, letter); err != nil {
			t.Fatalf("re-drive %d: %v", i, err)
		}
		select {
		case p := <-got:
			if string(p) != string(letter.Payload) {
				t.Fatalf("received %q, want %q", p, letter.Payload)
			}
		case <-time.After(waitTimeout):
			t.Fatalf("re-drive %d: nothing received within %s", i, waitTimeout)
		}
	}
}
