package unit_test

import (
	"errors"
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
