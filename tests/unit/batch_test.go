package unit_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"allocation/domain"
)

// Fixed dates keep the tests deterministic; the domain never reads the clock.
var (
	today    = time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	tomorrow = today.AddDate(0, 0, 1)
	later    = tomorrow.AddDate(0, 0, 10)
)

func mustBatch(t *testing.T, ref, sku string, qty int, eta time.Time) *domain.Batch {
	t.Helper()
	b, err := domain.NewBatch(ref, sku, qty, eta)
	if err != nil {
		t.Fatalf("NewBatch(%s): %v", ref, err)
	}
	return b
}

func mustLine(t *testing.T, orderID, sku string, qty int) domain.OrderLine {
	t.Helper()
	l, err := domain.NewOrderLine(orderID, sku, qty)
	if err != nil {
		t.Fatalf("NewOrderLine(%s): %v", orderID, err)
	}
	return l
}

// makeBatchAndLine is the book's make_batch_and_line.
func makeBatchAndLine(t *testing.T, sku string, batchQty, lineQty int) (*domain.Batch, domain.OrderLine) {
	t.Helper()
	return mustBatch(t, "batch-001", sku, batchQty, today), mustLine(t, "order-123", sku, lineQty)
}

func TestAllocatingToABatchReducesTheAvailableQuantity(t *testing.T) {
	t.Parallel()
	sku := uniqueName("SMALL-TABLE")
	batch := mustBatch(t, "batch-001", sku, 20, today)

	batch.Allocate(mustLine(t, "order-ref", sku, 2))

	if got := batch.AvailableQty(); got != 18 {
		t.Fatalf("available = %d, want 18", got)
	}
	if got := batch.AllocatedQty(); got != 2 {
		t.Fatalf("allocated = %d, want 2", got)
	}
}

func TestCanAllocateOnlyWhenTheWholeLineFits(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name              string
		batchQty, lineQty int
		want              bool
	}{
		{"if available greater than required", 20, 2, true},
		{"not if available smaller than required", 2, 20, false},
		{"if available equal to required", 2, 2, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			batch, line := makeBatchAndLine(t, uniqueName("ELEGANT-LAMP"), c.batchQty, c.lineQty)
			if got := batch.CanAllocate(line); got != c.want {
				t.Fatalf("CanAllocate = %v, want %v", got, c.want)
			}
		})
	}
}

func TestCannotAllocateIfSKUsDoNotMatch(t *testing.T) {
	t.Parallel()
	batch := mustBatch(t, "batch-001", uniqueName("UNCOMFORTABLE-CHAIR"), 100, time.Time{})
	differentSKULine := mustLine(t, "order-123", uniqueName("EXPENSIVE-TOASTER"), 10)

	if batch.CanAllocate(differentSKULine) {
		t.Fatal("CanAllocate accepts a line of another SKU")
	}
	batch.Allocate(differentSKULine)
	if got := batch.AvailableQty(); got != 100 {
		t.Fatalf("a line of another SKU was allocated: available = %d", got)
	}
}

func TestAllocationIsIdempotent(t *testing.T) {
	t.Parallel()
	batch, line := makeBatchAndLine(t, uniqueName("ANGULAR-DESK"), 20, 2)

	batch.Allocate(line)
	batch.Allocate(line)

	if got := batch.AvailableQty(); got != 18 {
		t.Fatalf("available = %d, want 18", got)
	}
	if got := batch.Lines(); len(got) != 1 {
		t.Fatalf("lines = %v, want the line once", got)
	}
}

func TestAllocatingALineThatDoesNotFitChangesNothing(t *testing.T) {
	t.Parallel()
	batch, line := makeBatchAndLine(t, uniqueName("NARROW-SHELF"), 2, 3)

	batch.Allocate(line)

	if batch.AvailableQty() != 2 || batch.Has(line) {
		t.Fatalf("available %d, has line %v; want 2, false", batch.AvailableQty(), batch.Has(line))
	}
}

func TestABatchNeverTakesALineOfNoOrNegativeQuantity(t *testing.T) {
	t.Parallel()
	sku := uniqueName("SIGNED-STOOL")
	for _, qty := range []int{0, -5} {
		batch := mustBatch(t, "b", sku, 10, today)
		// A literal skips NewOrderLine's checks; the batch must not trust it.
		line := domain.OrderLine{OrderID: "o", SKU: sku, Qty: qty}

		batch.Allocate(line)

		if batch.CanAllocate(line) || batch.Has(line) || batch.AvailableQty() != 10 {
			t.Fatalf("qty %d: can allocate %v, has %v, available %d", qty, batch.CanAllocate(line), batch.Has(line), batch.AvailableQty())
		}
	}
}

func TestCanOnlyDeallocateAllocatedLines(t *testing.T) {
	t.Parallel()
	sku := uniqueName("DECORATIVE-TRINKET")
	batch := mustBatch(t, "batch-001", sku, 20, today)
	allocated := mustLine(t, "o1", sku, 2)
	batch.Allocate(allocated)

	batch.Deallocate(mustLine(t, "o2", sku, 2))
	if got := batch.AvailableQty(); got != 18 {
		t.Fatalf("deallocating a line that is not there changed stock: available = %d", got)
	}
	batch.Deallocate(allocated)
	if got := batch.AvailableQty(); got != 20 || batch.Has(allocated) {
		t.Fatalf("available = %d, has line %v; want 20, false", got, batch.Has(allocated))
	}
}

func TestLinesAreKeptInAllocationOrderAndCannotBeChangedFromOutside(t *testing.T) {
	t.Parallel()
	sku := uniqueName("STACKED-CHAIR")
	batch := mustBatch(t, "b", sku, 10, time.Time{})
	want := []domain.OrderLine{mustLine(t, "o3", sku, 1), mustLine(t, "o1", sku, 2), mustLine(t, "o2", sku, 3)}
	for _, l := range want {
		batch.Allocate(l)
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

func TestETAIgnoresTheTimeOfDay(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		eta  time.Time
		want time.Time
	}{
		{"afternoon", today.Add(15*time.Hour + 3*time.Minute), today},
		{"last nanosecond", today.Add(24*time.Hour - 1), today},
		{"midnight", today, today},
		{"the date as written in its own zone", time.Date(2026, 11, 22, 23, 30, 0, 0, time.FixedZone("EST", -5*3600)), today},
		{"in the warehouse", time.Time{}, time.Time{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			batch := mustBatch(t, "b", uniqueName("CLOCK"), 1, c.eta)
			if !batch.ETA().Equal(c.want) || batch.InStock() != c.want.IsZero() {
				t.Fatalf("ETA = %v (in stock %v), want %v", batch.ETA(), batch.InStock(), c.want)
			}
		})
	}
}

func TestConstructorsRefuseBadValuesNamingTheField(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", domain.MaxReferenceLength+1)
	cases := []struct {
		name  string
		field string
		err   error
	}{
		{"line with empty order id", "orderid", errOf(domain.NewOrderLine("", "SKU", 1))},
		{"line with empty sku", "sku", errOf(domain.NewOrderLine("o", "", 1))},
		{"line with zero qty", "qty", errOf(domain.NewOrderLine("o", "SKU", 0))},
		{"line with negative qty", "qty", errOf(domain.NewOrderLine("o", "SKU", -1))},
		{"line with qty above the maximum", "qty", errOf(domain.NewOrderLine("o", "SKU", domain.MaxQuantity+1))},
		{"line with too long order id", "orderid", errOf(domain.NewOrderLine(long, "SKU", 1))},
		{"line with too long sku", "sku", errOf(domain.NewOrderLine("o", long, 1))},
		{"batch with empty ref", "ref", errOf(domain.NewBatch("", "SKU", 1, today))},
		{"batch with empty sku", "sku", errOf(domain.NewBatch("b", "", 1, today))},
		{"batch with negative qty", "qty", errOf(domain.NewBatch("b", "SKU", -1, today))},
		{"batch with qty above the maximum", "qty", errOf(domain.NewBatch("b", "SKU", domain.MaxQuantity+1, today))},
		{"batch with too long ref", "ref", errOf(domain.NewBatch(long, "SKU", 1, today))},
		{"batch with too long sku", "sku", errOf(domain.NewBatch("b", long, 1, today))},
		{"product with empty sku", "sku", errOf(domain.NewProduct(""))},
		{"product with too long sku", "sku", errOf(domain.NewProduct(long))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var v *domain.ValidationError
			if !errors.As(c.err, &v) || v.Field != c.field || !errors.Is(c.err, domain.ErrInvalid) {
				t.Fatalf("got %v, want a ValidationError on %s wrapping ErrInvalid", c.err, c.field)
			}
			if !strings.Contains(c.err.Error(), c.field) {
				t.Fatalf("message %q does not name %s", c.err, c.field)
			}
		})
	}
}

func TestConstructorsAcceptValuesAtTheLimits(t *testing.T) {
	t.Parallel()
	longest := strings.Repeat("x", domain.MaxReferenceLength)
	cases := []struct {
		name string
		err  error
	}{
		{"line of one", errOf(domain.NewOrderLine("o", "SKU", 1))},
		{"line of the maximum", errOf(domain.NewOrderLine("o", "SKU", domain.MaxQuantity))},
		{"line with the longest references", errOf(domain.NewOrderLine(longest, longest, 1))},
		{"batch of zero, announced before its size is known", errOf(domain.NewBatch("b", "SKU", 0, today))},
		{"batch of the maximum", errOf(domain.NewBatch("b", "SKU", domain.MaxQuantity, today))},
		{"batch with the longest references", errOf(domain.NewBatch(longest, longest, 1, time.Time{}))},
		{"product with the longest sku", errOf(domain.NewProduct(longest))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if c.err != nil {
				t.Fatalf("refused: %v", c.err)
			}
		})
	}
}

// errOf keeps the error of a constructor's two results.
func errOf[T any](_ T, err error) error { return err }
