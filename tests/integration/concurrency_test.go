package integration_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"allocation/domain"
)

// Many goroutines allocate on one SKU at once: nobody sees an error, no update
// is lost, nothing is over-allocated, and the view agrees.
func TestConcurrentAllocationsOnOneSKU(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		cases := []struct {
			name               string
			goroutines, qty    int
			stock, wantedLines int
		}{
			{"fifty lines of one, plenty of stock", 50, 1, 100, 50},
			{"twenty lines of ten for a hundred", 20, 10, 100, 10},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				bus, db := busOn(t, open)
				ctx := context.Background()
				if _, err := bus.Handle(ctx, domain.CreateBatch{Ref: "b1", SKU: "HOT", Qty: c.stock}); err != nil {
					t.Fatal(err)
				}
				var wg sync.WaitGroup
				errs := make(chan error, c.goroutines)
				for i := range c.goroutines {
					wg.Add(1)
					go func() {
						defer wg.Done()
						_, err := bus.Handle(ctx, domain.Allocate{OrderID: fmt.Sprintf("o%d", i), SKU: "HOT", Qty: c.qty})
						if err != nil {
							errs <- err
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Errorf("a caller saw: %v", err)
				}
				var lines, allocated, version, viewed int
				mustGet(t, db, &lines, `SELECT count(*) FROM allocations`)
				mustGet(t, db, &allocated, `SELECT coalesce(sum(qty), 0) FROM allocations`)
				mustGet(t, db, &version, `SELECT version_number FROM products WHERE sku = 'HOT'`)
				mustGet(t, db, &viewed, `SELECT count(*) FROM allocations_view`)
				if lines != c.wantedLines || allocated > c.stock || version != 1+c.wantedLines || viewed != c.wantedLines {
					t.Fatalf("lines %d, allocated %d of %d, version %d, viewed %d; want %d lines, version %d",
						lines, allocated, c.stock, version, viewed, c.wantedLines, 1+c.wantedLines)
				}
			})
		}
	})
}

// A quantity change racing allocations loses no update: every line ends up
// somewhere it fits.
func TestChangeBatchQuantityRacingAllocationsStaysConsistent(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		bus, db := busOn(t, open)
		ctx := context.Background()
		for _, cmd := range []domain.Command{
			domain.CreateBatch{Ref: "small", SKU: "RACE", Qty: 40},
			domain.CreateBatch{Ref: "big", SKU: "RACE", Qty: 1000, ETA: today()},
		} {
			if _, err := bus.Handle(ctx, cmd); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		for i := range 30 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := bus.Handle(ctx, domain.Allocate{OrderID: fmt.Sprintf("o%d", i), SKU: "RACE", Qty: 2}); err != nil {
					t.Error(err)
				}
			}()
			if i == 10 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := bus.Handle(ctx, domain.ChangeBatchQuantity{Ref: "small", Qty: 5}); err != nil {
						t.Error(err)
					}
				}()
			}
		}
		wg.Wait()
		var over, lines, viewed int
		mustGet(t, db, &over, `SELECT count(*) FROM batches b WHERE purchased_quantity < (SELECT coalesce(sum(qty), 0) FROM allocations a WHERE a.batch_id = b.id)`)
		mustGet(t, db, &lines, `SELECT count(*) FROM allocations`)
		mustGet(t, db, &viewed, `SELECT count(*) FROM allocations_view v JOIN allocations a USING (orderid, sku, qty) JOIN batches b ON b.id = a.batch_id AND b.reference = v.batchref`)
		if over != 0 || lines != 30 || viewed != 30 {
			t.Fatalf("over-allocated batches %d, lines %d, view rows agreeing %d; want 0, 30, 30", over, lines, viewed)
		}
	})
}

func mustGet(t *testing.T, db interface {
	Get(dest any, query string, args ...any) error
}, dest any, query string) {
	t.Helper()
	if err := db.Get(dest, query); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}
