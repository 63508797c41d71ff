package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"allocation/tests/testenv"
)

func (s *service) appendToStream(pipe goredis.Pipeliner, stream string, body map[string]any) {
	raw, _ := json.Marshal(body)
	pipe.XAdd(context.Background(), &goredis.XAddArgs{Stream: s.prefix + stream, Values: map[string]any{"data": raw}})
}

// announcements reads the whole outbound stream: order id -> how often.
func (s *service) announcements() (map[string]int, error) {
	entries, err := s.lineAllocatedEntries()
	if err != nil {
		return nil, err
	}
	seen := map[string]int{}
	for _, e := range entries {
		seen[e.OrderID]++
	}
	return seen, nil
}

// lineAllocatedEntries reads the whole outbound stream, oldest first.
func (s *service) lineAllocatedEntries() ([]lineAllocated, error) {
	entries, err := s.redis.XRange(context.Background(), s.prefix+"line_allocated", "-", "+").Result()
	if err != nil {
		return nil, err
	}
	bodies := make([]lineAllocated, 0, len(entries))
	for _, e := range entries {
		var body lineAllocated
		raw, _ := e.Values["data"].(string)
		if err := json.Unmarshal([]byte(raw), &body); err != nil {
			return nil, fmt.Errorf("entry %s: %w", e.ID, err)
		}
		bodies = append(bodies, body)
	}
	return bodies, nil
}

// Messages sent while no consumer runs: the stream keeps them for the next
// one to start; pub/sub drops them.
func TestStreamMessagesWaitForAConsumerWhilePubSubLosesThem(t *testing.T) {
	t.Parallel()
	s := startService(t)
	sku, ref := testenv.RandomName("sku-"), testenv.RandomName("batch-")
	s.addBatch(ref, sku, 100, nil)
	if err := s.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	pipe := s.redis.Pipeline()
	for i := range 5 {
		s.appendToStream(pipe, "allocate", map[string]any{"orderid": fmt.Sprintf("streamed-%d", i), "sku": sku, "qty": 1})
	}
	if _, err := pipe.Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		s.publish("allocate", map[string]any{"orderid": fmt.Sprintf("published-%d", i), "sku": sku, "qty": 1})
	}

	s.start()
	testenv.Eventually(t, 20*time.Second, func() error {
		for i := range 5 {
			if status, _ := s.allocations(fmt.Sprintf("streamed-%d", i)); status != http.StatusOK {
				return fmt.Errorf("streamed-%d not allocated", i)
			}
		}
		return nil
	})
	for i := range 5 {
		if status, _ := s.allocations(fmt.Sprintf("published-%d", i)); status != http.StatusNotFound {
			t.Fatalf("published-%d was allocated: pub/sub should have lost it while nobody listened", i)
		}
	}
}

// Three replicas share 2,000 allocate messages on the stream; one is killed
// with SIGKILL midway. Every order is allocated exactly once and announced
// exactly once on the outbound stream.
func TestThreeReplicasShareTheStreamAndSurviveAKill(t *testing.T) {
	// Not parallel: three services applying 2,000 messages as fast as the
	// machine allows starve a latency-bound test beside them (200 requests
	// on one SKU within 4 s each) on two cores.
	threeReplicasShareTheStream(t, newService(t, testenv.RedisURL()), 2000)
}

// threeReplicasShareTheStream starts s (prepared, not started) and two
// replicas of it, appends orders allocate messages to the stream and kills
// one replica with SIGKILL a third of the way through. Every order must be
// allocated exactly once and announced exactly once on the outbound stream.
func threeReplicasShareTheStream(t *testing.T, s *service, orders int) {
	t.Helper()
	s.env = append(s.env, "CONSUMER_NAME=replica-1", "STREAM_CLAIM_IDLE=1s")
	s.start()
	victim := s.replica("CONSUMER_NAME=replica-2")
	victim.start()
	third := s.replica("CONSUMER_NAME=replica-3")
	third.start()

	skus := make([]string, 20)
	for i := range skus {
		skus[i] = testenv.RandomName("sku-")
		s.addBatch(testenv.RandomName("batch-"), skus[i], 1000, nil)
	}
	ps := s.redis.Subscribe(context.Background(), s.prefix+"line_allocated")
	if _, err := ps.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := collect(t, ps)
	killed := make(chan struct{})
	got.when(orders/3, func() {
		_ = victim.cmd.Process.Kill()
		close(killed)
	})

	pipe := s.redis.Pipeline()
	for i := range orders {
		s.appendToStream(pipe, "allocate", map[string]any{"orderid": fmt.Sprintf("order-%d", i), "sku": skus[i%len(skus)], "qty": 1})
	}
	if _, err := pipe.Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-killed:
	case <-time.After(60 * time.Second):
		t.Fatalf("only %d announcements within 60s", got.count())
	}
	victim.kill()

	testenv.Eventually(t, 90*time.Second, func() error {
		seen, err := s.announcements()
		if err != nil {
			return err
		}
		if len(seen) != orders {
			return fmt.Errorf("%d of %d orders announced on the stream", len(seen), orders)
		}
		return nil
	})
	seen, _ := s.announcements()
	for order, n := range seen {
		if n != 1 {
			t.Errorf("%s announced %d times", order, n)
		}
	}
	// Every replica answers the API, and the view agrees.
	for i := range orders {
		replica := []*service{s, third}[i%2]
		status, rows := replica.allocations(fmt.Sprintf("order-%d", i))
		if status != http.StatusOK || len(rows) != 1 {
			t.Fatalf("order-%d: %d %v", i, status, rows)
		}
	}
}
