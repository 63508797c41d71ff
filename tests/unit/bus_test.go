package unit_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"allocation/domain"
	"allocation/servicelayer"
)

// clock is a manual clock for the memory store, so that retries fall due
// without waiting.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func withClock(app testApp) *clock {
	c := &clock{now: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)}
	app.store.SetClock(c.Now)
	return c
}

// dispatch delivers whatever is due, as the background dispatcher does.
func dispatch(t *testing.T, app testApp) {
	t.Helper()
	if err := servicelayer.NewDispatcher(app.bus, app.store, nil).DeliverDue(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestAFailingEventHandlerDoesNotFailTheCommandAndTheOtherHandlersStillRun(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	clk := withClock(app)
	sku := uniqueName("SHAKEN-TABLE")
	handle(t, app,
		domain.CreateBatch{Ref: "batch1", SKU: sku, Qty: 50},
		domain.CreateBatch{Ref: "batch2", SKU: sku, Qty: 25, ETA: tomorrow},
		domain.Allocate{OrderID: "order1", SKU: sku, Qty: 20},
		domain.Allocate{OrderID: "order2", SKU: sku, Qty: 20})
	app.publisher.failNext(-1)

	// Both orders give way. order2 moves to batch2, whose Allocated cannot
	// be published; order1 then fits nowhere, and its OutOfStock comes after
	// the failing publication in the queue.
	if _, err := app.bus.Handle(context.Background(), domain.ChangeBatchQuantity{Ref: "batch1", Qty: 5}); err != nil {
		t.Fatalf("the command failed with its event handler: %v", err)
	}

	if got := viewOf(t, app, "order2"); !slices.Equal(got, []servicelayer.Allocation{{SKU: sku, BatchRef: "batch2"}}) {
		t.Fatalf("reallocation did not run: view of order2 = %v", got)
	}
	if got := viewOf(t, app, "order1"); len(got) != 0 {
		t.Fatalf("view of order1 = %v, want nothing", got)
	}
	if got := app.notifier.sentTo(servicelayer.StockDesk); !slices.Equal(got, []string{"Out of stock for " + sku}) {
		t.Fatalf("the notification after the failing handler did not run: %v", got)
	}
	if len(app.publisher.calls()) == 0 || len(app.publisher.sent()) != 2 {
		t.Fatalf("publisher called %d times, published %d; want the two first allocations and failing calls",
			len(app.publisher.calls()), len(app.publisher.sent()))
	}
	if got := app.logs.warnings("handler"); !slices.Contains(got, servicelayer.PublishHandler) {
		t.Fatalf("the failure was not logged: warnings name handlers %v", got)
	}

	// Once the publisher is back, the dispatcher retries the failed one.
	app.publisher.failNext(0)
	clk.Advance(time.Minute)
	dispatch(t, app)
	sent := allocatedEvents(t, app.publisher.sent())
	want := domain.Allocated{OrderID: "order2", SKU: sku, Qty: 20, BatchRef: "batch2"}
	if len(sent) != 3 || sent[2] != want || len(app.publisher.calls()) < 4 {
		t.Fatalf("after the retry: published %v in %d calls; want %v retried and published", sent, len(app.publisher.calls()), want)
	}
}

func TestAFailedEventHandlerIsRetriedWithTheSameMessageID(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	clk := withClock(app)
	app.publisher.failNext(1)
	sku := uniqueName("FLAKY-LAMP")
	handle(t, app, domain.CreateBatch{Ref: "b1", SKU: sku, Qty: 10})

	res, err := app.bus.Handle(context.Background(), domain.Allocate{OrderID: "o1", SKU: sku, Qty: 1})
	if err != nil || res.BatchRef != "b1" {
		t.Fatalf("got %+v, %v; want b1", res, err)
	}
	if len(app.publisher.sent()) != 0 {
		t.Fatal("published despite the failure")
	}

	// The failure was the connection's: the delivery stays due, and the
	// bus's pause (a nanosecond here) spaces the attempts.
	dispatch(t, app)

	calls, sent := app.publisher.calls(), app.publisher.sent()
	if len(calls) != 2 || len(sent) != 1 {
		t.Fatalf("calls %d, published %d; want one retry that succeeds", len(calls), len(sent))
	}
	if calls[0].MessageID == "" || sent[0].MessageID != calls[0].MessageID {
		t.Fatalf("the retry carries message id %q, the first attempt %q: a receiver could not recognise it", sent[0].MessageID, calls[0].MessageID)
	}
	want := domain.Allocated{OrderID: "o1", SKU: sku, Qty: 1, BatchRef: "b1"}
	if sent[0].Event != want {
		t.Fatalf("published %v, want %v", sent[0].Event, want)
	}

	clk.Advance(time.Hour)
	dispatch(t, app)
	if len(app.publisher.calls()) != 2 {
		t.Fatal("a delivered event was delivered again")
	}
}

func TestATransientFailureIsRetriedForAsLongAsItLasts(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	clk := withClock(app)
	app.store.SetRetryPolicy(servicelayer.RetryPolicy{MaxAttempts: 3, Initial: time.Second, Max: time.Second})
	app.publisher.failNext(-1)
	sku := uniqueName("DOWN-LAMP")
	handle(t, app, domain.CreateBatch{Ref: "b1", SKU: sku, Qty: 10}, domain.Allocate{OrderID: "o1", SKU: sku, Qty: 1})
	for range 10 {
		clk.Advance(time.Minute)
		dispatch(t, app)
	}
	if calls, dead := len(app.publisher.calls()), app.store.Dead(); calls != 11 || len(dead) != 0 {
		t.Fatalf("calls %d, dead %v; want 11 attempts and nothing parked", calls, dead)
	}
	app.publisher.failNext(0)
	clk.Advance(time.Minute)
	dispatch(t, app)
	if len(app.publisher.sent()) != 1 {
		t.Fatal("not published once the publisher was back")
	}
}

func TestAnEventThatIsRefusedEveryTimeIsParkedAsDeadAfterItsLastAttempt(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	clk := withClock(app)
	app.store.SetRetryPolicy(servicelayer.RetryPolicy{MaxAttempts: 3, Initial: time.Second, Max: time.Second})
	app.publisher.refuseNext(-1)
	sku := uniqueName("DEAD-LAMP")
	handle(t, app, domain.CreateBatch{Ref: "b1", SKU: sku, Qty: 10}, domain.Allocate{OrderID: "o1", SKU: sku, Qty: 1})

	for range 5 {
		clk.Advance(time.Minute)
		dispatch(t, app)
	}

	dead := app.store.Dead()
	if len(app.publisher.calls()) != 3 || len(dead) != 1 || dead[0].Handler != servicelayer.PublishHandler {
		t.Fatalf("calls %d, dead %v; want 3 attempts then parked", len(app.publisher.calls()), dead)
	}
	if committedProduct(t, app, sku).Batch("b1").AvailableQty() != 9 {
		t.Fatal("the allocation was not kept")
	}
}

func TestEventsOfOneProductArePublishedInOrderEvenAfterAFailure(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	clk := withClock(app)
	app.publisher.failNext(1)
	sku := uniqueName("ORDERED")
	handle(t, app, domain.CreateBatch{Ref: "b1", SKU: sku, Qty: 10})
	handle(t, app, domain.Allocate{OrderID: "first", SKU: sku, Qty: 1})
	handle(t, app, domain.Allocate{OrderID: "second", SKU: sku, Qty: 1})
	if got := app.publisher.sent(); len(got) != 0 {
		t.Fatalf("second was published before first: %v", got)
	}

	clk.Advance(time.Minute)
	dispatch(t, app)

	got := allocatedEvents(t, app.publisher.sent())
	if len(got) != 2 || got[0].OrderID != "first" || got[1].OrderID != "second" {
		t.Fatalf("published %v; want first then second", got)
	}
}

func TestACommandErrorReachesTheCallerAndNoEventIsHandled(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		cmd  func(sku string) domain.Command
		want error
	}{
		{"unknown sku", func(string) domain.Command {
			return domain.Allocate{OrderID: "o1", SKU: uniqueName("NOPE"), Qty: 1}
		}, domain.ErrInvalidSKU},
		{"bad quantity", func(sku string) domain.Command { return domain.Allocate{OrderID: "o1", SKU: sku, Qty: 0} }, domain.ErrInvalid},
		{"unknown batch", func(string) domain.Command { return domain.ChangeBatchQuantity{Ref: "ghost", Qty: 1} }, domain.ErrUnknownBatch},
		{"batch ref of another sku", func(string) domain.Command {
			return domain.CreateBatch{Ref: "b1", SKU: uniqueName("OTHER"), Qty: 1}
		}, domain.ErrBatchExists},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			app := newTestApp()
			sku := uniqueName("CAREFUL-LAMP")
			handle(t, app, domain.CreateBatch{Ref: "b1", SKU: sku, Qty: 10}, domain.Allocate{OrderID: "o0", SKU: sku, Qty: 10})
			published := len(app.publisher.calls())

			_, err := app.bus.Handle(context.Background(), c.cmd(sku))

			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if len(app.publisher.calls()) != published || app.notifier.destinations() != 0 {
				t.Fatal("events were handled for a failed command")
			}
		})
	}
}

// When the commit fails after the handler raised events, the caller gets
// the error and the events die with the transaction: nothing is announced
// that did not happen.
func TestEventsOfACommandWhoseCommitFailsAreNeverHandled(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	errCommit := errors.New("commit failed")
	bus := servicelayer.NewBus(servicelayer.Dependencies{
		UoW:       failingCommit{Store: app.store, err: errCommit},
		Publisher: app.publisher,
		Notifier:  app.notifier,
		Log:       slog.New(app.logs),
	})
	sku := uniqueName("DOOMED-LAMP")
	handle(t, app, domain.CreateBatch{Ref: "b1", SKU: sku, Qty: 10})

	for _, cmd := range []domain.Command{
		domain.Allocate{OrderID: "o1", SKU: sku, Qty: 1},   // raises Allocated
		domain.Allocate{OrderID: "o2", SKU: sku, Qty: 100}, // raises OutOfStock
	} {
		if _, err := bus.Handle(context.Background(), cmd); !errors.Is(err, errCommit) {
			t.Fatalf("%v: got %v, want the commit error", cmd, err)
		}
	}

	if len(app.publisher.calls()) != 0 || app.notifier.destinations() != 0 {
		t.Fatalf("published %d, notified %d: events of a rolled back command were handled",
			len(app.publisher.calls()), app.notifier.destinations())
	}
	if got := committedProduct(t, app, sku).Batch("b1").AvailableQty(); got != 10 || len(viewOf(t, app, "o1")) != 0 {
		t.Fatalf("available = %d, view %v: the rolled back allocation stayed", got, viewOf(t, app, "o1"))
	}
	dispatch(t, app)
	if len(app.publisher.calls()) != 0 || app.notifier.destinations() != 0 {
		t.Fatal("the dispatcher found events of a rolled back command")
	}
}

func TestARepeatedInboundMessageIDIsProcessedOnce(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	sku := uniqueName("ONCE")
	handle(t, app, domain.CreateBatch{Ref: "b1", SKU: sku, Qty: 10})
	ctx, id := context.Background(), uniqueName("m")
	if _, err := app.bus.HandleMessage(ctx, id, domain.ChangeBatchQuantity{Ref: "b1", Qty: 5}); err != nil {
		t.Fatal(err)
	}
	handle(t, app, domain.ChangeBatchQuantity{Ref: "b1", Qty: 8})

	_, err := app.bus.HandleMessage(ctx, id, domain.ChangeBatchQuantity{Ref: "b1", Qty: 5})

	if !errors.Is(err, servicelayer.ErrDuplicateMessage) {
		t.Fatalf("got %v, want ErrDuplicateMessage", err)
	}
	if got := committedProduct(t, app, sku).Batch("b1").PurchasedQty(); got != 8 {
		t.Fatalf("purchased = %d, want the newer 8", got)
	}
}

// Run with -race: one bus and one store serve 100 goroutines; the store
// serialises units of work, so exactly the stock there is gets allocated.
func TestConcurrentAllocationsAllocateExactlyTheStock(t *testing.T) {
	t.Parallel()
	const orders, warehouse, shipment = 100, 30, 30
	app := newTestApp()
	sku := uniqueName("BUSY-CHAIR")
	handle(t, app,
		domain.CreateBatch{Ref: "warehouse", SKU: sku, Qty: warehouse},
		domain.CreateBatch{Ref: "shipment", SKU: sku, Qty: shipment, ETA: tomorrow})

	refs := make([]string, orders)
	errs := make([]error, orders)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range orders {
		wg.Go(func() {
			<-start // all at once, to give the race detector something to see
			res, err := app.bus.Handle(context.Background(), domain.Allocate{OrderID: fmt.Sprintf("o%03d", i), SKU: sku, Qty: 1})
			refs[i], errs[i] = res.BatchRef, err
		})
	}
	close(start)
	wg.Wait()
	// Deliveries that found an earlier event of the product in flight were
	// left to the dispatcher, which keeps their order.
	dispatch(t, app)

	count := map[string]int{}
	for i := range orders {
		if errs[i] != nil {
			t.Fatalf("order %d: %v", i, errs[i])
		}
		count[refs[i]]++
		var want []servicelayer.Allocation
		if refs[i] != "" {
			want = []servicelayer.Allocation{{SKU: sku, BatchRef: refs[i]}}
		}
		if got := viewOf(t, app, fmt.Sprintf("o%03d", i)); !slices.Equal(got, want) {
			t.Fatalf("order %d answered %q, view says %v", i, refs[i], got)
		}
	}
	if count["warehouse"] != warehouse || count["shipment"] != shipment || count[""] != orders-warehouse-shipment {
		t.Fatalf("answers per batch %v; want %d, %d and %d out of stock", count, warehouse, shipment, orders-warehouse-shipment)
	}
	p := committedProduct(t, app, sku)
	if got := available(p.Batch("warehouse"), p.Batch("shipment")); !slices.Equal(got, []int{0, 0}) {
		t.Fatalf("available %v, want [0 0]", got)
	}
	if got := len(allocatedEvents(t, app.publisher.sent())); got != warehouse+shipment {
		t.Fatalf("published %d, want %d", got, warehouse+shipment)
	}
	if got := len(app.notifier.sentTo(servicelayer.StockDesk)); got != orders-warehouse-shipment {
		t.Fatalf("notified %d, want %d", got, orders-warehouse-shipment)
	}
	if dead := app.store.Dead(); len(dead) != 0 {
		t.Fatalf("dead deliveries: %v", dead)
	}
}

// After a transient failure the publisher is paused, not retried per
// request: an outage costs the requests nothing. Once Redis is known to be
// back (Resume), the backlog goes out in order, in one batch.
func TestAnOutagePausesThePublisherUntilItIsBack(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	app.bus = servicelayer.NewBus(servicelayer.Dependencies{
		UoW: app.store, Publisher: app.publisher, Notifier: app.notifier, Log: slog.New(app.logs),
		Retry: servicelayer.RetryPolicy{Initial: time.Hour, Max: time.Hour},
	})
	withClock(app)
	sku := uniqueName("PAUSED")
	handle(t, app, domain.CreateBatch{Ref: "b1", SKU: sku, Qty: 100})
	app.publisher.failNext(-1)
	for i := range 10 {
		handle(t, app, domain.Allocate{OrderID: fmt.Sprintf("o%d", i), SKU: sku, Qty: 1})
	}
	if calls := len(app.publisher.calls()); calls != 1 {
		t.Fatalf("the publisher was tried %d times during the outage, want once", calls)
	}
	app.publisher.failNext(0)
	d := servicelayer.NewDispatcher(app.bus, app.store, nil)
	d.Resume(context.Background())
	if err := d.DeliverDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := allocatedEvents(t, app.publisher.sent())
	if len(got) != 10 {
		t.Fatalf("published %d of 10 after Redis came back", len(got))
	}
	for i, ev := range got {
		if ev.OrderID != fmt.Sprintf("o%d", i) {
			t.Fatalf("published out of order: %v", got)
		}
	}
}
