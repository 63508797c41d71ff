package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"allocation/adapters/redis"
	"allocation/tests/testenv"
)

type delivery struct {
	channel, payload string
}

// collect returns a handler that forwards every message to the channel.
func collect() (func(context.Context, string, []byte), <-chan delivery) {
	ch := make(chan delivery, 1000)
	return func(_ context.Context, channel string, payload []byte) {
		ch <- delivery{channel, string(payload)}
	}, ch
}

func awaitDelivery(t *testing.T, ch <-chan delivery) delivery {
	t.Helper()
	select {
	case d := <-ch:
		return d
	case <-time.After(waitTimeout):
		t.Fatalf("nothing handled within %s", waitTimeout)
		return delivery{}
	}
}

func TestRedisSubscriberHandsOverMessagesInOrderWithUnprefixedChannels(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, connect redisConnector) {
		rc := connect(t)
		prefix, other := testenv.Prefix(), testenv.Prefix()
		testenv.DeleteKeysAtEnd(t, rc, prefix)
		testenv.DeleteKeysAtEnd(t, rc, other)
		log, _ := testLogger(t)
		handle, got := collect()
		startSubscriber(t, redis.NewSubscriber(rc, prefix, log), []string{"alpha", "beta"}, handle)

		var want []delivery
		for i := range 50 {
			channel := []string{"alpha", "beta"}[i%2]
			want = append(want, delivery{channel, strconv.Itoa(i)})
			publish(t, rc, prefix+channel, strconv.Itoa(i))
			if i == 25 {
				// Same channel names under another prefix: another deployment.
				publish(t, rc, other+"alpha", "not ours")
				publish(t, rc, "alpha", "not ours either")
			}
		}
		// One at a time, in order: had a foreign message got through, it would
		// show up among these.
		for i, w := range want {
			if d := awaitDelivery(t, got); d != w {
				t.Fatalf("message %d = %+v, want %+v", i, d, w)
			}
		}
	})
}

func TestRedisSubscriberReturnsNilWhenItsContextEnds(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, connect redisConnector) {
		rc := connect(t)
		log, _ := testLogger(t)
		prefix := testenv.Prefix()
		testenv.DeleteKeysAtEnd(t, rc, prefix)
		sub := redis.NewSubscriber(rc, prefix, log)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- sub.Run(ctx, []string{"alpha"}, func(context.Context, string, []byte) {}) }()
		select {
		case <-sub.Ready():
		case <-time.After(waitTimeout):
			t.Fatal("subscription not active")
		}
		stopRun(t, cancel, done)
	})
}

// pubsubClientIDs lists the ids of the connections named name.
func pubsubClientIDs(t *testing.T, rc *goredis.Client, name string) []int64 {
	t.Helper()
	list, err := rc.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatalf("CLIENT LIST: %v", err)
	}
	var ids []int64
	for _, line := range strings.Split(list, "\n") {
		fields := map[string]string{}
		for _, kv := range strings.Fields(line) {
			k, v, _ := strings.Cut(kv, "=")
			fields[k] = v
		}
		if fields["name"] != name || fields["sub"] == "0" {
			continue
		}
		id, err := strconv.ParseInt(fields["id"], 10, 64)
		if err != nil {
			t.Fatalf("CLIENT LIST line %q: %v", line, err)
		}
		ids = append(ids, id)
	}
	return ids
}

func TestRedisSubscriberResubscribesWhenItsConnectionIsKilled(t *testing.T) {
	t.Parallel()
	admin := testenv.Redis(t)
	prefix := testenv.Prefix()
	testenv.DeleteKeysAtEnd(t, admin, prefix)
	// Its own client with a name, so the test kills this connection only.
	opts, err := goredis.ParseURL(testenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	opts.ClientName = testenv.RandomName("subscriber-")
	rc := goredis.NewClient(opts)
	t.Cleanup(func() { _ = rc.Close() })

	log, logs := testLogger(t)
	handle, got := collect()
	startSubscriber(t, redis.NewSubscriber(rc, prefix, log), []string{"alpha"}, handle)

	ids := pubsubClientIDs(t, admin, opts.ClientName)
	if len(ids) != 1 {
		t.Fatalf("subscriber connections = %v, want one", ids)
	}
	killed := ids[0]
	if err := admin.ClientKillByFilter(context.Background(), "ID", strconv.FormatInt(killed, 10)).Err(); err != nil {
		t.Fatalf("CLIENT KILL ID %d: %v", killed, err)
	}

	// Back when a new connection of the subscriber listens on the channel.
	testenv.Eventually(t, waitTimeout, func() error {
		ids := pubsubClientIDs(t, admin, opts.ClientName)
		n, err := admin.PubSubNumSub(context.Background(), prefix+"alpha").Result()
		if err != nil {
			return err
		}
		if len(ids) != 1 || ids[0] == killed || n[prefix+"alpha"] != 1 {
			return fmt.Errorf("subscriber connections %v (killed %d), subscribers on the channel %d", ids, killed, n[prefix+"alpha"])
		}
		return nil
	})
	publish(t, admin, prefix+"alpha", "after the kill")
	if d := awaitDelivery(t, got); d != (delivery{"alpha", "after the kill"}) {
		t.Errorf("handled %+v, want the message published after the kill", d)
	}
	if logs.Count("re-subscribing") == 0 {
		t.Error("the lost subscription was not logged")
	}
}

func TestRedisSubscriberKeepsRetryingWhileRedisIsUnreachable(t *testing.T) {
	t.Parallel()
	// A port nobody listens on: every connection attempt is refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	rc := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { _ = rc.Close() })

	log, logs := testLogger(t)
	sub := redis.NewSubscriber(rc, testenv.Prefix(), log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx, []string{"alpha"}, func(context.Context, string, []byte) {}) }()

	testenv.Eventually(t, waitTimeout, func() error {
		if n := logs.Count("re-subscribing"); n < 3 {
			return fmt.Errorf("%d attempts logged, want 3", n)
		}
		return nil
	})
	select {
	case err := <-done:
		t.Fatalf("Run gave up on its own: %v", err)
	default:
	}
	stopRun(t, cancel, done)
}

func TestRedisDeadLettersKeepChannelPayloadAndReason(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, connect redisConnector) {
		rc := connect(t)
		prefix := testenv.Prefix()
		testenv.DeleteKeysAtEnd(t, rc, prefix)
		log, _ := testLogger(t)
		sub := redis.NewSubscriber(rc, prefix, log)

		before := time.Now().UTC().Add(-time.Second)
		payload := `{"batchref": "b1", "qty": "five"}`
		if err := sub.DeadLetter(context.Background(), "change_batch_quantity", []byte(payload), "qty must be an integer"); err != nil {
			t.Fatalf("DeadLetter: %v", err)
		}

		raw, err := rc.LRange(context.Background(), prefix+"dead_letter", 0, -1).Result()
		if err != nil {
			t.Fatalf("LRANGE: %v", err)
		}
		if len(raw) != 1 {
			t.Fatalf("dead letters = %q, want one", raw)
		}
		var got map[string]string
		if err := json.Unmarshal([]byte(raw[0]), &got); err != nil {
			t.Fatalf("dead letter %s: %v", raw[0], err)
		}
		at, err := time.Parse(time.RFC3339, got["at"])
		if err != nil || at.Before(before) || at.After(time.Now().Add(time.Second)) {
			t.Errorf("at = %q (%v), want the current time in RFC 3339", got["at"], err)
		}
		delete(got, "at")
		want := map[string]string{"channel": "change_batch_quantity", "payload": payload, "reason": "qty must be an integer"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("dead letter = %v, want %v", got, want)
		}
	})
}

func TestRedisDeadLetterListKeepsOnlyTheNewestTenThousand(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, connect redisConnector) {
		rc := connect(t)
		prefix := testenv.Prefix()
		key := prefix + "dead_letter"
		testenv.DeleteKeysAtEnd(t, rc, prefix)
		old := make([]any, redis.MaxDeadLetters)
		for i := range old {
			old[i] = fmt.Sprintf(`{"old": %d}`, i)
		}
		if err := rc.RPush(context.Background(), key, old...).Err(); err != nil {
			t.Fatal(err)
		}
		log, _ := testLogger(t)
		if err := redis.NewSubscriber(rc, prefix, log).DeadLetter(context.Background(), "allocate", []byte("{"), "newest"); err != nil {
			t.Fatalf("DeadLetter: %v", err)
		}

		n, err := rc.LLen(context.Background(), key).Result()
		if err != nil || n != redis.MaxDeadLetters {
			t.Fatalf("LLEN = %d, %v; want %d", n, err, redis.MaxDeadLetters)
		}
		ends, err := rc.LRange(context.Background(), key, 0, 0).Result()
		if err != nil || ends[0] != `{"old": 1}` {
			t.Errorf("oldest kept = %v, %v; want the second oldest", ends, err)
		}
		ends, err = rc.LRange(context.Background(), key, -1, -1).Result()
		var last redis.DeadLetterRecord
		if err == nil {
			err = json.Unmarshal([]byte(ends[0]), &last)
		}
		if err != nil || last.Reason != "newest" {
			t.Errorf("newest = %v, %v; want the letter just set aside", ends, err)
		}
	})
}

// stopRun ends a Run through its context and checks that it returns nil in
// time.
func stopRun(t *testing.T, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Run still running after its context ended")
	}
}
