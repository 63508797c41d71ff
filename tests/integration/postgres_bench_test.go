package integration_test

import (
	"context"
	"fmt"
	"testing"

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
	uow := db.store
	ctx := context.Background()
	_, err := uow.Do(ctx, func(tx servicelayer.Tx) error {
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
