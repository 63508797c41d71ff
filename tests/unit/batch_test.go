package unit_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"allocation/domain"
)

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

func TestAllocatingToABatchReducesTheAvailableQuantity(t *testing.T) {
	batch := mustBatch(t, "batch-001", "SMALL-TABLE", 20, today)
	batch.Allocate(mustLine(t, "order-ref", "SMALL-TABLE", 2))
	if got := batch.AvailableQty(); got != 18 {
		t.Fatalf("available = %d, want 18", got)
	}
}

func TestCanAllocate(t *testing.T) {
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
			batch := mustBatch(t, "batch-001", "ELEGANT-LAMP", c.batchQty, today)
			if got := batch.CanAllocate(mustLine(t, "order-123", "ELEGANT-LAMP", c.lineQty)); got != c.want {
				t.Fatalf("CanAllocate = %v, want %v", got, c.want)
			}
		})
	}
}

func TestCannotAllocateIfSKUsDoNotMatch(t *testing.T) {
	batch := mustBatch(t, "batch-001", "UNCOMFORTABLE-CHAIR", 100, time.Time{})
	if batch.CanAllocate(mustLine(t, "order-123", "EXPENSIVE-TOASTER", 10)) {
		t.Fatal("allocated a line of another SKU")
	}
}

func TestBatchAllocationIsIdempotent(t *testing.T) {
	batch := mustBatch(t, "batch-001", "ANGULAR-DESK", 20, today)
	line := mustLine(t, "order-123", "ANGULAR-DESK", 2)
	batch.Allocate(line)
	batch.Allocate(line)
	if got := batch.AvailableQty(); got != 18 {
		t.Fatalf("available = %d, want 18", got)
	}
}

func TestDeallocateRemovesOnlyAllocatedLines(t *testing.T) {
	batch := mustBatch(t, "batch-001", "DECORATIVE-TRINKET", 20, today)
	allocated := mustLine(t, "o1", "DECORATIVE-TRINKET", 2)
	batch.Allocate(allocated)
	batch.Deallocate(mustLine(t, "o2", "DECORATIVE-TRINKET", 2))
	if got := batch.AvailableQty(); got != 18 {
		t.Fatalf("deallocating an unallocated line changed stock: available = %d", got)
	}
	batch.Deallocate(allocated)
	if got := batch.AvailableQty(); got != 20 {
		t.Fatalf("available = %d, want 20", got)
	}
}

func TestETAIsADate(t *testing.T) {
	batch := mustBatch(t, "b", "CLOCK", 1, today.Add(15*time.Hour+3*time.Minute))
	if !batch.ETA().Equal(today) {
		t.Fatalf("ETA = %v, want %v", batch.ETA(), today)
	}
}

func TestConstructorsRefuseBadValues(t *testing.T) {
	long := strings.Repeat("x", domain.MaxReferenceLength+1)
	cases := []struct {
		name  string
		field string
		err   error
	}{
		{"line with empty order id", "orderid", second(domain.NewOrderLine("", "SKU", 1))},
		{"line with empty sku", "sku", second(domain.NewOrderLine("o", "", 1))},
		{"line with zero qty", "qty", second(domain.NewOrderLine("o", "SKU", 0))},
		{"line with negative qty", "qty", second(domain.NewOrderLine("o", "SKU", -1))},
		{"line with huge qty", "qty", second(domain.NewOrderLine("o", "SKU", domain.MaxQuantity+1))},
		{"line with too long order id", "orderid", second(domain.NewOrderLine(long, "SKU", 1))},
		{"batch with empty ref", "ref", second(domain.NewBatch("", "SKU", 1, today))},
		{"batch with empty sku", "sku", second(domain.NewBatch("b", "", 1, today))},
		{"batch with negative qty", "qty", second(domain.NewBatch("b", "SKU", -1, today))},
		{"batch with huge qty", "qty", second(domain.NewBatch("b", "SKU", domain.MaxQuantity+1, today))},
		{"batch with too long sku", "sku", second(domain.NewBatch("b", long, 1, today))},
		{"product with empty sku", "sku", second(domain.NewProduct(""))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var v *domain.ValidationError
			if !errors.As(c.err, &v) || v.Field != c.field || !errors.Is(c.err, domain.ErrInvalid) {
				t.Fatalf("got %v, want a ValidationError on %s", c.err, c.field)
			}
		})
	}
}

func TestABatchOfZeroIsAllowed(t *testing.T) {
	if _, err := domain.NewBatch("b", "SKU", 0, today); err != nil {
		t.Fatalf("a batch announced with no stock yet was refused: %v", err)
	}
}

func second[T any](_ T, err error) error { return err }
