package integration_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"allocation/adapters/memory"
	"allocation/adapters/redis"
	"allocation/domain"
	"allocation/entrypoints/consumer"
	"allocation/servicelayer"
	"allocation/tests/testenv"
)

// sentNotifications records what the bus sends to people.
type sentNotifications struct {
	mu   sync.Mutex
	sent []string
}

func (n *sentNotifications) Send(_ context.Context, destination, message string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sent = append(n.sent, destination+": "+message)
	return nil
}

// consumerRig is the real bus on the memory store, fed by a consumer over
// a Redis under a prefix of its own.
type consumerRig struct {
	redis  *goredis.Client
	prefix string
	store  *memory.Store
	bus    *servicelayer.Bus
}

func startConsumer(t *testing.T, connect redisConnector, bus consumer.Bus) *consumerRig {
	t.Helper()
	rc := connect(t)
	prefix := testenv.Prefix()
	testenv.DeleteKeysAtEnd(t, rc, prefix)
	log, _ := testLogger(t)
	store := memory.NewStore()
	real := servicelayer.NewBus(servicelayer.Dependencies{
		UoW:       store,
		Publisher: redis.NewPublisher(rc, prefix),
		Notifier:  &sentNotifications{},
		Log:       log,
	})
	if bus == nil {
		bus = real
	}
	sub := redis.NewSubscriber(rc, prefix, log)
	c, err := consumer.New(consumer.Config{Bus: bus, Owners: store, Source: sub, DeadLetters: store, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	runSubscribed(t, c, sub)
	return &consumerRig{redis: rc, prefix: prefix, store: store, bus: real}
}

// runSubscribed runs c's pub/sub consumer until the test ends and returns
// once sub is subscribed.
func runSubscribed(t *testing.T, c *consumer.Consumer, sub *redis.Subscriber) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("consumer Run = %v after cancel, want nil", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("consumer still running %s after cancel", waitTimeout)
		}
	})
	select {
	case <-sub.Ready():
	case err := <-done:
		t.Fatalf("consumer stopped before subscribing: %v", err)
	case <-time.After(waitTimeout):
		t.Fatalf("consumer not subscribed within %s", waitTimeout)
	}
}

func (r *consumerRig) handle(t *testing.T, cmd domain.Command) {
	t.Helper()
	if _, err := r.bus.Handle(context.Background(), cmd); err != nil {
		t.Fatalf("%s: %v", cmd.Name(), err)
	}
}

func (r *consumerRig) send(t *testing.T, channel string, body any) {
	t.Helper()
	payload, ok := body.(string)
	if !ok {
		raw, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		payload = string(raw)
	}
	publish(t, r.redis, r.prefix+channel, payload)
}

// awaitAllocation waits until the allocations view shows orderID in batchRef.
func (r *consumerRig) awaitAllocation(t *testing.T, orderID, sku, batchRef string) {
	t.Helper()
	want := []servicelayer.Allocation{{SKU: sku, BatchRef: batchRef}}
	testenv.Eventually(t, waitTimeout, func() error {
		got, err := r.store.Allocations(context.Background(), orderID)
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("allocations of %s = %v, want %v", orderID, got, want)
		}
		return nil
	})
}

func (r *consumerRig) deadLetters(t *testing.T) []redis.DeadLetterRecord {
	t.Helper()
	raw, err := r.redis.LRange(context.Background(), r.prefix+"dead_letter", 0, -1).Result()
	if err != nil {
		t.Fatalf("LRANGE dead_letter: %v", err)
	}
	out := make([]redis.DeadLetterRecord, len(raw))
	for i, s := range raw {
		if err := json.Unmarshal([]byte(s), &out[i]); err != nil {
			t.Fatalf("dead letter %s: %v", s, err)
		}
	}
	return out
}

type lineAllocated struct {
	OrderID  string `json:"orderid"`
	SKU      string `json:"sku"`
	Qty      int    `json:"qty"`
	BatchRef string `json:"batchref"`
}

func decodeLineAllocated(t *testing.T, m *goredis.Message) lineAllocated {
	t.Helper()
	var l lineAllocated
	if err := json.Unmarshal([]byte(m.Payload), &l); err != nil {
		t.Fatalf("line_allocated %s: %v", m.Payload, err)
	}
	return l
}

// The book's e2e test_change_batch_quantity_leading_to_reallocation, at the
// consumer's level.
func TestConsumerReallocatesWhenABatchQuantityChangeArrives(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, connect redisConnector) {
		r := startConsumer(t, connect, nil)
		allocated := subscribeTo(t, r.redis, r.prefix+"line_allocated")
		orderID, sku := testenv.RandomName("order-"), testenv.RandomName("sku-")
		earlier, later := testenv.RandomName("batch-"), testenv.RandomName("batch-")
		today := time.Now().UTC().Truncate(24 * time.Hour)
		r.handle(t, domain.CreateBatch{Ref: earlier, SKU: sku, Qty: 10, ETA: today})
		r.handle(t, domain.CreateBatch{Ref: later, SKU: sku, Qty: 10, ETA: today.AddDate(0, 0, 1)})
		r.handle(t, domain.Allocate{OrderID: orderID, SKU: sku, Qty: 10})
		if got := decodeLineAllocated(t, awaitMessage(t, allocated)); got.BatchRef != earlier {
			t.Fatalf("first allocation to %s, want the earlier batch %s", got.BatchRef, earlier)
		}

		r.send(t, "change_batch_quantity", map[string]any{"batchref": earlier, "qty": 5})

		want := lineAllocated{OrderID: orderID, SKU: sku, Qty: 10, BatchRef: later}
		if got := decodeLineAllocated(t, awaitMessage(t, allocated)); got != want {
			t.Fatalf("reallocation = %+v, want %+v", got, want)
		}
		r.awaitAllocation(t, orderID, sku, later)
	})
}

func TestConsumerAllocatesWhatArrivesOnTheAllocateChannel(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, connect redisConnector) {
		r := startConsumer(t, connect, nil)
		orderID, sku, batch := testenv.RandomName("order-"), testenv.RandomName("sku-"), testenv.RandomName("batch-")
		r.handle(t, domain.CreateBatch{Ref: batch, SKU: sku, Qty: 10})

		r.send(t, "allocate", map[string]any{"orderid": orderID, "sku": sku, "qty": 3, "message_id": testenv.RandomName("msg-")})

		r.awaitAllocation(t, orderID, sku, batch)
		if p := r.store.Product(sku); p == nil || p.Batch(batch).AvailableQty() != 7 {
			t.Errorf("batch %s after allocating 3 of 10: %v", batch, p)
		}
	})
}

func TestConsumerSetsPoisonMessagesAsideAndGoesOn(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, connect redisConnector) {
		r := startConsumer(t, connect, nil)
		sku, batch := testenv.RandomName("sku-"), testenv.RandomName("batch-")
		r.handle(t, domain.CreateBatch{Ref: batch, SKU: sku, Qty: 10})
		unknownBatch, unknownSKU := testenv.RandomName("batch-"), testenv.RandomName("sku-")
		poison := []struct {
			channel, payload string
			reason           string // the dead letter's reason must contain it
		}{
			{"change_batch_quantity", `{"batchref": "` + batch, "not valid JSON"},
			{"change_batch_quantity", `{"batchref": "` + batch + `", "qty": "5"}`, "qty must be an integer"},
			{"change_batch_quantity", `{"batchref": "` + batch + `", "qty": 1.5}`, "qty must be an integer"},
			{"change_batch_quantity", `{"batchref": "` + batch + `", "qty": -1}`, "qty must be an integer from 0"},
			{"change_batch_quantity", `{"qty": 5}`, "batchref is required"},
			{"change_batch_quantity", `{"batchref": "` + batch + `", "qty": 5, "traceparent": "bogus"}`, "traceparent must be a W3C traceparent"},
			{"change_batch_quantity", `{"batchref": "` + unknownBatch + `", "qty": 5}`, "unknown batch"},
			{"allocate", `{"orderid": "o1", "qty": 1}`, "sku is required"},
			{"allocate", `{"orderid": "", "sku": "` + sku + `", "qty": 1}`, "orderid must be"},
			{"allocate", `{"orderid": "o1", "sku": "` + sku + `", "qty": 0}`, "qty must be an integer from 1"},
			{"allocate", `{"orderid": "o1", "sku": "` + unknownSKU + `", "qty": 1}`, "Invalid sku " + unknownSKU},
			{"allocate", `[1, 2, 3]`, "body must be a JSON object"},
		}
		for _, p := range poison {
			r.send(t, p.channel, p.payload)
		}
		orderID := testenv.RandomName("order-")
		r.send(t, "allocate", map[string]any{"orderid": orderID, "sku": sku, "qty": 1})

		// Messages about different products are handled concurrently, so the
		// good one may overtake poison: wait for both.
		r.awaitAllocation(t, orderID, sku, batch)
		var letters []redis.DeadLetterRecord
		testenv.Eventually(t, waitTimeout, func() error {
			if letters = r.deadLetters(t); len(letters) != len(poison) {
				return fmt.Errorf("%d dead letters, want %d: %+v", len(letters), len(poison), letters)
			}
			return nil
		})
		byPayload := map[string]redis.DeadLetterRecord{}
		for _, l := range letters {
			byPayload[l.Payload] = l
		}
		for i, p := range poison {
			l, ok := byPayload[p.payload]
			if !ok || l.Channel != p.channel || !strings.Contains(l.Reason, p.reason) {
				t.Errorf("dead letter of poison %d = %+v, want channel %s, payload %s, a reason with %q", i, l, p.channel, p.payload, p.reason)
			}
		}
		if p := r.store.Product(sku); p.Batch(batch).PurchasedQty() != 10 {
			t.Errorf("a poison message changed batch %s: purchased %d, want 10", batch, p.Batch(batch).PurchasedQty())
		}
	})
}

// failingBus panics on its first command and fails the second the way a
// database outage would; then it works.
type failingBus struct {
	mu    sync.Mutex
	calls int
	next  consumer.Bus
}

func (b *failingBus) HandleMessage(ctx context.Context, messageID string, cmd domain.Command) (servicelayer.Result, error) {
	b.mu.Lock()
	b.calls++
	n, next := b.calls, b.next
	b.mu.Unlock()
	switch n {
	case 1:
		panic("handler bug")
	case 2:
		return servicelayer.Result{}, errors.New("database is down")
	}
	return next.HandleMessage(ctx, messageID, cmd)
}

func TestConsumerSurvivesPanicsAndOutagesSettingTheMessagesAside(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, connect redisConnector) {
		bus := &failingBus{}
		r := startConsumer(t, connect, bus)
		bus.mu.Lock()
		bus.next = r.bus
		bus.mu.Unlock()
		sku, batch := testenv.RandomName("sku-"), testenv.RandomName("batch-")
		r.handle(t, domain.CreateBatch{Ref: batch, SKU: sku, Qty: 10})
		first, second, third := testenv.RandomName("order-"), testenv.RandomName("order-"), testenv.RandomName("order-")

		for _, id := range []string{first, second, third} {
			r.send(t, "allocate", map[string]any{"orderid": id, "sku": sku, "qty": 1})
		}

		r.awaitAllocation(t, third, sku, batch)
		letters := r.deadLetters(t)
		if len(letters) != 2 ||
			!strings.Contains(letters[0].Payload, first) || !strings.Contains(letters[0].Reason, "panic") ||
			!strings.Contains(letters[1].Payload, second) || !strings.Contains(letters[1].Reason, "database is down") {
			t.Fatalf("dead letters = %+v, want the panicking then the failing message, with their reasons", letters)
		}
	})
}
