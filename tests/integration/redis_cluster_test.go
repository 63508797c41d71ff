package integration_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
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

// On a Redis Cluster the two outbound streams hash to different slots, and
// go-redis would send the nodes' shares of one pipeline at the same time:
// the publisher sends each switch of stream in a pipeline of its own, after
// the calls before it, so that a line_deallocated is published before the
// line_allocated that follows it. A prefix with a hash tag puts both
// streams in one slot, and the batch goes in one pipeline again.
func TestRedisPublishBatchOnAClusterWaitsForTheOtherStreamBeforeSwitching(t *testing.T) {
	t.Parallel()
	rc := testenv.StartRedisCluster(t, 3).Client(t)
	ctx := context.Background()
	batch := []servicelayer.Envelope{deallocatedEnv(0), allocatedEnv(0), deallocatedEnv(1), allocatedEnv(1), allocatedEnv(2), deallocatedEnv(2)}
	for _, c := range []struct {
		prefix    string
		pipelines int64
	}{
		{testenv.Prefix(), 5}, // [d0] [a0] [d1] [a1 a2] [d2]
		{"{" + testenv.Prefix() + "}.", 1},
	} {
		testenv.DeleteKeysAtEnd(t, rc, c.prefix)
		pub := redis.NewPublisher(rc, c.prefix)
		// Load the script first: NOSCRIPT would cost round trips of its own.
		if err := pub.PublishBatch(ctx, []servicelayer.Envelope{allocatedEnv(100), deallocatedEnv(100)}); err != nil {
			t.Fatal(err)
		}
		trips := &roundTrips{}
		rc.AddHook(trips)
		if err := pub.PublishBatch(ctx, batch); err != nil {
			t.Fatalf("prefix %s: %v", c.prefix, err)
		}
		if got := trips.trips.Load(); got != c.pipelines {
			t.Errorf("prefix %s: %d round trips, want %d", c.prefix, got, c.pipelines)
		}
		want := byChannel(batch)
		for _, channel := range []string{redis.LineAllocated, redis.LineDeallocated} {
			entries, err := rc.XRange(ctx, c.prefix+channel, "-", "+").Result()
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, e := range entries[1:] { // after the warm-up's
				id, _ := e.Values["message_id"].(string)
				ids = append(ids, id)
			}
			if !slices.Equal(ids, want[channel]) {
				t.Errorf("prefix %s: %s holds %v, want %v", c.prefix, channel, ids, want[channel])
			}
		}
	}
}
