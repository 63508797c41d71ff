package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"allocation/tests/testenv"
)

// On a master, a replica and a Sentinel, all asking for a password, the
// book's scenario works; then the master is killed. Allocations made while
// the Sentinel fails over and after are all answered 202 and all
// published, once each and in order (the outbox retries), and the consumer
// group goes on on the promoted replica: a message sent on the stream, and
// one on the channel, after the failover are processed. The password is
// never logged.
func TestASentinelFailoverLosesNoPublicationAndTheConsumersCarryOn(t *testing.T) {
	t.Parallel()
	st := testenv.StartRedisSentinel(t)
	s := newServiceOn(t, st.Client(t), "REDIS_SENTINEL_MASTER="+st.Master, "REDIS_SENTINEL_ADDRS="+st.Addr,
		"REDIS_PASSWORD="+st.Password, "REDIS_SENTINEL_PASSWORD="+st.Password)
	s.start()
	reallocationScenario(t, s)

	run := newOutageRun(s, 5)
	for range 20 {
		run.allocate()
	}
	run.awaitPublishedInOrder(s.redis, 30*time.Second)
	// Replication is asynchronous: what the master had not passed on when it
	// died is lost with it. Wait for the replica, so that the test is about
	// what happens from the failover on.
	if n, err := s.redis.Do(context.Background(), "WAIT", 1, 5000).Int(); err != nil || n < 1 {
		t.Fatalf("WAIT for the replica: %d replicas, %v", n, err)
	}

	st.KillMaster()
	killed := time.Now()
	for deadline := killed.Add(60 * time.Second); st.FailedOver() != nil; {
		if time.Now().After(deadline) {
			t.Fatalf("no failover within 60s: %v", st.FailedOver())
		}
		run.allocate()
		time.Sleep(50 * time.Millisecond) // a steady trickle of orders through the failover
	}
	during := run.n - 20
	t.Logf("failover took %s; %d allocations made meanwhile", time.Since(killed).Round(time.Millisecond), during)
	for range 20 {
		run.allocate()
	}
	took := run.awaitPublishedInOrder(s.redis, 60*time.Second)
	t.Logf("%d allocations in all: published %s after the failover", run.n, took.Round(time.Millisecond))
	testenv.Eventually(t, 10*time.Second, func() error {
		if open, dead := s.deliveriesLeft(); open != 0 || dead != 0 {
			return fmt.Errorf("%d deliveries not done, %d dead", open, dead)
		}
		return nil
	})

	s.awaitMessagesProcessed(run.products[0])
	if strings.Contains(s.logs.String(), st.Password) {
		t.Fatal("the service logged the Redis password")
	}
}

// awaitMessagesProcessed sends an allocate message on sku on the stream
// and one on the channel, and waits until both are allocated.
func (s *service) awaitMessagesProcessed(sku string) {
	t := s.t
	t.Helper()
	streamed, published := testenv.RandomName("streamed-"), testenv.RandomName("published-")
	pipe := s.redis.Pipeline()
	s.appendToStream(pipe, "allocate", map[string]any{"orderid": streamed, "sku": sku, "qty": 1})
	if _, err := pipe.Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	// After an outage the consumer subscribes again: wait for it, since
	// pub/sub drops what nobody hears.
	s.waitForSubscriber("allocate")
	s.publish("allocate", map[string]any{"orderid": published, "sku": sku, "qty": 1})
	testenv.Eventually(t, 30*time.Second, func() error {
		for _, order := range []string{streamed, published} {
			if status, _ := s.allocations(order); status != http.StatusOK {
				return fmt.Errorf("%s not allocated", order)
			}
		}
		return nil
	})
}

// Three replicas share the stream through Sentinel, one of them killed, as
// on one Redis and on a Cluster.
func TestThreeReplicasShareTheStreamThroughSentinel(t *testing.T) {
	// Not parallel, like the same test on one Redis.
	st := testenv.StartRedisSentinel(t)
	s := newServiceOn(t, st.Client(t), "REDIS_SENTINEL_MASTER="+st.Master, "REDIS_SENTINEL_ADDRS="+st.Addr,
		"REDIS_PASSWORD="+st.Password, "REDIS_SENTINEL_PASSWORD="+st.Password)
	threeReplicasShareTheStream(t, s, 600)
}
