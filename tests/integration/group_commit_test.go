package integration_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"allocation/domain"
	"allocation/servicelayer"
)

// Units of work on different products that wait together are written
// together; one of them refused (a message processed before, a product that
// moved on) must not take the others down with it, nor let itself through.
func TestGroupCommitKeepsEachUnitOfWorksOwnOutcome(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		db := open(t)
		bus := servicelayer.NewBus(servicelayer.Dependencies{UoW: db.store, Publisher: &recordingPublisher{}, Notifier: nopNotifier{}})
		ctx := context.Background()
		const products = 48
		for i := range products {
			handleAll(t, bus, domain.CreateBatch{Ref: fmt.Sprintf("b%d", i), SKU: fmt.Sprintf("GROUP-%d", i), Qty: 100})
		}
		if _, err := bus.HandleMessage(ctx, "seen-before", domain.ChangeBatchQuantity{Ref: "b0", Qty: 90}); err != nil {
			t.Fatal(err)
		}

		for round := range 5 {
			var wg sync.WaitGroup
			errs := make([]error, products)
			for i := range products {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if i == 0 {
						// The repeated message: refused, whatever it is written with.
						_, errs[i] = bus.HandleMessage(ctx, "seen-before", domain.ChangeBatchQuantity{Ref: "b0", Qty: 50})
						return
					}
					_, errs[i] = bus.Handle(ctx, domain.Allocate{OrderID: fmt.Sprintf("o%d-%d", round, i), SKU: fmt.Sprintf("GROUP-%d", i), Qty: 1})
				}()
			}
			wg.Wait()
			for i, err := range errs {
				switch {
				case i == 0 && !errors.Is(err, servicelayer.ErrDuplicateMessage):
					t.Fatalf("round %d: the repeated message answered %v, want ErrDuplicateMessage", round, err)
				case i > 0 && err != nil:
					t.Fatalf("round %d: allocation on GROUP-%d: %v", round, i, err)
				}
			}
		}
		var purchased, lines, allocated int
		if err := db.Get(&purchased, `SELECT purchased_quantity FROM batches WHERE reference = 'b0'`); err != nil || purchased != 90 {
			t.Fatalf("b0 holds %d (%v), want the first message's 90", purchased, err)
		}
		if err := db.Get(&lines, `SELECT count(*) FROM allocations`); err != nil || lines != 5*(products-1) {
			t.Fatalf("%d lines (%v), want %d", lines, err, 5*(products-1))
		}
		if err := db.Get(&allocated, `SELECT sum(allocated_quantity) FROM batches`); err != nil || allocated != 5*(products-1) {
			t.Fatalf("%d allocated (%v), want %d", allocated, err, 5*(products-1))
		}
	})
}
