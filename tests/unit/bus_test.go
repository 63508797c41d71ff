package unit_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"allocation/domain"
)

func TestAFailingEventHandlerIsRetriedAndNeverFailsTheCommand(t *testing.T) {
	app := newTestApp()
	app.publisher.fail = 1
	handle(t, app, domain.CreateBatch{Ref: "b1", SKU: "FLAKY-LAMP", Qty: 10})

	res, err := app.bus.Handle(context.Background(), domain.Allocate{OrderID: "o1", SKU: "FLAKY-LAMP", Qty: 1})
	if err != nil || res.BatchRef != "b1" {
		t.Fatalf("got %+v, %v", res, err)
	}
	if app.publisher.attempts != 2 || len(app.publisher.sent()) != 1 {
		t.Fatalf("attempts %d, sent %d; want a retry that succeeds", app.publisher.attempts, len(app.publisher.sent()))
	}
	if view, _ := app.store.Allocations(context.Background(), "o1"); len(view) != 1 {
		t.Fatalf("the other handler did not run: view %v", view)
	}
}

func TestAnEventHandlerThatKeepsFailingIsLoggedAndTheCommandStillSucceeds(t *testing.T) {
	app := newTestApp()
	app.publisher.fail = 1000
	handle(t, app, domain.CreateBatch{Ref: "b1", SKU: "DEAD-LAMP", Qty: 10})
	if _, err := app.bus.Handle(context.Background(), domain.Allocate{OrderID: "o1", SKU: "DEAD-LAMP", Qty: 1}); err != nil {
		t.Fatalf("command failed with its event handler: %v", err)
	}
	if app.store.Product("DEAD-LAMP").Batch("b1").AvailableQty() != 9 {
		t.Fatal("the allocation was not kept")
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
	if got := app.store.Product("BUSY-CHAIR").Batch("b1").AvailableQty(); got != 0 {
		t.Fatalf("available = %d, want 0", got)
	}
	if len(app.publisher.sent()) != 60 || len(app.notifier.sent["stock@made.com"]) != 40 {
		t.Fatalf("published %d, notified %d; want 60, 40", len(app.publisher.sent()), len(app.notifier.sent["stock@made.com"]))
	}
}
