package domain

// Tests of the batch's own mutators, which are unexported: only a Product
// changes its batches, so that every change moves the product's version.

import (
	"slices"
	"testing"
	"time"
)

var today = time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)

func mustBatch(t *testing.T, ref, sku string, qty int, eta time.Time) *Batch {
	t.Helper()
	b, err := NewBatch(ref, sku, qty, eta)
	if err != nil {
		t.Fatalf("NewBatch(%s): %v", ref, err)
	}
	return b
}

func mustLine(t *testing.T, orderID, sku string, qty int) OrderLine {
	t.Helper()
	l, err := NewOrderLine(orderID, sku, qty)
	if err != nil {
		t.Fatalf("NewOrderLine(%s): %v", orderID, err)
	}
	return l
}

func makeBatchAndLine(t *testing.T, sku string, batchQty, lineQty int) (*Batch, OrderLine) {
	t.Helper()
	return mustBatch(t, "batch-001", sku, batchQty, today), mustLine(t, "order-123", sku, lineQty)
}

func TestAllocatingToABatchReducesTheAvailableQuantity(t *testing.T) {
	t.Parallel()
	sku := ("SMALL-TABLE")
	batch := mustBatch(t, "batch-001", sku, 20, today)

	batch.allocate(mustLine(t, "order-ref", sku, 2))

	if got := batch.AvailableQty(); got != 18 {
		t.Fatalf("available = %d, want 18", got)
	}
	if got := batch.AllocatedQty(); got != 2 {
		t.Fatalf("allocated = %d, want 2", got)
	}
}

func TestCannotAllocateIfSKUsDoNotMatch(t *testing.T) {
	t.Parallel()
	batch := mustBatch(t, "batch-001", ("UNCOMFORTABLE-CHAIR"), 100, time.Time{})
	differentSKULine := mustLine(t, "order-123", ("EXPENSIVE-TOASTER"), 10)

	if batch.CanAllocate(differentSKULine) {
		t.Fatal("CanAllocate accepts a line of another SKU")
	}
	batch.allocate(differentSKULine)
	if got := batch.AvailableQty(); got != 100 {
		t.Fatalf("a line of another SKU was allocated: available = %d", got)
	}
}

func TestAllocationIsIdempotent(t *testing.T) {
	t.Parallel()
	batch, line := makeBatchAndLine(t, ("ANGULAR-DESK"), 20, 2)

	batch.allocate(line)
	batch.allocate(line)

	if got := batch.AvailableQty(); got != 18 {
		t.Fatalf("available = %d, want 18", got)
	}
	if got := batch.Lines(); len(got) != 1 {
		t.Fatalf("lines = %v, want the line once", got)
	}
}

func TestAllocatingALineThatDoesNotFitChangesNothing(t *testing.T) {
	t.Parallel()
	batch, line := makeBatchAndLine(t, ("NARROW-SHELF"), 2, 3)

	batch.allocate(line)

	if batch.AvailableQty() != 2 || batch.Has(line) {
		t.Fatalf("available %d, has line %v; want 2, false", batch.AvailableQty(), batch.Has(line))
	}
}

func TestABatchNeverTakesALineOfNoOrNegativeQuantity(t *testing.T) {
	t.Parallel()
	sku := ("SIGNED-STOOL")
	for _, qty := range []int{0, -5} {
		batch := mustBatch(t, "b", sku, 10, today)
		// A literal skips NewOrderLine's checks; the batch must not trust it.
		line := OrderLine{OrderID: "o", SKU: sku, Qty: qty}

		batch.allocate(line)

		if batch.CanAllocate(line) || batch.Has(line) || batch.AvailableQty() != 10 {
			t.Fatalf("qty %d: can allocate %v, has %v, available %d", qty, batch.CanAllocate(line), batch.Has(line), batch.AvailableQty())
		}
	}
}

func TestCanOnlyDeallocateAllocatedLines(t *testing.T) {
	t.Parallel()
	sku := ("DECORATIVE-TRINKET")
	batch := mustBatch(t, "batch-001", sku, 20, today)
	allocated := mustLine(t, "o1", sku, 2)
	batch.allocate(allocated)

	batch.deallocate(mustLine(t, "o2", sku, 2))
	if got := batch.AvailableQty(); got != 18 {
		t.Fatalf("deallocating a line that is not there changed stock: available = %d", got)
	}
	batch.deallocate(allocated)
	if got := batch.AvailableQty(); got != 20 || batch.Has(allocated) {
		t.Fatalf("available = %d, has line %v; want 20, false", got, batch.Has(allocated))
	}
}

func TestLinesAreKeptInAllocationOrderAndCannotBeChangedFromOutside(t *testing.T) {
	t.Parallel()
	sku := ("STACKED-CHAIR")
	batch := mustBatch(t, "b", sku, 10, time.Time{})
	want := []OrderLine{mustLine(t, "o3", sku, 1), mustLine(t, "o1", sku, 2), mustLine(t, "o2", sku, 3)}
	for _, l := range want {
		batch.allocate(l)
	}

	got := batch.Lines()
	if !slices.Equal(got, want) {
		t.Fatalf("lines = %v, want %v", got, want)
	}
	got[0].Qty = 1000
	if batch.Lines()[0].Qty != 1 || batch.AvailableQty() != 4 {
		t.Fatal("changing the returned lines changed the batch")
	}
}
