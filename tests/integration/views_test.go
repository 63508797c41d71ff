package integration_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"allocation/domain"
	"allocation/servicelayer"
)

func today() time.Time { return time.Now().UTC().Truncate(24 * time.Hour) }

func handleAll(t testing.TB, bus *servicelayer.Bus, cmds ...domain.Command) {
	t.Helper()
	for _, cmd := range cmds {
		if _, err := bus.Handle(context.Background(), cmd); err != nil {
			t.Fatalf("%s: %v", cmd.Name(), err)
		}
	}
}

func TestAllocationsView(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		bus, db := busOn(t, open)
		handleAll(t, bus,
			domain.CreateBatch{Ref: "sku1batch", SKU: "sku1", Qty: 50},
			domain.CreateBatch{Ref: "sku2batch", SKU: "sku2", Qty: 50, ETA: today()},
			domain.Allocate{OrderID: "order1", SKU: "sku1", Qty: 20},
			domain.Allocate{OrderID: "order1", SKU: "sku2", Qty: 20},
			// a spurious batch and order to make sure we get the right ones
			domain.CreateBatch{Ref: "sku1batch-later", SKU: "sku1", Qty: 50, ETA: today()},
			domain.Allocate{OrderID: "otherorder", SKU: "sku1", Qty: 30},
			domain.Allocate{OrderID: "otherorder", SKU: "sku2", Qty: 10})

		got, err := db.store.Allocations(context.Background(), "order1")
		want := []servicelayer.Allocation{{SKU: "sku1", BatchRef: "sku1batch"}, {SKU: "sku2", BatchRef: "sku2batch"}}
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("got %v, %v; want %v", got, err, want)
		}
	})
}

func TestDeallocationMovesTheViewToTheNewBatch(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		bus, db := busOn(t, open)
		handleAll(t, bus,
			domain.CreateBatch{Ref: "b1", SKU: "sku1", Qty: 50},
			domain.CreateBatch{Ref: "b2", SKU: "sku1", Qty: 50, ETA: today()},
			domain.Allocate{OrderID: "o1", SKU: "sku1", Qty: 40},
			domain.ChangeBatchQuantity{Ref: "b1", Qty: 10})

		got, err := db.store.Allocations(context.Background(), "o1")
		if want := []servicelayer.Allocation{{SKU: "sku1", BatchRef: "b2"}}; err != nil || !slices.Equal(got, want) {
			t.Fatalf("got %v, %v; want %v", got, err, want)
		}
	})
}

func TestViewUpdatesAreIdempotent(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		db := open(t)
		uow := db.store
		ctx := context.Background()
		line := domain.OrderLine{OrderID: "o1", SKU: "s", Qty: 1}
		for _, step := range []func(servicelayer.Tx) error{
			func(tx servicelayer.Tx) error { return tx.Allocations().Add(ctx, line, "b1") },
			func(tx servicelayer.Tx) error { return tx.Allocations().Add(ctx, line, "b1") },
			func(tx servicelayer.Tx) error { return tx.Allocations().Remove(ctx, line) },
			func(tx servicelayer.Tx) error { return tx.Allocations().Remove(ctx, line) },
			func(tx servicelayer.Tx) error { return tx.Allocations().Add(ctx, line, "b2") },
			func(tx servicelayer.Tx) error { return tx.Allocations().Add(ctx, line, "b2") },
		} {
			if _, err := uow.Do(ctx, step); err != nil {
				t.Fatal(err)
			}
		}
		got, _ := db.store.Allocations(ctx, "o1")
		if want := []servicelayer.Allocation{{SKU: "s", BatchRef: "b2"}}; !slices.Equal(got, want) {
			t.Fatalf("got %v, want %v", got, want)
		}
	})
}

func TestRacingCreateBatchWithOneRefCreatesItOnce(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		bus, db := busOn(t, open)
		errs := make(chan error, 2)
		for _, sku := range []string{"sku-a", "sku-b"} {
			go func() {
				_, err := bus.Handle(context.Background(), domain.CreateBatch{Ref: "shared-ref", SKU: sku, Qty: 5})
				errs <- err
			}()
		}
		var refused int
		for range 2 {
			if err := <-errs; err != nil {
				if !errors.Is(err, domain.ErrBatchExists) {
					t.Fatalf("unexpected error: %v", err)
				}
				refused++
			}
		}
		var n int
		mustGet(t, db, &n, `SELECT count(*) FROM batches WHERE reference = 'shared-ref'`)
		if n != 1 || refused != 1 {
			t.Fatalf("batches %d, refused %d; want 1 and 1", n, refused)
		}
	})
}
