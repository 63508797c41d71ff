package integration_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
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

// A redelivered event (a crash between publishing and recording it) reaches
// the stream and the channel once: Redis itself drops the repeat.
func TestRedisPublisherAppendsEachMessageToTheStreamOnce(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, connect redisConnector) {
		rc, prefix := connect(t), testenv.Prefix()
		testenv.DeleteKeysAtEnd(t, rc, prefix)
		messages := subscribeTo(t, rc, prefix+"line_allocated")
		env := servicelayer.NewEnvelope(context.Background(), domain.Allocated{OrderID: "o1", SKU: "LAMP", Qty: 1, BatchRef: "b1"}, time.Now())
		pub := redis.NewPublisher(rc, prefix)
		for range 3 {
			if err := pub.Publish(context.Background(), env); err != nil {
				t.Fatal(err)
			}
		}
		entries, err := rc.XRange(context.Background(), prefix+"line_allocated", "-", "+").Result()
		if err != nil || len(entries) != 1 || entries[0].Values["message_id"] != env.MessageID {
			t.Fatalf("stream entries %v (%v); want one with message_id %s", entries, err, env.MessageID)
		}
		awaitMessage(t, messages)
		select {
		case m := <-messages:
			t.Fatalf("the channel got the repeat too: %s", m.Payload)
		case <-time.After(200 * time.Millisecond):
		}
	})
}

type streamRig struct {
	rc     *goredis.Client
	prefix string
	store  *memory.Store
	bus    *servicelayer.Bus
}

func newStreamRig(t *testing.T, connect redisConnector) streamRig {
	t.Helper()
	r := streamRig{rc: connect(t), prefix: testenv.Prefix(), store: memory.NewStore()}
	testenv.DeleteKeysAtEnd(t, r.rc, r.prefix) // after the consumers have stopped
	r.bus = servicelayer.NewBus(servicelayer.Dependencies{UoW: r.store, Publisher: redis.NewPublisher(r.rc, r.prefix), Notifier: nopNotifier{}})
	if _, err := r.bus.Handle(context.Background(), domain.CreateBatch{Ref: "b1", SKU: "LAMP", Qty: 1000}); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r streamRig) append(t *testing.T, stream, data string) string {
	t.Helper()
	id, err := r.rc.XAdd(context.Background(), &goredis.XAddArgs{Stream: r.prefix + stream, Values: map[string]any{"data": data}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// appendEntry appends an entry with the given fields.
func (r streamRig) appendEntry(t *testing.T, stream string, fields map[string]any) string {
	t.Helper()
	id, err := r.rc.XAdd(context.Background(), &goredis.XAddArgs{Stream: r.prefix + stream, Values: fields}).Result()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// run starts a stream consumer named name until the test ends.
func (r streamRig) run(t *testing.T, name string, claimIdle time.Duration) {
	t.Helper()
	c, err := consumer.New(consumer.Config{Bus: r.bus, Owners: r.store, Source: redis.NewSubscriber(r.rc, r.prefix, slog.Default()), DeadLetters: r.store})
	if err != nil {
		t.Fatal(err)
	}
	reader := redis.NewStreamReader(r.rc, r.prefix, redis.StreamOptions{Consumer: name, ClaimIdle: claimIdle, MaxDeliveries: 3, SetAside: c.SetAsideEntry}, slog.Default())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.RunStreams(ctx, reader) }()
	t.Cleanup(func() { cancel(); <-done })
}

func (r streamRig) allocated(orderID string) bool {
	rows, _ := r.store.Allocations(context.Background(), orderID)
	return len(rows) == 1
}

// pending counts the entries of stream not yet acknowledged; -1 until the
// consumer group exists.
func (r streamRig) pending(stream string) int64 {
	p, err := r.rc.XPending(context.Background(), r.prefix+stream, "allocation").Result()
	if err != nil {
		return -1
	}
	return p.Count
}

func TestStreamEntriesAppendedBeforeAnyConsumerRanAreProcessedAndAcknowledged(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, connect redisConnector) {
		r := newStreamRig(t, connect)
		for i := range 5 {
			r.append(t, "allocate", fmt.Sprintf(`{"orderid": "early-%d", "sku": "LAMP", "qty": 1}`, i))
		}
		r.append(t, "allocate", `not json`)
		r.append(t, "change_batch_quantity", `{"batchref": "b1", "qty": 900}`)
		r.run(t, "c1", time.Minute)
		testenv.Eventually(t, 10*time.Second, func() error {
			for i := range 5 {
				if !r.allocated(fmt.Sprintf("early-%d", i)) {
					return fmt.Errorf("early-%d not allocated", i)
				}
			}
			if q := r.store.Product("LAMP").Batch("b1").PurchasedQty(); q != 900 {
				return fmt.Errorf("purchased %d", q)
			}
			if n := r.pending("allocate") + r.pending("change_batch_quantity"); n != 0 {
				return fmt.Errorf("%d entries still pending", n)
			}
			return nil
		})
		letters, _ := r.rc.LRange(context.Background(), r.prefix+"dead_letter", 0, -1).Result()
		if len(letters) != 1 {
			t.Fatalf("dead letters %v; want the poison entry", letters)
		}
	})
}

// An entry a consumer took and never acknowledged (it died) is taken over by
// another one after the idle time; one delivered too often is set aside.
func TestStreamEntriesOfADeadConsumerAreTakenOver(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, connect redisConnector) {
		r := newStreamRig(t, connect)
		ctx := context.Background()
		if err := r.rc.XGroupCreateMkStream(ctx, r.prefix+"allocate", "allocation", "0").Err(); err != nil {
			t.Fatal(err)
		}
		r.append(t, "allocate", `{"orderid": "orphan", "sku": "LAMP", "qty": 1}`)
		tooOften := r.append(t, "allocate", `{"orderid": "cursed", "sku": "LAMP", "qty": 1}`)
		// "ghost" reads both and dies; "cursed" was already delivered many times.
		if err := r.rc.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "allocation", Consumer: "ghost", Streams: []string{r.prefix + "allocate", ">"}}).Err(); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			r.rc.XClaim(ctx, &goredis.XClaimArgs{Stream: r.prefix + "allocate", Group: "allocation", Consumer: "ghost", Messages: []string{tooOften}})
		}

		r.run(t, "heir", 50*time.Millisecond)
		testenv.Eventually(t, 10*time.Second, func() error {
			if !r.allocated("orphan") {
				return fmt.Errorf("orphan not taken over")
			}
			if n := r.pending("allocate"); n != 0 {
				return fmt.Errorf("%d entries still pending", n)
			}
			return nil
		})
		if r.allocated("cursed") {
			t.Fatal("an entry delivered too often was applied instead of set aside")
		}
		letters, _ := r.rc.LRange(ctx, r.prefix+"dead_letter", 0, -1).Result()
		if len(letters) != 1 {
			t.Fatalf("dead letters %v; want cursed", letters)
		}
		// Recorded in the store with the entry's id, before it was acknowledged.
		kept, err := r.store.DeadLetters(ctx, 0, 10)
		if err != nil || len(kept) != 1 || kept[0].StreamID != tooOften || kept[0].Channel != "allocate" ||
			!strings.Contains(kept[0].Reason, "without being settled") || !strings.Contains(string(kept[0].Payload), "cursed") {
			t.Fatalf("recorded dead letters %+v (%v); want cursed, entry %s", kept, err, tooOften)
		}
	})
}

// An entry applied but not acknowledged (the consumer died in between) comes
// back to another consumer; the inbox knows it by its stream id.
func TestARedeliveredStreamEntryIsAppliedOnce(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, connect redisConnector) {
		r := newStreamRig(t, connect)
		id := r.append(t, "change_batch_quantity", `{"batchref": "b1", "qty": 7}`)
		if _, err := r.bus.HandleMessage(context.Background(), "stream:change_batch_quantity:"+id, domain.ChangeBatchQuantity{Ref: "b1", Qty: 7}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.bus.Handle(context.Background(), domain.ChangeBatchQuantity{Ref: "b1", Qty: 9}); err != nil {
			t.Fatal(err)
		}
		r.run(t, "c1", time.Minute)
		testenv.Eventually(t, 10*time.Second, func() error {
			if n := r.pending("change_batch_quantity"); n != 0 {
				return fmt.Errorf("%d pending", n)
			}
			return nil
		})
		if q := r.store.Product("LAMP").Batch("b1").PurchasedQty(); q != 9 {
			t.Fatalf("purchased %d; the redelivered entry was applied again over the newer 9", q)
		}
	})
}

// Producers may stamp a stream entry with message_id (and trace and
// correlation fields) beside its data, and add fields of their own: the
// entry is applied, a repeat of its message_id skipped, and an entry whose
// data and fields disagree on message_id set aside as ambiguous.
func TestStreamEntriesAreReadTolerantlyWithTheirIdsFromEntryFields(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, connect redisConnector) {
		r := newStreamRig(t, connect)
		for range 2 {
			r.appendEntry(t, "change_batch_quantity", map[string]any{
				"data":        `{"batchref": "b1", "qty": 900, "note": "from the shop"}`,
				"message_id":  "change-1",
				"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
				"producer":    "shop",
			})
		}
		// Applied once, this would take the batch back to 900 again.
		r.appendEntry(t, "change_batch_quantity", map[string]any{"data": `{"batchref": "b1", "qty": 800}`, "message_id": "change-2"})
		r.appendEntry(t, "change_batch_quantity", map[string]any{"data": `{"batchref": "b1", "qty": 900}`, "message_id": "change-1"})
		r.appendEntry(t, "change_batch_quantity", map[string]any{"data": `{"batchref": "b1", "qty": 1, "message_id": "x"}`, "message_id": "y"})
		r.run(t, "c1", time.Minute)
		testenv.Eventually(t, 10*time.Second, func() error {
			if n := r.pending("change_batch_quantity"); n != 0 {
				return fmt.Errorf("%d entries pending", n)
			}
			if q := r.store.Product("LAMP").Batch("b1").PurchasedQty(); q != 800 {
				return fmt.Errorf("purchased %d, want 800 (change-1 applied once, then change-2)", q)
			}
			return nil
		})
		letters, _ := r.rc.LRange(context.Background(), r.prefix+"dead_letter", 0, -1).Result()
		if len(letters) != 1 || !strings.Contains(letters[0], "message_id is given in the body") {
			t.Fatalf("dead letters %v; want the ambiguous entry only", letters)
		}
	})
}
