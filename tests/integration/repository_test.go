package integration_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"allocation/adapters/postgres"
	"allocation/adapters/sqlstore"
	"allocation/domain"
	"allocation/servicelayer"
)

func TestRepositoryGetsProductsByBatchRef(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		db := open(t)
		uow := db.store
		ctx := context.Background()
		_, err := uow.Do(ctx, func(tx servicelayer.Tx) error {
			for sku, refs := range map[string][]string{"sku1": {"b1", "b2"}, "sku2": {"b3"}} {
				p, _ := domain.NewProduct(sku)
				if err := tx.Products().Add(ctx, p); err != nil {
					return err
				}
				for _, ref := range refs {
					b, _ := domain.NewBatch(ref, sku, 100, time.Time{})
					if err := p.AddBatch(b); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = uow.Do(ctx, func(tx servicelayer.Tx) error {
			for ref, sku := range map[string]string{"b2": "sku1", "b3": "sku2"} {
				p, err := tx.Products().GetByBatchRef(ctx, ref)
				if err != nil || p == nil || p.SKU() != sku {
					t.Errorf("GetByBatchRef(%s) = %v, %v; want %s", ref, p, err, sku)
				}
			}
			for _, missing := range []func() (*domain.Product, error){
				func() (*domain.Product, error) { return tx.Products().GetByBatchRef(ctx, "nope") },
				func() (*domain.Product, error) { return tx.Products().Get(ctx, "nope") },
			} {
				if p, err := missing(); p != nil || err != nil {
					t.Errorf("missing product: got %v, %v; want nil, nil", p, err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// GetForQuantityChange reads no line when the change keeps them all (the
// cached product will do) and the batch's lines when it may deallocate
// some, so that a quantity change costs a read only when it needs one.
func TestGetForQuantityChangeReadsTheLinesOnlyWhenTheChangeMayDeallocate(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		bus, db := busOn(t, open)
		handleAll(t, bus, domain.CreateBatch{Ref: "b1", SKU: "QTY", Qty: 10},
			domain.Allocate{OrderID: "o1", SKU: "QTY", Qty: 4}) // cached with 4 allocated
		ctx := context.Background()
		for qty, wantLines := range map[int]int{4: 0, 9: 0, 3: 1} {
			_, err := db.store.Do(ctx, func(tx servicelayer.Tx) error {
				p, err := tx.Products().GetForQuantityChange(ctx, "b1", qty)
				if err != nil {
					return err
				}
				b := p.Batch("b1")
				if got := len(b.Lines()); got != wantLines || b.AllocatedQty() != 4 {
					t.Errorf("for qty %d: %d lines loaded, %d allocated; want %d lines, 4 allocated", qty, got, b.AllocatedQty(), wantLines)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	})
}

// A quantity change that keeps every line may be decided on the cached copy
// of the product, without reading it. When another process allocated
// meanwhile, the write finds the version moved, and the change is decided
// again on what is stored: the lines that no longer fit are deallocated,
// never left over the new quantity.
func TestAQuantityChangeOnAStaleCachedProductIsDecidedAgainOnWhatIsStored(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		bus, db := busOn(t, open)
		handleAll(t, bus, domain.CreateBatch{Ref: "b1", SKU: "STALE", Qty: 10},
			domain.Allocate{OrderID: "o1", SKU: "STALE", Qty: 2}) // cached with 2 allocated
		// Another process allocates 6 more.
		db.MustExec(`INSERT INTO allocations (batch_id, orderid, sku, qty) SELECT id, 'other', 'STALE', 6 FROM batches WHERE reference = 'b1'`)
		db.MustExec(`UPDATE batches SET allocated_quantity = allocated_quantity + 6 WHERE reference = 'b1'`)
		db.MustExec(`UPDATE products SET version_number = version_number + 1 WHERE sku = 'STALE'`)

		handleAll(t, bus, domain.ChangeBatchQuantity{Ref: "b1", Qty: 5}) // the cache says 2 allocated: it fits
		var purchased, allocated, lines, deallocated int
		if err := db.Get(&purchased, `SELECT purchased_quantity FROM batches WHERE reference = 'b1'`); err != nil {
			t.Fatal(err)
		}
		if err := db.Get(&allocated, `SELECT allocated_quantity FROM batches WHERE reference = 'b1'`); err != nil {
			t.Fatal(err)
		}
		if err := db.Get(&lines, `SELECT coalesce(sum(qty), 0) FROM allocations WHERE sku = 'STALE'`); err != nil {
			t.Fatal(err)
		}
		if err := db.Get(&deallocated, `SELECT count(*) FROM event_log WHERE name = 'deallocated'`); err != nil {
			t.Fatal(err)
		}
		if purchased != 5 || allocated != lines || allocated > 5 || deallocated == 0 {
			t.Fatalf("purchased %d, allocated %d, lines %d, %d deallocated; want 5, the lines' total within 5, some deallocated",
				purchased, allocated, lines, deallocated)
		}
	})
}

func TestRepositoryRoundTripsBatchesETAsAndLines(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		bus, db := busOn(t, open)
		ctx := context.Background()
		eta := time.Date(2031, 3, 4, 0, 0, 0, 0, time.UTC)
		for _, cmd := range []domain.Command{
			domain.CreateBatch{Ref: "warehouse", SKU: "LAMP", Qty: 10},
			domain.CreateBatch{Ref: "ship", SKU: "LAMP", Qty: 10, ETA: eta},
			domain.Allocate{OrderID: "o1", SKU: "LAMP", Qty: 4},
			domain.Allocate{OrderID: "o2", SKU: "LAMP", Qty: 6},
			domain.Allocate{OrderID: "o3", SKU: "LAMP", Qty: 2},
		} {
			if _, err := bus.Handle(ctx, cmd); err != nil {
				t.Fatal(err)
			}
		}
		_, err := db.store.Do(ctx, func(tx servicelayer.Tx) error {
			p, err := tx.Products().Get(ctx, "LAMP")
			if err != nil {
				return err
			}
			w, s := p.Batch("warehouse"), p.Batch("ship")
			if !w.ETA().IsZero() || !s.ETA().Equal(eta) {
				t.Errorf("ETAs: %v, %v", w.ETA(), s.ETA())
			}
			wantW := []domain.OrderLine{{OrderID: "o1", SKU: "LAMP", Qty: 4}, {OrderID: "o2", SKU: "LAMP", Qty: 6}}
			if !slices.Equal(w.Lines(), wantW) || !slices.Equal(s.Lines(), []domain.OrderLine{{OrderID: "o3", SKU: "LAMP", Qty: 2}}) {
				t.Errorf("lines: %v, %v", w.Lines(), s.Lines())
			}
			if p.Version() != 5 {
				t.Errorf("version = %d, want 5", p.Version())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

func insertBatch(t *testing.T, uow *sqlstore.Store, ref, sku string, qty int) {
	t.Helper()
	ctx := context.Background()
	_, err := uow.Do(ctx, func(tx servicelayer.Tx) error {
		p, err := tx.Products().Get(ctx, sku)
		if err != nil {
			return err
		}
		if p == nil {
			p, _ = domain.NewProduct(sku)
			if err := tx.Products().Add(ctx, p); err != nil {
				return err
			}
		}
		b, _ := domain.NewBatch(ref, sku, qty, time.Time{})
		return p.AddBatch(b)
	})
	if err != nil {
		t.Fatalf("insert batch %s: %v", ref, err)
	}
}

func TestUnitOfWorkCanRetrieveABatchAndAllocateToIt(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		db := open(t)
		uow := db.store
		insertBatch(t, uow, "batch1", "HIPSTER-WORKBENCH", 100)
		ctx := context.Background()
		_, err := uow.Do(ctx, func(tx servicelayer.Tx) error {
			p, err := tx.Products().Get(ctx, "HIPSTER-WORKBENCH")
			if err != nil {
				return err
			}
			_, err = p.Allocate(domain.OrderLine{OrderID: "o1", SKU: "HIPSTER-WORKBENCH", Qty: 10})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		var ref string
		if err := db.Get(&ref, `SELECT b.reference FROM allocations a JOIN batches b ON b.id = a.batch_id WHERE a.orderid = 'o1'`); err != nil || ref != "batch1" {
			t.Fatalf("allocated to %q (%v), want batch1", ref, err)
		}
	})
}

func TestUnitOfWorkRollsBackOnError(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		db := open(t)
		uow := db.store
		ctx := context.Background()
		boom := errors.New("boom")
		_, err := uow.Do(ctx, func(tx servicelayer.Tx) error {
			p, _ := domain.NewProduct("MEDIUM-PLINTH")
			if err := tx.Products().Add(ctx, p); err != nil {
				return err
			}
			b, _ := domain.NewBatch("batch1", "MEDIUM-PLINTH", 100, time.Time{})
			_ = p.AddBatch(b)
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("got %v, want the handler's error", err)
		}
		assertEmpty(t, db)
	})
}

func TestUnitOfWorkRollsBackOnPanic(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		db := open(t)
		uow := db.store
		ctx := context.Background()
		func() {
			defer func() {
				if recover() == nil {
					t.Fatal("the panic was swallowed")
				}
			}()
			_, _ = uow.Do(ctx, func(tx servicelayer.Tx) error {
				p, _ := domain.NewProduct("LARGE-FORK")
				_ = tx.Products().Add(ctx, p)
				panic("boom")
			})
		}()
		assertEmpty(t, db)
		// The connection went back to the pool in a usable state.
		insertBatch(t, uow, "b1", "LARGE-FORK", 1)
	})
}

func TestUnitOfWorkReturnsTheCommitError(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		db := open(t)
		uow := db.store
		ctx, cancel := context.WithCancel(context.Background())
		_, err := uow.Do(ctx, func(tx servicelayer.Tx) error {
			p, _ := domain.NewProduct("FRAGILE-VASE")
			if err := tx.Products().Add(ctx, p); err != nil {
				return err
			}
			cancel() // the transaction cannot commit any more
			return nil
		})
		if err == nil {
			t.Fatal("a failed commit was reported as success")
		}
		assertEmpty(t, db)
	})
}

func assertEmpty(t *testing.T, db interface {
	Get(dest any, query string, args ...any) error
}) {
	t.Helper()
	var n int
	if err := db.Get(&n, `SELECT (SELECT count(*) FROM products) + (SELECT count(*) FROM batches)`); err != nil || n != 0 {
		t.Fatalf("%d rows left behind (%v), want none", n, err)
	}
}

func TestPostgresMigrationsAreIdempotentAndSafeToRunConcurrently(t *testing.T) {
	t.Parallel()
	db := freshPG(t) // migrated once already
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- postgres.Migrate(context.Background(), db.DB) }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
