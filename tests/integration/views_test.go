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

// The store projects the view from the events of the unit of work, in the
// same commit: a unit of work that allocates straight through the repository
// is in the view, with no handler asking for it, and one that fails is not.
func TestTheStoreProjectsTheViewInTheSameCommit(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		bus, db := busOn(t, open)
		handleAll(t, bus, domain.CreateBatch{Ref: "b1", SKU: "s", Qty: 10})
		ctx := context.Background()
		allocate := func(orderID string, fail error) error {
			_, err := db.store.Do(ctx, func(tx servicelayer.Tx) error {
				line := domain.OrderLine{OrderID: orderID, SKU: "s", Qty: 1}
				p, err := tx.Products().GetForLine(ctx, line)
				if err != nil {
					return err
				}
				if _, err := p.Allocate(line); err != nil {
					return err
				}
				return fail
			})
			return err
		}
		boom := errors.New("boom")
		if err := allocate("o1", nil); err != nil {
			t.Fatal(err)
		}
		if err := allocate("o2", boom); !errors.Is(err, boom) {
			t.Fatalf("got %v, want boom", err)
		}
		got, _ := db.store.Allocations(ctx, "o1")
		if want := []servicelayer.Allocation{{SKU: "s", BatchRef: "b1"}}; !slices.Equal(got, want) {
			t.Fatalf("o1: got %v, want %v", got, want)
		}
		if got, _ := db.store.Allocations(ctx, "o2"); len(got) != 0 {
			t.Fatalf("o2 failed, yet the view holds %v", got)
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
