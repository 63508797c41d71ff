package unit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"allocation/adapters/memory"
	"allocation/domain"
	"allocation/entrypoints/consumer"
	"allocation/servicelayer"
	"allocation/tests/testenv"
)

// waitLimit bounds every wait for something another goroutine does; a
// correct implementation gets there in microseconds.
const waitLimit = 5 * time.Second

// receive returns the next value on ch, failing the test after waitLimit.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("%s: nothing within %s", what, waitLimit)
		var zero T
		return zero
	}
}

// closedWithin fails the test unless ch is closed within waitLimit.
func closedWithin(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitLimit):
		t.Fatalf("%s: not within %s", what, waitLimit)
	}
}

func TestOrderedPoolRunsTheJobsOfOneKeyInSubmissionOrderNeverTwoAtOnce(t *testing.T) {
	t.Parallel()
	pool := consumer.NewOrderedPool(4, 16)
	const keys, perKey = 5, 200
	var (
		mu      sync.Mutex
		order   = map[string][]int{}
		running = map[string]int{}
		overlap []string
		all     sync.WaitGroup
	)
	for i := range perKey {
		for k := range keys {
			key := fmt.Sprintf("sku-%d", k)
			all.Add(1)
			pool.Submit(key, func() {
				defer all.Done()
				mu.Lock()
				running[key]++
				if running[key] > 1 {
					overlap = append(overlap, key)
				}
				order[key] = append(order[key], i)
				mu.Unlock()
				mu.Lock()
				running[key]--
				mu.Unlock()
			})
		}
	}
	done := make(chan struct{})
	go func() { all.Wait(); close(done) }()
	closedWithin(t, done, "every job run")
	mu.Lock()
	defer mu.Unlock()
	if len(overlap) > 0 {
		t.Errorf("jobs of one key ran at the same time: %v", overlap)
	}
	for key, got := range order {
		if len(got) != perKey || !slices.IsSorted(got) {
			t.Errorf("%s ran %d jobs in the order %v, want 0..%d in order", key, len(got), got, perKey-1)
		}
	}
}

// A job stuck on one key holds up the later jobs of that key only.
func TestOrderedPoolDoesNotHoldUpOtherKeysBehindABlockedOne(t *testing.T) {
	t.Parallel()
	pool := consumer.NewOrderedPool(2, 8)
	releaseA := make(chan struct{})
	aStarted, bDone, a2Done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var a2Ran atomic.Bool
	pool.Submit("A", func() { close(aStarted); <-releaseA })
	pool.Submit("A", func() { a2Ran.Store(true); close(a2Done) })
	pool.Submit("B", func() { close(bDone) })

	closedWithin(t, aStarted, "A's first job started")
	closedWithin(t, bDone, "B's job done while A is blocked")
	if a2Ran.Load() {
		t.Fatal("A's second job ran while A's first was still running")
	}
	close(releaseA)
	closedWithin(t, a2Done, "A's second job done once the first finished")
}

// Submit blocks once limit jobs are queued or running, and at most workers
// jobs run at once.
func TestOrderedPoolBoundsTheJobsInHand(t *testing.T) {
	t.Parallel()
	const workers, limit, jobs = 2, 6, 30
	pool := consumer.NewOrderedPool(workers, limit)
	release := make(chan struct{})
	var submitted, running, mostRunning, finished atomic.Int64
	var all sync.WaitGroup
	producerDone := make(chan struct{})
	go func() {
		defer close(producerDone)
		for i := range jobs {
			all.Add(1)
			pool.Submit(fmt.Sprintf("key-%d", i), func() {
				defer all.Done()
				n := running.Add(1)
				for m := mostRunning.Load(); n > m && !mostRunning.CompareAndSwap(m, n); m = mostRunning.Load() {
				}
				<-release
				running.Add(-1)
				finished.Add(1)
			})
			submitted.Add(1)
		}
	}()

	testenv.Eventually(t, waitLimit, func() error {
		if n := submitted.Load(); n < limit {
			return fmt.Errorf("%d jobs submitted, want the pool to take %d", n, limit)
		}
		if n := running.Load(); n < workers {
			return fmt.Errorf("%d jobs running, want %d", n, workers)
		}
		return nil
	})
	// Nothing has finished, so a pool that holds no more than limit jobs
	// has taken exactly limit and runs exactly workers of them.
	if n := submitted.Load(); n != limit {
		t.Fatalf("%d jobs submitted while none finished, want Submit to block at %d", n, limit)
	}
	if n := mostRunning.Load(); n != workers {
		t.Fatalf("%d jobs ran at once, want at most %d", n, workers)
	}
	close(release)
	closedWithin(t, producerDone, "every job submitted once jobs finish")
	done := make(chan struct{})
	go func() { all.Wait(); close(done) }()
	closedWithin(t, done, "every job run")
	if finished.Load() != jobs || mostRunning.Load() > workers {
		t.Fatalf("%d of %d jobs finished, %d at most at once (limit %d)", finished.Load(), jobs, mostRunning.Load(), workers)
	}
}

// --- the consumer over fakes ---

// fakeOwners knows which product each batch belongs to.
type fakeOwners map[string]string

func (o fakeOwners) ProductOfBatch(_ context.Context, ref string) (string, bool, error) {
	sku, ok := o[ref]
	return sku, ok, nil
}

// handled is one command the gatedBus finished, by the product it is about.
type handled struct {
	product string
	cmd     domain.Command
}

// gatedBus records the commands it handles, per product, and holds a
// command about a gated product until the gate is opened. Safe for
// concurrent use.
type gatedBus struct {
	owners  fakeOwners
	mu      sync.Mutex
	gates   map[string]chan struct{}
	started chan handled // every command, as it starts
	done    []handled
	fail    map[string]error // by order id or batch ref
}

func newGatedBus(owners fakeOwners) *gatedBus {
	return &gatedBus{owners: owners, gates: map[string]chan struct{}{}, started: make(chan handled, 1000), fail: map[string]error{}}
}

func (b *gatedBus) product(cmd domain.Command) (string, string) {
	switch c := cmd.(type) {
	case domain.Allocate:
		return c.SKU, c.OrderID
	case domain.ChangeBatchQuantity:
		return b.owners[c.Ref], c.Ref
	}
	return "", ""
}

// gate makes commands about product wait until the returned func is called.
func (b *gatedBus) gate(product string) (open func()) {
	ch := make(chan struct{})
	b.mu.Lock()
	b.gates[product] = ch
	b.mu.Unlock()
	return func() { close(ch) }
}

func (b *gatedBus) HandleMessage(_ context.Context, messageID string, cmd domain.Command) (servicelayer.Result, error) {
	product, id := b.product(cmd)
	b.started <- handled{product, cmd}
	b.mu.Lock()
	gate, err := b.gates[product], b.fail[id]
	b.mu.Unlock()
	if gate != nil {
		<-gate
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil {
		return servicelayer.Result{}, err
	}
	b.done = append(b.done, handled{product, cmd})
	return servicelayer.Result{}, nil
}

// finished lists the commands handled successfully about product, in order.
func (b *gatedBus) finished(product string) []domain.Command {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []domain.Command
	for _, h := range b.done {
		if h.product == product {
			out = append(out, h.cmd)
		}
	}
	return out
}

func (b *gatedBus) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.done)
}

// fakePubSub delivers what is sent to it, one handle call at a time, like
// redis.Subscriber; Run returns when its context ends.
type fakePubSub struct {
	in       chan [2]string // channel, payload
	returned atomic.Int64   // handle calls that returned
	stopped  chan struct{}  // closed when Run returns
	mu       sync.Mutex
	dead     []string // payloads set aside
}

func newFakePubSub() *fakePubSub {
	return &fakePubSub{in: make(chan [2]string, 1000), stopped: make(chan struct{})}
}

func (s *fakePubSub) Run(ctx context.Context, _ []string, handle func(context.Context, string, []byte)) error {
	defer close(s.stopped)
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-s.in:
			handle(ctx, m[0], []byte(m[1]))
			s.returned.Add(1)
		}
	}
}

func (s *fakePubSub) DeadLetter(_ context.Context, _ string, payload []byte, _ string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dead = append(s.dead, string(payload))
	return nil
}

func (s *fakePubSub) deadLetters() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.dead)
}

func (s *fakePubSub) send(t *testing.T, channel string, body any) {
	t.Helper()
	raw, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	s.in <- [2]string{channel, string(raw)}
}

func allocateMsg(orderID, sku string) map[string]any {
	return map[string]any{"orderid": orderID, "sku": sku, "qty": 1}
}

func changeMsg(ref string, qty int) map[string]any {
	return map[string]any{"batchref": ref, "qty": qty}
}

// runConsumer runs c.Run until the test ends (or stop is called) and
// returns stop, which cancels it, and a channel closed when Run returned.
func runConsumer(t *testing.T, c *consumer.Consumer, run func(*consumer.Consumer, context.Context) error) (stop func(), returned <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := run(c, ctx); err != nil {
			t.Errorf("consumer returned %v, want nil", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitLimit): // a message left stuck by a failed test
			t.Errorf("consumer still running %s after it was stopped", waitLimit)
		}
	})
	return cancel, done
}

func newConsumer(t *testing.T, cfg consumer.Config) *consumer.Consumer {
	t.Helper()
	cfg.Log = quietLog()
	if cfg.DeadLetters == nil {
		cfg.DeadLetters = memory.NewStore()
	}
	c, err := consumer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestConsumerHandlesEachProductsMessagesInArrivalOrder(t *testing.T) {
	t.Parallel()
	owners := fakeOwners{"lamp-1": "LAMP", "lamp-2": "LAMP", "desk-1": "DESK", "sofa-1": "SOFA"}
	bus := newGatedBus(owners)
	src := newFakePubSub()
	runConsumer(t, newConsumer(t, consumer.Config{Bus: bus, Owners: owners, Source: src, Concurrency: 4}), (*consumer.Consumer).Run)

	want := map[string][]domain.Command{}
	total := 0
	batches := map[string][]string{"LAMP": {"lamp-1", "lamp-2"}, "DESK": {"desk-1"}, "SOFA": {"sofa-1"}}
	for i := range 100 {
		for _, sku := range []string{"LAMP", "DESK", "SOFA"} {
			orderID := fmt.Sprintf("%s-%d", sku, i)
			src.send(t, consumer.Allocate, allocateMsg(orderID, sku))
			want[sku] = append(want[sku], domain.Allocate{OrderID: orderID, SKU: sku, Qty: 1})
			total++
			if i%3 == 0 {
				// A change names a batch only, yet it must keep its place
				// among its product's messages.
				ref := batches[sku][i%len(batches[sku])]
				src.send(t, consumer.ChangeBatchQuantity, changeMsg(ref, 100+i))
				want[sku] = append(want[sku], domain.ChangeBatchQuantity{Ref: ref, Qty: 100 + i})
				total++
			}
		}
	}
	testenv.Eventually(t, waitLimit, func() error {
		if n := bus.count(); n != total {
			return fmt.Errorf("%d of %d messages handled", n, total)
		}
		return nil
	})
	for sku, w := range want {
		if got := bus.finished(sku); !slices.Equal(got, w) {
			t.Errorf("%s: handled in the order\n%v\nwant\n%v", sku, got, w)
		}
	}
}

// While a message about LAMP is stuck, messages about other products go
// through, and LAMP's later messages (a change of one of its batches among
// them) wait their turn.
func TestConsumerDoesNotHoldUpOtherProductsBehindAStuckOne(t *testing.T) {
	t.Parallel()
	owners := fakeOwners{"lamp-1": "LAMP", "desk-1": "DESK"}
	bus := newGatedBus(owners)
	open := bus.gate("LAMP")
	src := newFakePubSub()
	runConsumer(t, newConsumer(t, consumer.Config{Bus: bus, Owners: owners, Source: src, Concurrency: 4}), (*consumer.Consumer).Run)

	src.send(t, consumer.Allocate, allocateMsg("o1", "LAMP"))
	if h := receive(t, bus.started, "the LAMP allocation started"); h.product != "LAMP" {
		t.Fatalf("started %+v first, want the LAMP allocation", h)
	}
	src.send(t, consumer.ChangeBatchQuantity, changeMsg("lamp-1", 5))
	src.send(t, consumer.Allocate, allocateMsg("o2", "DESK"))
	src.send(t, consumer.ChangeBatchQuantity, changeMsg("desk-1", 7))

	testenv.Eventually(t, waitLimit, func() error {
		if got := bus.finished("DESK"); len(got) != 2 {
			return fmt.Errorf("DESK handled %v while LAMP is stuck, want both of its messages", got)
		}
		return nil
	})
	if got := bus.finished("LAMP"); len(got) != 0 {
		t.Fatalf("LAMP handled %v while its first message is stuck", got)
	}
	for drained := false; !drained; {
		select {
		case h := <-bus.started:
			if h.product == "LAMP" {
				t.Fatalf("%+v started while the LAMP message before it is stuck", h.cmd)
			}
		default:
			drained = true
		}
	}

	open()
	testenv.Eventually(t, waitLimit, func() error {
		want := []domain.Command{domain.Allocate{OrderID: "o1", SKU: "LAMP", Qty: 1}, domain.ChangeBatchQuantity{Ref: "lamp-1", Qty: 5}}
		if got := bus.finished("LAMP"); !slices.Equal(got, want) {
			return fmt.Errorf("LAMP handled %v, want %v", got, want)
		}
		return nil
	})
}

// With every worker stuck, the consumer takes MaxInFlight messages and then
// stops reading: the source's handle call blocks.
func TestConsumerStopsReadingWhenTooManyMessagesAreInFlight(t *testing.T) {
	t.Parallel()
	const maxInFlight = 5
	bus := newGatedBus(nil)
	open := bus.gate("LAMP")
	src := newFakePubSub()
	runConsumer(t, newConsumer(t, consumer.Config{Bus: bus, Owners: fakeOwners{}, Source: src, Concurrency: 1, MaxInFlight: maxInFlight}), (*consumer.Consumer).Run)

	const sent = 50
	for i := range sent {
		src.send(t, consumer.Allocate, allocateMsg(fmt.Sprintf("o%d", i), "LAMP"))
	}
	receive(t, bus.started, "the first message started")
	testenv.Eventually(t, waitLimit, func() error {
		if n := src.returned.Load(); n < maxInFlight {
			return fmt.Errorf("%d messages taken, want %d", n, maxInFlight)
		}
		return nil
	})
	// None finished: a bounded consumer holds exactly maxInFlight.
	if n := src.returned.Load(); n != maxInFlight {
		t.Fatalf("the consumer took %d messages with none finished, want it to stop at %d", n, maxInFlight)
	}
	open()
	testenv.Eventually(t, waitLimit, func() error {
		if n := bus.count(); n != sent {
			return fmt.Errorf("%d of %d handled", n, sent)
		}
		return nil
	})
}

// At shutdown the messages already taken are finished before Run returns:
// pub/sub cannot bring them back.
func TestConsumerFinishesTheMessagesInHandWhenStopped(t *testing.T) {
	t.Parallel()
	bus := newGatedBus(nil)
	open := bus.gate("LAMP")
	src := newFakePubSub()
	stop, returned := runConsumer(t, newConsumer(t, consumer.Config{Bus: bus, Owners: fakeOwners{}, Source: src, Concurrency: 2}), (*consumer.Consumer).Run)

	for i := range 3 {
		src.send(t, consumer.Allocate, allocateMsg(fmt.Sprintf("lamp-%d", i), "LAMP"))
		src.send(t, consumer.Allocate, allocateMsg(fmt.Sprintf("desk-%d", i), "DESK"))
	}
	testenv.Eventually(t, waitLimit, func() error {
		if n := src.returned.Load(); n != 6 {
			return fmt.Errorf("%d of 6 messages taken", n)
		}
		return nil
	})
	stop()
	closedWithin(t, src.stopped, "the source stopped reading")
	select {
	case <-returned:
		t.Fatal("Run returned while messages in hand were unfinished")
	case <-time.After(50 * time.Millisecond): // a window for a wrong Run to return in
	}
	open()
	closedWithin(t, returned, "Run returned once the messages in hand were finished")
	if n := bus.count(); n != 6 {
		t.Fatalf("%d of 6 messages in hand handled at shutdown", n)
	}
	if got := bus.finished("LAMP"); len(got) != 3 || got[0].(domain.Allocate).OrderID != "lamp-0" || got[2].(domain.Allocate).OrderID != "lamp-2" {
		t.Fatalf("LAMP handled %v, want lamp-0, lamp-1, lamp-2", got)
	}
}

// settlement is what a stream entry's settle was called with.
type settlement struct {
	id      string
	settled bool
}

// fakeStream hands entries over like redis.StreamReader, but returns as soon
// as its context ends without waiting for them: the consumer has to.
type fakeStream struct {
	entries [][3]string                  // stream, id, payload
	fields  map[string]map[string]string // by id: the entry's other fields
	settled chan settlement
}

func (s *fakeStream) Run(ctx context.Context, _ []string, handle func(context.Context, string, string, []byte, map[string]string, func(bool))) error {
	for _, e := range s.entries {
		handle(ctx, e[0], e[1], []byte(e[2]), s.fields[e[1]], func(ok bool) { s.settled <- settlement{e[1], ok} })
	}
	<-ctx.Done()
	return nil
}

func TestConsumerSettlesEveryStreamEntryItTookBeforeItReturns(t *testing.T) {
	t.Parallel()
	bus := newGatedBus(nil)
	open := bus.gate("LAMP")
	bus.fail["refused"] = domain.ErrInvalidSKU
	src := newFakePubSub()
	streams := &fakeStream{settled: make(chan settlement, 100), entries: [][3]string{
		{consumer.Allocate, "1-0", `{"orderid": "o1", "sku": "LAMP", "qty": 1}`},
		{consumer.Allocate, "2-0", `not json`},
		{consumer.Allocate, "3-0", `{"orderid": "refused", "sku": "DESK", "qty": 1}`},
		{consumer.Allocate, "4-0", `{"orderid": "o2", "sku": "LAMP", "qty": 1}`},
	}}
	c := newConsumer(t, consumer.Config{Bus: bus, Owners: fakeOwners{}, Source: src, Concurrency: 4})
	stop, returned := runConsumer(t, c, func(c *consumer.Consumer, ctx context.Context) error { return c.RunStreams(ctx, streams) })

	// The entries about other products are settled while LAMP is stuck:
	// both set aside, which settles them too.
	got := map[string]bool{}
	for range 2 {
		s := receive(t, streams.settled, "an entry settled")
		got[s.id] = s.settled
	}
	if !got["2-0"] || !got["3-0"] {
		t.Fatalf("settled %v while LAMP is stuck, want 2-0 and 3-0 settled (set aside)", got)
	}
	stop()
	select {
	case <-returned:
		t.Fatal("RunStreams returned while entries in hand were unsettled")
	case <-time.After(50 * time.Millisecond): // a window for a wrong RunStreams to return in
	}
	open()
	closedWithin(t, returned, "RunStreams returned once every entry was settled")
	for range 2 {
		s := receive(t, streams.settled, "an entry settled before RunStreams returned")
		got[s.id] = s.settled
	}
	if !got["1-0"] || !got["4-0"] {
		t.Fatalf("settled %v, want the LAMP entries settled at shutdown", got)
	}
	if letters := src.deadLetters(); len(letters) != 2 {
		t.Fatalf("dead letters %v, want the malformed and the refused entries", letters)
	}
}

// A change to a batch nobody knows is set aside without holding anything up.
func TestConsumerSetsAsideAChangeToAnUnknownBatch(t *testing.T) {
	t.Parallel()
	owners := fakeOwners{"lamp-1": "LAMP"}
	bus := newGatedBus(owners)
	bus.fail["ghost"] = fmt.Errorf("batch ghost: %w", domain.ErrUnknownBatch)
	src := newFakePubSub()
	runConsumer(t, newConsumer(t, consumer.Config{Bus: bus, Owners: owners, Source: src}), (*consumer.Consumer).Run)

	src.send(t, consumer.ChangeBatchQuantity, changeMsg("ghost", 3))
	src.send(t, consumer.ChangeBatchQuantity, changeMsg("lamp-1", 3))
	testenv.Eventually(t, waitLimit, func() error {
		if got, letters := bus.finished("LAMP"), src.deadLetters(); len(got) != 1 || len(letters) != 1 {
			return fmt.Errorf("handled %v, set aside %v", got, letters)
		}
		return nil
	})
}

// failingOwners cannot tell: the lookup itself fails.
type failingOwners struct{}

func (failingOwners) ProductOfBatch(context.Context, string) (string, bool, error) {
	return "", false, errors.New("permission denied for table batches")
}

func TestConsumerSetsAsideAChangeWhoseProductCannotBeLookedUp(t *testing.T) {
	t.Parallel()
	bus := newGatedBus(nil)
	src := newFakePubSub()
	runConsumer(t, newConsumer(t, consumer.Config{Bus: bus, Owners: failingOwners{}, Source: src}), (*consumer.Consumer).Run)

	src.send(t, consumer.ChangeBatchQuantity, changeMsg("lamp-1", 3))
	testenv.Eventually(t, waitLimit, func() error {
		if letters := src.deadLetters(); len(letters) != 1 {
			return fmt.Errorf("set aside %v", letters)
		}
		return nil
	})
	if n := bus.count(); n != 0 {
		t.Fatalf("%d commands handled without knowing their product", n)
	}
}

func TestConsumerRequiresItsDependencies(t *testing.T) {
	t.Parallel()
	if _, err := consumer.New(consumer.Config{Bus: newGatedBus(nil), Source: newFakePubSub()}); err == nil {
		t.Fatal("New without Owners succeeded")
	}
}

// The events a message raises carry its chain: caused by the message (its
// message_id, or what the sender says caused it when it has none), in the
// chain the sender names (or else the one the message starts).
func TestEventsRaisedByAnInboundMessageCarryItsCorrelationAndCause(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	ctx := context.Background()
	for _, sku := range []string{"PUBSUB-LAMP", "STREAM-LAMP", "ANON-LAMP", "PLAIN-LAMP"} {
		if _, err := app.bus.Handle(ctx, domain.CreateBatch{Ref: "b-" + sku, SKU: sku, Qty: 10}); err != nil {
			t.Fatal(err)
		}
	}
	src := newFakePubSub()
	streams := &fakeStream{settled: make(chan settlement, 10),
		entries: [][3]string{{consumer.Allocate, "1-0", `{"orderid": "o-stream", "sku": "STREAM-LAMP", "qty": 1, "correlation_id": "corr-2"}`}},
		fields:  map[string]map[string]string{"1-0": {"message_id": "m-2", "causation_id": "cause-2", "traceparent": traceParent}},
	}
	c := newConsumer(t, consumer.Config{Bus: app.bus, Owners: app.store, Source: src})
	runConsumer(t, c, (*consumer.Consumer).Run)
	runConsumer(t, c, func(c *consumer.Consumer, ctx context.Context) error { return c.RunStreams(ctx, streams) })

	src.send(t, consumer.Allocate, map[string]any{"orderid": "o-pubsub", "sku": "PUBSUB-LAMP", "qty": 1,
		"message_id": "m-1", "correlation_id": "corr-1", "causation_id": "cause-1", "traceparent": traceParent})
	src.send(t, consumer.Allocate, map[string]any{"orderid": "o-anon", "sku": "ANON-LAMP", "qty": 1, "causation_id": "cause-3"})
	src.send(t, consumer.Allocate, map[string]any{"orderid": "o-plain", "sku": "PLAIN-LAMP", "qty": 1, "message_id": "m-4"})
	want := map[string]servicelayer.Cause{
		"o-pubsub": {CausationID: "m-1", CorrelationID: "corr-1"},
		"o-stream": {CausationID: "m-2", CorrelationID: "corr-2"},
		"o-anon":   {CausationID: "cause-3", CorrelationID: "cause-3"},
		"o-plain":  {CausationID: "m-4", CorrelationID: "m-4"},
	}
	testenv.Eventually(t, waitLimit, func() error {
		got := map[string]servicelayer.Cause{}
		for _, env := range app.publisher.sent() {
			if ev, ok := env.Event.(domain.Allocated); ok {
				got[ev.OrderID] = servicelayer.Cause{CausationID: env.CausationID, CorrelationID: env.CorrelationID}
			}
		}
		if !maps.Equal(got, want) {
			return fmt.Errorf("line_allocated causes %v, want %v (dead letters %v)", got, want, src.deadLetters())
		}
		return nil
	})
}
