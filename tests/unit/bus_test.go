package unit_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"allocation/domain"
	"allocation/servicelayer"
)

// clock is a manual clock for the memory store.
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

func dispatch(t *testing.T, app testApp) {
	t.Helper()
	if err := servicelayer.NewDispatcher(app.bus, app.store, nil).DeliverDue(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestAFailingEventHandlerNeverFailsTheCommandAndIsRetriedByTheDispatcher(t *testing.T) {
	app := newTestApp()
	clk := withClock(app)
	app.publisher.fail = 1
	handle(t, app, domain.CreateBatch{Ref: "b1", SKU: "FLAKY-LAMP", Qty: 10})

	res, err := app.bus.Handle(context.Background(), domain.Allocate{OrderID: "o1", SKU: "FLAKY-LAMP", Qty: 1})
	if err != nil || res.BatchRef != "b1" {
		t.Fatalf("got %+v, %v", res, err)
	}
	if view, _ := app.store.Allocations(context.Background(), "o1"); len(view) != 1 {
		t.Fatalf("the read model lags behind a failing publisher: %v", view)
	}
	dispatch(t, app)
	if len(app.publisher.sent()) != 0 {
		t.Fatal("retried before the backoff delay")
	}
	clk.Advance(time.Minute)
	dispatch(t, app)
	sent := app.publisher.sent()
	if app.publisher.attempts != 2 || len(sent) != 1 || sent[0].Event.(domain.Allocated).OrderID != "o1" {
		t.Fatalf("attempts %d, sent %v; want one retry that succeeds", app.publisher.attempts, sent)
	}
	dispatch(t, app)
	if len(app.publisher.sent()) != 1 {
		t.Fatal("a delivered event was delivered again")
	}
}

func TestAnEventThatKeepsFailingIsParkedAsDeadAfterItsLastAttempt(t *testing.T) {
	app := newTestApp()
	clk := withClock(app)
	app.store.SetRetryPolicy(servicelayer.RetryPolicy{MaxAttempts: 3, Initial: time.Second, Max: time.Second})
	app.publisher.fail = 1000
	handle(t, app, domain.CreateBatch{Ref: "b1", SKU: "DEAD-LAMP", Qty: 10}, domain.Allocate{OrderID: "o1", SKU: "DEAD-LAMP", Qty: 1})
	for range 5 {
		clk.Advance(time.Minute)
		dispatch(t, app)
	}
	dead := app.store.Dead()
	if app.publisher.attempts != 3 || len(dead) != 1 || dead[0].Handler != "publish_line_allocated" {
		t.Fatalf("attempts %d, dead %v; want 3 attempts then parked", app.publisher.attempts, dead)
	}
	if app.store.Product("DEAD-LAMP").Batch("b1").AvailableQty() != 9 {
		t.Fatal("the allocation was not kept")
	}
}

func TestEventsOfOneProductArePublishedInOrderEvenAfterAFailure(t *testing.T) {
	app := newTestApp()
	clk := withClock(app)
	app.publisher.fail = 1
	handle(t, app, domain.CreateBatch{Ref: "b1", SKU: "ORDERED", Qty: 10})
	handle(t, app, domain.Allocate{OrderID: "first", SKU: "ORDERED", Qty: 1})
	handle(t, app, domain.Allocate{OrderID: "second", SKU: "ORDERED", Qty: 1})
	if len(app.publisher.sent()) != 0 {
		t.Fatalf("second was published before first: %v", app.publisher.sent())
	}
	clk.Advance(time.Minute)
	dispatch(t, app)
	sent := app.publisher.sent()
	if len(sent) != 2 || sent[0].Event.(domain.Allocated).OrderID != "first" || sent[1].Event.(domain.Allocated).OrderID != "second" {
		t.Fatalf("published %v; want first then second", sent)
	}
}

func TestACommandErrorReachesTheCallerAndNoEventIsHandled(t *testing.T) {
	app := newTestApp()
	if _, err := app.bus.Handle(context.Background(), domain.Allocate{OrderID: "o1", SKU: "NOPE", Qty: 1}); err == nil {
		t.Fatal("no error")
	}
	if len(app.publisher.sent()) != 0 || len(app.notifier.sent) != 0 {
		t.Fatal("events were handled for a failed command")
	}
}

func TestARepeatedInboundMessageIDIsProcessedOnce(t *testing.T) {
	app := newTestApp()
	handle(t, app, domain.CreateBatch{Ref: "b1", SKU: "ONCE", Qty: 10})
	ctx := servicelayer.WithMessageID(context.Background(), "m-1")
	if _, err := app.bus.Handle(ctx, domain.ChangeBatchQuantity{Ref: "b1", Qty: 5}); err != nil {
		t.Fatal(err)
	}
	handle(t, app, domain.ChangeBatchQuantity{Ref: "b1", Qty: 8})
	if _, err := app.bus.Handle(ctx, domain.ChangeBatchQuantity{Ref: "b1", Qty: 5}); !errors.Is(err, servicelayer.ErrDuplicateMessage) {
		t.Fatalf("got %v, want ErrDuplicateMessage", err)
	}
	if got := app.store.Product("ONCE").Batch("b1").PurchasedQty(); got != 8 {
		t.Fatalf("purchased = %d, want the newer 8", got)
	}
}

// Run with -race: one bus serves many goroutines and shares nothing between them.
func TestTheBusIsSafeForConcurrentUse(t *testing.T) {
	app := newTestApp()
	handle(t, app, domain.CreateBatch{Ref: "b1", SKU: "BUSY-CHAIR", Qty: 60})
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := app.bus.Handle(context.Background(), domain.Allocate{OrderID: fmt.Sprintf("o%d", i), SKU: "BUSY-CHAIR", Qty: 1}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Deliveries that found an earlier event of the product in flight were
	// left to the dispatcher, which keeps their order.
	dispatch(t, app)
	if got := app.store.Product("BUSY-CHAIR").Batch("b1").AvailableQty(); got != 0 {
		t.Fatalf("available = %d, want 0", got)
	}
	if len(app.publisher.sent()) != 60 || len(app.notifier.sent["stock@made.com"]) != 40 {
		t.Fatalf("published %d, notified %d; want 60, 40", len(app.publisher.sent()), len(app.notifier.sent["stock@made.com"]))
	}
}
