package integration_test

import (
	"context"
	"fmt"
	"testing"

	"allocation/adapters/sqlstore"
	"allocation/domain"
)

// A batch never changes product, so PostgreSQL is asked once per batch: the
// answer stands even when the database can no longer give it.
func TestPostgresProductOfBatchIsRememberedOnceFound(t *testing.T) {
	t.Parallel()
	bus, db := postgresBus(t)
	handleAll(t, bus, domain.CreateBatch{Ref: "b1", SKU: "LAMP", Qty: 10})
	views := db.store
	ctx := context.Background()
	if sku, found, err := views.ProductOfBatch(ctx, "b1"); sku != "LAMP" || !found || err != nil {
		t.Fatalf("first lookup: %q, %v, %v", sku, found, err)
	}
	if _, err := db.Exec(`UPDATE batches SET reference = 'renamed' WHERE reference = 'b1'`); err != nil {
		t.Fatal(err)
	}
	if sku, found, err := views.ProductOfBatch(ctx, "b1"); sku != "LAMP" || !found || err != nil {
		t.Fatalf("second lookup: %q, %v, %v; want the remembered LAMP", sku, found, err)
	}
	if _, found, err := views.ProductOfBatch(ctx, "renamed"); !found || err != nil {
		t.Fatalf("a batch not seen before is looked up: %v, %v", found, err)
	}
}

// The memory of ProductOfBatch is bounded: after more batches than it keeps,
// it remembers exactly as many as it may.
func TestPostgresProductOfBatchRemembersABoundedNumberOfBatches(t *testing.T) {
	t.Parallel()
	db := freshPG(t)
	ctx := context.Background()
	n := sqlstore.MaxCachedOwners + 50
	if _, err := db.Exec(`INSERT INTO products (sku) VALUES ('MANY')`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO batches (reference, sku, purchased_quantity) SELECT 'r' || g, 'MANY', 1 FROM generate_series(1, $1::int) g`, n); err != nil {
		t.Fatal(err)
	}
	views := db.store
	for i := range n {
		if sku, found, err := views.ProductOfBatch(ctx, fmt.Sprintf("r%d", i+1)); sku != "MANY" || !found || err != nil {
			t.Fatalf("r%d: %q, %v, %v", i+1, sku, found, err)
		}
	}
	// Out of the database, the batches are known from memory only.
	if _, err := db.Exec(`UPDATE batches SET reference = 'gone-' || reference`); err != nil {
		t.Fatal(err)
	}
	remembered := 0
	for i := range n {
		if _, found, err := views.ProductOfBatch(ctx, fmt.Sprintf("r%d", i+1)); err != nil {
			t.Fatal(err)
		} else if found {
			remembered++
		}
	}
	if remembered != sqlstore.MaxCachedOwners {
		t.Fatalf("%d of %d batches remembered, want the bound, %d", remembered, n, sqlstore.MaxCachedOwners)
	}
}
