package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"allocation/adapters/redis"
	"allocation/domain"
	"allocation/entrypoints/consumer"
	"allocation/servicelayer"
	"allocation/tests/testenv"
)

// orderingBus passes commands on to the real bus and records, per channel
// and product, the commands that committed, in the order they did. It also
// counts how many products were being handled at once, and holds commands
// about a gated product until the gate opens.
type orderingBus struct {
	next      consumer.Bus
	productOf map[string]string // batch ref -> SKU

	mu         sync.Mutex
	committed  map[string][]string // "channel/SKU" and "any/SKU" -> commands
	total      int
	active     map[string]int // SKU -> commands being handled
	mostActive int            // products handled at once, at most
	overlaps   []string       // products with two commands handled at once
	gates      map[string]chan struct{}
	started    chan string // SKU of every command as it starts
}

func newOrderingBus(next consumer.Bus, productOf map[string]string) *orderingBus {
	return &orderingBus{
		next: next, productOf: productOf,
		committed: map[string][]string{}, active: map[string]int{}, gates: map[string]chan struct{}{},
		started: make(chan string, 10_000),
	}
}

func (b *orderingBus) describe(cmd domain.Command) (channel, sku, what string) {
	switch c := cmd.(type) {
	case domain.Allocate:
		return consumer.Allocate, c.SKU, c.OrderID
	case domain.ChangeBatchQuantity:
		return consumer.ChangeBatchQuantity, b.productOf[c.Ref], fmt.Sprintf("%s=%d", c.Ref, c.Qty)
	}
	return "", "", cmd.Name()
}

func (b *orderingBus) gate(sku string) (open func()) {
	ch := make(chan struct{})
	b.mu.Lock()
	b.gates[sku] = ch
	b.mu.Unlock()
	return sync.OnceFunc(func() { close(ch) })
}

func (b *orderingBus) HandleMessage(ctx context.Context, messageID string, cmd domain.Command) (servicelayer.Result, error) {
	channel, sku, what := b.describe(cmd)
	b.started <- sku
	b.mu.Lock()
	b.active[sku]++
	if b.active[sku] > 1 {
		b.overlaps = append(b.overlaps, sku)
	}
	b.mostActive = max(b.mostActive, len(b.active))
	gate := b.gates[sku]
	b.mu.Unlock()
	if gate != nil {
		<-gate
	}
	res, err := b.next.HandleMessage(ctx, messageID, cmd)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.active[sku]--; b.active[sku] == 0 {
		delete(b.active, sku)
	}
	if err == nil {
		// By channel, and by product alone ("any/SKU"): streams keep an
		// order within each stream, pub/sub across its channels too.
		b.committed[channel+"/"+sku] = append(b.committed[channel+"/"+sku], what)
		b.committed["any/"+sku] = append(b.committed["any/"+sku], what)
		b.total++
	}
	return res, err
}

func (b *orderingBus) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total
}

// checkOrder compares what committed with what was sent, per channel and
// product, and checks that products were handled concurrently and each
// product's commands one at a time.
func (b *orderingBus) checkOrder(t *testing.T, sent map[string][]string) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, want := range sent {
		if got := b.committed[k]; !slices.Equal(got, want) {
			t.Errorf("%s committed in the order\n%v\nwant the order sent\n%v", k, got, want)
		}
	}
	if len(b.overlaps) > 0 {
		t.Errorf("commands about one product handled at the same time: %v", b.overlaps[:min(len(b.overlaps), 10)])
	}
	if b.mostActive < 2 {
		t.Errorf("at most %d product handled at once, want several side by side", b.mostActive)
	}
}

// commandWatch counts the XACK commands a client sends and the ids in them,
// and tells of every XREADGROUP that returned.
type commandWatch struct {
	mu            sync.Mutex
	commands, ids int
	reads         chan struct{}
}

func newCommandWatch() *commandWatch { return &commandWatch{reads: make(chan struct{}, 1)} }

func (*commandWatch) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (w *commandWatch) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		w.count(cmd)
		err := next(ctx, cmd)
		if cmd.Name() == "xreadgroup" {
			select {
			case w.reads <- struct{}{}:
			default:
			}
		}
		return err
	}
}

func (w *commandWatch) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		for _, cmd := range cmds {
			w.count(cmd)
		}
		return next(ctx, cmds)
	}
}

func (w *commandWatch) count(cmd goredis.Cmder) {
	if cmd.Name() != "xack" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.commands++
	w.ids += len(cmd.Args()) - 3 // XACK key group id...
}

func (w *commandWatch) acks() (commands, ids int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.commands, w.ids
}

// nextRead waits until an XREADGROUP under way (or the next one) returns.
func (w *commandWatch) nextRead(t *testing.T) {
	t.Helper()
	select {
	case <-w.reads: // one that returned earlier
	default:
	}
	select {
	case <-w.reads:
	case <-time.After(waitTimeout):
		t.Fatalf("no XREADGROUP returned within %s", waitTimeout)
	}
}

// products creates n products of two batches each on bus and returns their
// SKUs and batch refs, and the product of each batch.
func products(t *testing.T, bus consumer.Bus, n int) (skus []string, batches [][2]string, productOf map[string]string) {
	t.Helper()
	productOf = map[string]string{}
	for range n {
		sku := testenv.RandomName("sku-")
		refs := [2]string{testenv.RandomName("batch-"), testenv.RandomName("batch-")}
		for _, ref := range refs {
			if _, err := bus.HandleMessage(context.Background(), "", domain.CreateBatch{Ref: ref, SKU: sku, Qty: 1_000_000}); err != nil {
				t.Fatal(err)
			}
			productOf[ref] = sku
		}
		skus = append(skus, sku)
		batches = append(batches, refs)
	}
	return skus, batches, productOf
}

// runStreams runs a stream consumer over bus until stop is called or the
// test ends; returned is closed when RunStreams has returned.
func runStreams(t *testing.T, r streamRig, rc *goredis.Client, bus consumer.Bus) (stop func(), returned <-chan struct{}) {
	t.Helper()
	log, _ := testLogger(t)
	reader := redis.NewStreamReader(rc, r.prefix, redis.StreamOptions{Consumer: "c1", ClaimIdle: time.Minute}, log)
	c, err := consumer.New(consumer.Config{Bus: bus, Owners: r.store, Source: redis.NewSubscriber(rc, r.prefix, log), DeadLetters: r.store, Log: log, Concurrency: 8})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.RunStreams(ctx, reader); err != nil {
			t.Errorf("RunStreams = %v, want nil", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitTimeout):
			t.Errorf("RunStreams still running %s after cancel", waitTimeout)
		}
	})
	return cancel, done
}

// Entries about many products: each product's entries are applied in stream
// order, products side by side, and every entry is acknowledged, many to an
// XACK.
func TestStreamConsumerKeepsEachProductsOrderAndAcknowledgesInBatches(t *testing.T) {
	t.Parallel()
	r := newStreamRig(t, testenv.Redis)
	skus, batches, productOf := products(t, r.bus, 8)
	bus := newOrderingBus(r.bus, productOf)
	watch := newCommandWatch()
	// A client of its own, so that only the consumer's XACKs are counted.
	rc := testenv.Redis(t)
	rc.AddHook(watch)

	const entries = 1600
	sent := map[string][]string{}
	last := map[string]int{} // batch ref -> last quantity sent
	pipe := r.rc.Pipeline()
	for k := range entries {
		p := k % len(skus)
		var stream, what string
		var body map[string]any
		if k%5 == 4 {
			stream, what = consumer.Allocate, fmt.Sprintf("o-%d", k)
			body = map[string]any{"orderid": what, "sku": skus[p], "qty": 1}
		} else {
			// Alternating between the product's two batches: their changes
			// keep their order because they are keyed by product.
			ref, qty := batches[p][(k/len(skus))%2], 1000+k
			stream, what = consumer.ChangeBatchQuantity, fmt.Sprintf("%s=%d", ref, qty)
			body = map[string]any{"batchref": ref, "qty": qty}
			last[ref] = qty
		}
		raw, _ := json.Marshal(body)
		pipe.XAdd(context.Background(), &goredis.XAddArgs{Stream: r.prefix + stream, Values: map[string]any{"data": raw}})
		sent[stream+"/"+skus[p]] = append(sent[stream+"/"+skus[p]], what)
	}
	if _, err := pipe.Exec(context.Background()); err != nil {
		t.Fatal(err)
	}

	runStreams(t, r, rc, bus)
	testenv.Eventually(t, 30*time.Second, func() error {
		if n := bus.count(); n != entries {
			return fmt.Errorf("%d of %d entries applied", n, entries)
		}
		if n := r.pending(consumer.Allocate) + r.pending(consumer.ChangeBatchQuantity); n != 0 {
			return fmt.Errorf("%d entries still pending", n)
		}
		return nil
	})
	bus.checkOrder(t, sent)
	for ref, qty := range last {
		if got := r.store.Product(productOf[ref]).Batch(ref).PurchasedQty(); got != qty {
			t.Errorf("batch %s holds %d, want the last quantity sent, %d", ref, got, qty)
		}
	}
	commands, ids := watch.acks()
	if ids != entries {
		t.Errorf("%d entries acknowledged, want each of the %d once", ids, entries)
	}
	// One XACK per entry is what batching is for to avoid; while entries
	// are settled faster than Redis answers, batches hold several. How many
	// depends on how busy the machine is (350 to 900 seen on two cores).
	if commands > entries*3/4 {
		t.Errorf("%d XACK commands for %d entries, want acknowledgements batched", commands, entries)
	}
	t.Logf("%d entries acknowledged with %d XACK commands", ids, commands)
}

// When the consumer is stopped, the entries it holds are finished and
// acknowledged before RunStreams returns.
func TestStreamConsumerFinishesAndAcknowledgesItsEntriesWhenStopped(t *testing.T) {
	t.Parallel()
	r := newStreamRig(t, testenv.Redis)
	skus, batches, productOf := products(t, r.bus, 2)
	bus := newOrderingBus(r.bus, productOf)
	open := bus.gate(skus[0])
	t.Cleanup(open)
	for i := range 3 {
		r.append(t, consumer.ChangeBatchQuantity, fmt.Sprintf(`{"batchref": %q, "qty": %d}`, batches[0][0], 10+i))
		r.append(t, consumer.ChangeBatchQuantity, fmt.Sprintf(`{"batchref": %q, "qty": %d}`, batches[1][0], 10+i))
	}
	watch := newCommandWatch()
	rc := testenv.Redis(t)
	rc.AddHook(watch)
	stop, returned := runStreams(t, r, rc, bus)

	// The other product's entries go through while the first is stuck.
	testenv.Eventually(t, waitTimeout, func() error {
		if n := bus.count(); n != 3 {
			return fmt.Errorf("%d entries applied, want the 3 of the product that is not stuck", n)
		}
		return nil
	})
	stop()
	// Once the read under way returns, the reader stops reading and waits
	// for its entries; only then are they released, so that what is
	// settled from now on must still be acknowledged.
	watch.nextRead(t)
	select {
	case <-returned:
		t.Fatal("RunStreams returned while it held unfinished entries")
	case <-time.After(100 * time.Millisecond): // a window for a wrong RunStreams to return in
	}
	open()
	select {
	case <-returned:
	case <-time.After(waitTimeout):
		t.Fatalf("RunStreams still running %s after its entries were released", waitTimeout)
	}
	if n := bus.count(); n != 6 {
		t.Fatalf("%d of 6 entries applied at shutdown", n)
	}
	if n := r.pending(consumer.ChangeBatchQuantity); n != 0 {
		t.Fatalf("%d entries left pending at shutdown, want every settled one acknowledged", n)
	}
	if got := r.store.Product(skus[0]).Batch(batches[0][0]).PurchasedQty(); got != 12 {
		t.Fatalf("batch holds %d, want the last quantity sent, 12", got)
	}
}

// Pub/sub messages about many products: each product's messages are applied
// in arrival order, products side by side.
func TestPubSubConsumerKeepsEachProductsOrder(t *testing.T) {
	t.Parallel()
	r := newStreamRig(t, testenv.Redis) // the real bus on the memory store; no streams here
	rc, prefix := r.rc, r.prefix
	log, _ := testLogger(t)
	skus, batches, productOf := products(t, r.bus, 8)
	bus := newOrderingBus(r.bus, productOf)
	sub := redis.NewSubscriber(rc, prefix, log)
	c, err := consumer.New(consumer.Config{Bus: bus, Owners: r.store, Source: sub, DeadLetters: r.store, Log: log, Concurrency: 8})
	if err != nil {
		t.Fatal(err)
	}
	runSubscribed(t, c, sub)

	const messages = 800
	sent := map[string][]string{}
	pipe := rc.Pipeline()
	for k := range messages {
		p := k % len(skus)
		var channel, what string
		var body map[string]any
		if k%3 == 2 {
			channel, what = consumer.Allocate, fmt.Sprintf("o-%d", k)
			body = map[string]any{"orderid": what, "sku": skus[p], "qty": 1}
		} else {
			ref, qty := batches[p][(k/len(skus))%2], 1000+k
			channel, what = consumer.ChangeBatchQuantity, fmt.Sprintf("%s=%d", ref, qty)
			body = map[string]any{"batchref": ref, "qty": qty}
		}
		raw, _ := json.Marshal(body)
		pipe.Publish(context.Background(), prefix+channel, raw)
		// One connection receives both channels, so the order across them
		// is the order published: record it per product alone.
		sent["any/"+skus[p]] = append(sent["any/"+skus[p]], what)
	}
	if _, err := pipe.Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if n := bus.count(); n != messages {
			return fmt.Errorf("%d of %d messages applied", n, messages)
		}
		return nil
	})
	bus.checkOrder(t, sent)
}
