package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"allocation/tests/testenv"
)

// newClusterService prepares a service on a Redis Cluster of three masters
// of the test's own, without starting it; REDIS_CLUSTER_ADDRS names the
// first named of them (go-redis finds the others).
func newClusterService(t *testing.T, named int) *service {
	t.Helper()
	c := testenv.StartRedisCluster(t, 3)
	return newServiceOn(t, c.Client(t), "REDIS_CLUSTER_ADDRS="+strings.Join(c.Addrs[:named], ","))
}

// On a Redis Cluster the book's scenario works over pub/sub (published on
// one node, heard on every one), an operator re-drives a refused message,
// and over the streams, whose keys live on different nodes, a
// change_batch_quantity entry moves the order, and both the
// line_deallocated and the line_allocated it causes reach their streams
// and channels.
func TestTheBooksScenarioOnARedisCluster(t *testing.T) {
	t.Parallel()
	s := newClusterService(t, 3)
	s.start()
	if !strings.Contains(s.logs.String(), `"redis":"cluster"`) {
		t.Fatalf("the start-up line does not say it runs on the cluster:\n%s", s.logs.String())
	}
	reallocationScenario(t, s)
	// The operator's retry reads the same settings, and finds the
	// subscriber on whichever node it is.
	operatorRetriesARefusedMessage(t, s)

	orderID, sku := testenv.RandomName("order-"), testenv.RandomName("sku-")
	earlier, later := testenv.RandomName("old-"), testenv.RandomName("newer-")
	s.addBatch(earlier, sku, 10, "2011-01-01")
	s.addBatch(later, sku, 10, "2011-01-02")
	if status, body := s.post("/allocate", map[string]any{"orderid": orderID, "sku": sku, "qty": 10}); status != http.StatusAccepted {
		t.Fatalf("allocate: %d %v", status, body)
	}
	deallocated, allocated := s.subscribe("line_deallocated"), s.subscribe("line_allocated")
	pipe := s.redis.Pipeline()
	s.appendToStream(pipe, "change_batch_quantity", map[string]any{"batchref": earlier, "qty": 5})
	if _, err := pipe.Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	awaitLineAllocated(t, allocated, orderID, later)
	awaitLineAllocated(t, deallocated, orderID, earlier) // same fields: the batch it left
	testenv.Eventually(t, 10*time.Second, func() error {
		for stream, batch := range map[string]string{"line_deallocated": earlier, "line_allocated": later} {
			if err := onStream(s.redis, s.prefix+stream, orderID, batch); err != nil {
				return err
			}
		}
		return nil
	})
}

// onStream says whether stream has an entry about orderID on batchRef.
func onStream(rc goredis.UniversalClient, stream, orderID, batchRef string) error {
	entries, err := rc.XRange(context.Background(), stream, "-", "+").Result()
	if err != nil {
		return err
	}
	for _, e := range entries {
		var body lineAllocated
		raw, _ := e.Values["data"].(string)
		if json.Unmarshal([]byte(raw), &body) == nil && body.OrderID == orderID && body.BatchRef == batchRef {
			return nil
		}
	}
	return fmt.Errorf("no entry of %s on %s in %s (%d entries)", orderID, batchRef, stream, len(entries))
}

// Three replicas on a Redis Cluster, told of one node only, share the
// consumer group of the allocate stream; one is killed midway. Every order
// is allocated and announced exactly once.
func TestThreeReplicasShareTheStreamOnARedisCluster(t *testing.T) {
	// Not parallel, like the same test on one Redis.
	threeReplicasShareTheStream(t, newClusterService(t, 1), 600)
}
