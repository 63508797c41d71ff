package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync/atomic"
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

// BenchmarkStreamConsumer times change_batch_quantity entries over 100
// batches from the stream until acknowledged, like make bench's inbound
// phase, on the memory store (what the consumer itself costs) and on
// PostgreSQL, handled one at a time and 16 at once (`make bench-go`).
func BenchmarkStreamConsumer(b *testing.B) {
	stores := map[string]func(b *testing.B) (servicelayer.UnitOfWork, consumer.Owners){
		"memory": func(*testing.B) (servicelayer.UnitOfWork, consumer.Owners) {
			s := memory.NewStore()
			return s, s
		},
		"postgres": func(b *testing.B) (servicelayer.UnitOfWork, consumer.Owners) {
			db := freshPG(b)
			return db.store, db.store
		},
	}
	for _, name := range []string{"memory", "postgres"} {
		for _, concurrency := range []int{1, 16} {
			b.Run(fmt.Sprintf("store=%s/concurrency=%d", name, concurrency), func(b *testing.B) {
				uow, owners := stores[name](b)
				benchmarkStreamConsumer(b, uow, owners, concurrency)
			})
		}
	}
}

func benchmarkStreamConsumer(b *testing.B, uow servicelayer.UnitOfWork, owners consumer.Owners, concurrency int) {
	rc, prefix := testenv.Redis(b), testenv.Prefix()
	testenv.DeleteKeysAtEnd(b, rc, prefix)
	b.Cleanup(func() { rc.Del(context.Background(), prefix+consumer.ChangeBatchQuantity, prefix+consumer.Allocate) })
	log := slog.New(slog.DiscardHandler)
	bus := servicelayer.NewBus(servicelayer.Dependencies{UoW: uow, Publisher: &recordingPublisher{}, Notifier: nopNotifier{}, Log: log})
	refs := make([]string, 100)
	for i := range refs {
		refs[i] = fmt.Sprintf("b-%d", i)
		if _, err := bus.Handle(context.Background(), domain.CreateBatch{Ref: refs[i], SKU: fmt.Sprintf("sku-%d", i), Qty: 1_000_000}); err != nil {
			b.Fatal(err)
		}
	}
	counted := &countingBus{next: bus, target: int64(b.N), reached: make(chan struct{})}
	c, err := consumer.New(consumer.Config{Bus: counted, Owners: owners, Source: redis.NewSubscriber(rc, prefix, log), DeadLetters: memory.NewStore(), Log: log, Concurrency: concurrency})
	if err != nil {
		b.Fatal(err)
	}
	reader := redis.NewStreamReader(rc, prefix, redis.StreamOptions{Consumer: "bench"}, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.RunStreams(ctx, reader) }()
	b.Cleanup(func() { cancel(); <-done })

	stream := prefix + consumer.ChangeBatchQuantity
	n := b.N
	pipe := rc.Pipeline()
	for k := range n {
		body, _ := json.Marshal(map[string]any{"batchref": refs[k%len(refs)], "qty": 1_000_000 + k/len(refs) + 1})
		pipe.XAdd(context.Background(), &goredis.XAddArgs{Stream: stream, Values: map[string]any{"data": string(body)}})
	}
	b.ResetTimer()
	start := time.Now()
	if _, err := pipe.Exec(context.Background()); err != nil {
		b.Fatal(err)
	}
	select {
	case <-counted.reached:
	case <-time.After(5 * time.Minute):
		b.Fatalf("%d of %d entries handled after 5 minutes", counted.handled.Load(), n)
	}
	testenv.Eventually(b, 10*time.Second, func() error {
		p, err := rc.XPending(context.Background(), stream, "allocation").Result()
		if err != nil || p.Count != 0 {
			return fmt.Errorf("pending %v, %v", p, err)
		}
		return nil
	})
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "msg/s")
}

// countingBus counts the commands handled and tells when target is reached.
type countingBus struct {
	next    consumer.Bus
	handled atomic.Int64
	target  int64
	reached chan struct{}
}

func (b *countingBus) HandleMessage(ctx context.Context, messageID string, cmd domain.Command) (servicelayer.Result, error) {
	res, err := b.next.HandleMessage(ctx, messageID, cmd)
	if err == nil && b.handled.Add(1) == b.target {
		close(b.reached)
	}
	return res, err
}
