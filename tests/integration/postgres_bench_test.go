package integration_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"allocation/adapters/postgres"
	"allocation/bootstrap"
	"allocation/domain"
	"allocation/servicelayer"
)

// GetForLine loads the batches with their totals and only the line at hand,
// so that allocating does not read a product's whole history.
func TestPostgresGetForLineLoadsOnlyTheLineAtHand(t *testing.T) {
	t.Parallel()
	bus, db := postgresBus(t)
	handleAll(t, bus, domain.CreateBatch{Ref: "b1", SKU: "LEAN", Qty: 100})
	for i := range 5 {
		handleAll(t, bus, domain.Allocate{OrderID: fmt.Sprintf("o%d", i), SKU: "LEAN", Qty: 2})
	}
	// Another process: it has nothing cached and reads the product.
	uow, err := postgres.NewStore(db.DB, db.url, bootstrap.StoreOptions(slog.Default()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uow.Close() })
	ctx := context.Background()
	_, err = uow.Do(ctx, func(tx servicelayer.Tx) error {
		p, err := tx.Products().GetForLine(ctx, domain.OrderLine{OrderID: "o3", SKU: "LEAN", Qty: 2})
		if err != nil {
			return err
		}
		b := p.Batch("b1")
		if got := b.Lines(); len(got) != 1 || got[0].OrderID != "o3" || b.AllocatedQty() != 10 || b.AvailableQty() != 90 {
			t.Errorf("loaded lines %v, allocated %d, available %d", got, b.AllocatedQty(), b.AvailableQty())
		}
		// The decision is still right: o3 is allocated already, a new line fits.
		if ref, _ := p.Allocate(domain.OrderLine{OrderID: "o3", SKU: "LEAN", Qty: 2}); ref != "b1" || len(p.Events()) != 0 {
			t.Errorf("re-allocating o3: %q, events %v", ref, p.Events())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A process decides on its cached copy of a product, without the line; a
// line allocated already is caught by the write, and the unit of work runs
// again on what is stored: same batch, nothing new. Whether the cached
// decision was another batch or out of stock.
func TestPostgresAllocatingALineTwiceFromTheCacheChangesNothing(t *testing.T) {
	t.Parallel()
	for name, batches := range map[string][]domain.CreateBatch{
		"another batch would take it": {{Ref: "now", Qty: 10}, {Ref: "later", Qty: 10, ETA: today()}},
		"nothing else would take it":  {{Ref: "now", Qty: 10}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			bus, db := postgresBus(t)
			for _, b := range batches {
				b.SKU = "TWICE"
				handleAll(t, bus, b)
			}
			handleAll(t, bus, domain.Allocate{OrderID: "o1", SKU: "TWICE", Qty: 8})
			res, err := bus.Handle(context.Background(), domain.Allocate{OrderID: "o1", SKU: "TWICE", Qty: 8})
			if err != nil || res.BatchRef != "now" {
				t.Fatalf("again: %+v, %v; want the same batch", res, err)
			}
			var lines, allocated, events int
			if err := db.Get(&lines, `SELECT count(*) FROM allocations WHERE orderid = 'o1'`); err != nil {
				t.Fatal(err)
			}
			if err := db.Get(&allocated, `SELECT sum(allocated_quantity) FROM batches WHERE sku = 'TWICE'`); err != nil {
				t.Fatal(err)
			}
			if err := db.Get(&events, `SELECT count(*) FROM event_log WHERE name = 'allocated'`); err != nil {
				t.Fatal(err)
			}
			if lines != 1 || allocated != 8 || events != 1 {
				t.Fatalf("%d lines, %d allocated, %d events; want 1, 8, 1", lines, allocated, events)
			}
		})
	}
}

// Totals changed in SQL without moving the product's version (a bulk load)
// are neither overwritten nor overrun by a process that cached them.
func TestPostgresACachedProductNeverOverwritesOrOverrunsTotalsChangedUnderneath(t *testing.T) {
	t.Parallel()
	bus, db := postgresBus(t)
	handleAll(t, bus,
		domain.CreateBatch{Ref: "small", SKU: "BULK", Qty: 10},
		domain.Allocate{OrderID: "o1", SKU: "BULK", Qty: 1}) // cached now, with 1 allocated
	db.MustExec(`INSERT INTO allocations (batch_id, orderid, sku, qty) SELECT id, 'bulk', 'BULK', 8 FROM batches WHERE reference = 'small'`)
	db.MustExec(`UPDATE batches SET allocated_quantity = allocated_quantity + 8 WHERE reference = 'small'`)

	res, err := bus.Handle(context.Background(), domain.Allocate{OrderID: "o2", SKU: "BULK", Qty: 1})
	if err != nil || res.BatchRef != "small" {
		t.Fatalf("o2: %+v, %v", res, err)
	}
	// The cache thinks 8 are left; the batch holds 0 more.
	res, err = bus.Handle(context.Background(), domain.Allocate{OrderID: "o3", SKU: "BULK", Qty: 5})
	if err != nil || res.BatchRef != "" {
		t.Fatalf("o3: %+v, %v; want out of stock", res, err)
	}
	var allocated int
	if err := db.Get(&allocated, `SELECT allocated_quantity FROM batches WHERE reference = 'small'`); err != nil || allocated != 10 {
		t.Fatalf("allocated %d (%v), want 10", allocated, err)
	}
}

// BenchmarkPostgresAllocate compares one allocation on a fresh SKU with one on
// a SKU that holds 100,000 earlier allocations (`make bench-go`).
func BenchmarkPostgresAllocate(b *testing.B) {
	for _, earlier := range []int{0, 100_000} {
		b.Run(fmt.Sprintf("earlier=%d", earlier), func(b *testing.B) {
			bus, db := postgresBus(b)
			sku := fmt.Sprintf("bench-%d", earlier)
			if _, err := bus.Handle(context.Background(), domain.CreateBatch{Ref: sku + "-b", SKU: sku, Qty: domain.MaxQuantity}); err != nil {
				b.Fatal(err)
			}
			// The history, written in bulk: a real run would take minutes.
			db.MustExec(`INSERT INTO allocations (batch_id, orderid, sku, qty)
				SELECT b.id, 'old-' || g, b.sku, 1 FROM batches b, generate_series(1, $1) g WHERE b.sku = $2`, earlier, sku)
			db.MustExec(`UPDATE batches SET allocated_quantity = $1 WHERE sku = $2`, earlier, sku)
			db.MustExec(`ANALYZE`)
			b.ResetTimer()
			i := 0
			for b.Loop() {
				i++
				if _, err := bus.Handle(context.Background(), domain.Allocate{OrderID: fmt.Sprintf("new-%d", i), SKU: sku, Qty: 1}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPostgresStore measures the repository's two halves on their own:
// loading a product (a batch's lines, never cached) and saving an allocation
// decided on a cached product (one statement, one commit).
func BenchmarkPostgresStore(b *testing.B) { benchmarkStore(b, freshPG) }

// BenchmarkSQLiteStore is BenchmarkPostgresStore on the embedded mode's
// database, plus whole allocations through the bus (the write, then the
// delivery marked done).
func BenchmarkSQLiteStore(b *testing.B) {
	benchmarkStore(b, freshSQLite)
	b.Run("allocate", func(b *testing.B) {
		bus, _ := busOn(b, freshSQLite)
		handleAll(b, bus, domain.CreateBatch{Ref: "bus-b", SKU: "BUS", Qty: domain.MaxQuantity})
		i := 0
		for b.Loop() {
			i++
			handleAll(b, bus, domain.Allocate{OrderID: fmt.Sprintf("bus-%d", i), SKU: "BUS", Qty: 1})
		}
	})
}

func benchmarkStore(b *testing.B, open opener) {
	bus, db := busOn(b, open)
	ctx := context.Background()
	handleAll(b, bus, domain.CreateBatch{Ref: "store-b", SKU: "STORE", Qty: domain.MaxQuantity})
	for i := range 10 {
		handleAll(b, bus, domain.Allocate{OrderID: fmt.Sprintf("warm-%d", i), SKU: "STORE", Qty: 1})
	}
	b.Run("load", func(b *testing.B) {
		for b.Loop() {
			if _, err := db.store.Do(ctx, func(tx servicelayer.Tx) error {
				_, err := tx.Products().GetByBatchRef(ctx, "store-b")
				return err
			}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("save", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			line := domain.OrderLine{OrderID: fmt.Sprintf("save-%d", i), SKU: "STORE", Qty: 1}
			if _, err := db.store.Do(ctx, func(tx servicelayer.Tx) error {
				p, err := tx.Products().GetForLine(ctx, line)
				if err != nil {
					return err
				}
				_, err = p.Allocate(line)
				return err
			}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
