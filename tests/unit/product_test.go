package unit_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"allocation/domain"
)

// newProduct builds a product of sku from batches, added in the order given,
// and forgets the BatchCreated events that recorded them: tests of what
// follows see only the events of what follows.
func newProduct(t *testing.T, sku string, batches ...*domain.Batch) *domain.Product {
	t.Helper()
	p, err := domain.NewProduct(sku)
	if err != nil {
		t.Fatalf("NewProduct(%s): %v", sku, err)
	}
	for _, b := range batches {
		if err := p.AddBatch(b); err != nil {
			t.Fatalf("AddBatch(%s): %v", b.Ref(), err)
		}
	}
	p.PullEvents()
	return p
}

func TestAddingABatchRecordsBatchCreatedOnce(t *testing.T) {
	t.Parallel()
	sku := uniqueName("NEW-SHELF")
	product := newProduct(t, sku)
	batch := mustBatch(t, "b1", sku, 20, tomorrow)

	for range 2 { // the second time is a retried request: a no-op
		if err := product.AddBatch(mustBatch(t, "b1", sku, 20, tomorrow)); err != nil {
			t.Fatal(err)
		}
	}

	want := []domain.Event{domain.BatchCreated{Ref: "b1", SKU: sku, Qty: 20, ETA: batch.ETA()}}
	if got := product.Events(); !reflect.DeepEqual(got, want) {
		t.Fatalf("events = %v, want %v", got, want)
	}
}

func mustAllocate(t *testing.T, p *domain.Product, l domain.OrderLine) string {
	t.Helper()
	ref, err := p.Allocate(l)
	if err != nil {
		t.Fatalf("Allocate(%v): %v", l, err)
	}
	return ref
}

// available returns the available quantity of each batch, in the order given.
func available(batches ...*domain.Batch) []int {
	out := make([]int, len(batches))
	for i, b := range batches {
		out[i] = b.AvailableQty()
	}
	return out
}

func TestPrefersWarehouseBatchesToShipments(t *testing.T) {
	t.Parallel()
	sku := uniqueName("RETRO-CLOCK")
	inStock := mustBatch(t, "in-stock-batch", sku, 100, time.Time{})
	shipment := mustBatch(t, "shipment-batch", sku, 100, tomorrow)
	// The shipment comes first, so that insertion order cannot pass for the rule.
	product := newProduct(t, sku, shipment, inStock)

	mustAllocate(t, product, mustLine(t, "oref", sku, 10))

	if got := available(inStock, shipment); !reflect.DeepEqual(got, []int{90, 100}) {
		t.Fatalf("available in stock, shipment = %v, want [90 100]", got)
	}
}

func TestPrefersEarlierBatches(t *testing.T) {
	t.Parallel()
	sku := uniqueName("MINIMALIST-SPOON")
	earliest := mustBatch(t, "speedy-batch", sku, 100, today)
	medium := mustBatch(t, "normal-batch", sku, 100, tomorrow)
	latest := mustBatch(t, "slow-batch", sku, 100, later)
	product := newProduct(t, sku, medium, earliest, latest)

	mustAllocate(t, product, mustLine(t, "order1", sku, 10))

	if got := available(earliest, medium, latest); !reflect.DeepEqual(got, []int{90, 100, 100}) {
		t.Fatalf("available earliest, medium, latest = %v, want [90 100 100]", got)
	}
}

func TestReturnsAllocatedBatchRef(t *testing.T) {
	t.Parallel()
	sku := uniqueName("HIGHBROW-POSTER")
	inStock := mustBatch(t, "in-stock-batch-ref", sku, 100, time.Time{})
	shipment := mustBatch(t, "shipment-batch-ref", sku, 100, tomorrow)
	product := newProduct(t, sku, inStock, shipment)

	if ref := mustAllocate(t, product, mustLine(t, "oref", sku, 10)); ref != inStock.Ref() {
		t.Fatalf("allocated to %q, want %q", ref, inStock.Ref())
	}
}

func TestOutputsAllocatedEvent(t *testing.T) {
	t.Parallel()
	sku := uniqueName("RETRO-LAMPSHADE")
	batch := mustBatch(t, "batchref", sku, 100, time.Time{})
	product := newProduct(t, sku, batch)

	mustAllocate(t, product, mustLine(t, "oref", sku, 10))

	want := []domain.Event{domain.Allocated{OrderID: "oref", SKU: sku, Qty: 10, BatchRef: batch.Ref()}}
	if got := product.Events(); !reflect.DeepEqual(got, want) {
		t.Fatalf("events = %v, want %v", got, want)
	}
}

func TestRecordsOutOfStockEventIfCannotAllocate(t *testing.T) {
	t.Parallel()
	sku := uniqueName("SMALL-FORK")
	batch := mustBatch(t, "batch1", sku, 10, today)
	product := newProduct(t, sku, batch)
	mustAllocate(t, product, mustLine(t, "order1", sku, 10))

	ref := mustAllocate(t, product, mustLine(t, "order2", sku, 1))

	if ref != "" {
		t.Fatalf("allocated to %q, want no batch", ref)
	}
	events := product.Events()
	if last := events[len(events)-1]; last != (domain.OutOfStock{SKU: sku}) {
		t.Fatalf("last event %v, want OutOfStock{%s}", last, sku)
	}
}

func TestIncrementsVersionNumber(t *testing.T) {
	t.Parallel()
	sku := uniqueName("SCANDI-PEN")
	product := domain.RestoreProduct(sku, 7, []*domain.Batch{mustBatch(t, "b1", sku, 100, time.Time{})})

	mustAllocate(t, product, mustLine(t, "oref", sku, 10))

	if product.Version() != 8 {
		t.Fatalf("version = %d, want 8", product.Version())
	}
}

func TestOutOfStockWhenNoBatchCanTakeTheWholeLine(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		batches []int // quantities; a line is never split across batches
		line    int
	}{
		{"no batches at all", nil, 1},
		{"every batch too small", []int{5, 5, 5}, 8},
		{"one unit short", []int{7}, 8},
		{"empty batches", []int{0, 0}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			sku := uniqueName("SCARCE-STOOL")
			var batches []*domain.Batch
			for i, qty := range c.batches {
				batches = append(batches, mustBatch(t, "b"+string(rune('a'+i)), sku, qty, today.AddDate(0, 0, i)))
			}
			product := newProduct(t, sku, batches...)
			before, version := available(batches...), product.Version()

			ref := mustAllocate(t, product, mustLine(t, "o1", sku, c.line))

			if ref != "" {
				t.Fatalf("allocated to %q, want no batch", ref)
			}
			if got := product.Events(); !reflect.DeepEqual(got, []domain.Event{domain.OutOfStock{SKU: sku}}) {
				t.Fatalf("events = %v, want only OutOfStock", got)
			}
			if got := available(batches...); !reflect.DeepEqual(got, before) || product.Version() != version {
				t.Fatalf("stock %v (was %v), version %d (was %d): an out-of-stock line changed something", got, before, product.Version(), version)
			}
		})
	}
}

func TestAllocatingAnAllocatedLineReturnsItsBatchAndChangesNothing(t *testing.T) {
	t.Parallel()
	sku := uniqueName("DUP-DESK")
	early := mustBatch(t, "early", sku, 10, today)
	late := mustBatch(t, "late", sku, 10, tomorrow)
	product := newProduct(t, sku, early, late)
	line := mustLine(t, "o1", sku, 6)
	mustAllocate(t, product, line)
	product.PullEvents()
	version := product.Version()

	// The line no longer fits the early batch, but it is already there: it
	// must neither move nor be allocated a second time to the late batch.
	ref := mustAllocate(t, product, line)

	if ref != "early" {
		t.Fatalf("allocated to %q, want early", ref)
	}
	if got := product.Events(); len(got) != 0 {
		t.Fatalf("recorded %v, want nothing", got)
	}
	if got := available(early, late); !reflect.DeepEqual(got, []int{4, 10}) || product.Version() != version {
		t.Fatalf("available %v, version %d; want [4 10], %d", got, product.Version(), version)
	}
}

func TestAllocateRefusesALineOfAnotherSKU(t *testing.T) {
	t.Parallel()
	sku, other := uniqueName("CHAIR"), uniqueName("TABLE")
	product := newProduct(t, sku, mustBatch(t, "b", sku, 10, today))

	_, err := product.Allocate(mustLine(t, "o", other, 1))

	if !errors.Is(err, domain.ErrInvalidSKU) || err.Error() != "Invalid sku "+other {
		t.Fatalf("got %v, want Invalid sku %s", err, other)
	}
	if len(product.Events()) != 0 {
		t.Fatalf("recorded %v for a refused line", product.Events())
	}
}

func TestAllocateRefusesLinesTheConstructorWouldRefuse(t *testing.T) {
	t.Parallel()
	sku := uniqueName("GUARDED-DESK")
	cases := []struct {
		name string
		line domain.OrderLine
	}{
		{"zero qty", domain.OrderLine{OrderID: "o", SKU: sku, Qty: 0}},
		{"negative qty", domain.OrderLine{OrderID: "o", SKU: sku, Qty: -5}},
		{"qty above the maximum", domain.OrderLine{OrderID: "o", SKU: sku, Qty: domain.MaxQuantity + 1}},
		{"empty order id", domain.OrderLine{SKU: sku, Qty: 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			batch := mustBatch(t, "b", sku, 10, today)
			product := newProduct(t, sku, batch)

			ref, err := product.Allocate(c.line)

			if !errors.Is(err, domain.ErrInvalid) || ref != "" {
				t.Fatalf("got %q, %v; want ErrInvalid", ref, err)
			}
			if batch.AvailableQty() != 10 || len(product.Events()) != 0 {
				t.Fatalf("available %d, events %v: a bad line changed the product", batch.AvailableQty(), product.Events())
			}
		})
	}
}

func TestBatchesWithEqualETAKeepTheOrderTheyWereAddedIn(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name          string
		first, second time.Time
	}{
		{"both in the warehouse", time.Time{}, time.Time{}},
		{"same date", today, today},
		{"same date, the first later in the day", today.Add(23 * time.Hour), today.Add(time.Hour)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			sku := uniqueName("TWIN-LAMP")
			first := mustBatch(t, "first", sku, 10, c.first)
			second := mustBatch(t, "second", sku, 10, c.second)
			third := mustBatch(t, "third", sku, 10, c.second)
			product := newProduct(t, sku, first, second, third)

			var got []string
			for _, o := range []string{"o1", "o2", "o3"} {
				got = append(got, mustAllocate(t, product, mustLine(t, o, sku, 10)))
			}

			if want := []string{"first", "second", "third"}; !reflect.DeepEqual(got, want) {
				t.Fatalf("allocated to %v, want %v", got, want)
			}
		})
	}
}

// Enough batches that a sort which is not stable would reorder them (small
// slices are insertion-sorted, which hides the difference).
func TestManyBatchesWithEqualETAKeepTheOrderTheyWereAddedIn(t *testing.T) {
	t.Parallel()
	for _, eta := range []time.Time{{}, today} {
		sku := uniqueName("CROWDED-SHELF")
		product := newProduct(t, sku, mustBatch(t, "late", sku, 100, later))
		var want []string
		for i := range 40 {
			ref := fmt.Sprintf("b%02d", i)
			arrives := eta
			if !eta.IsZero() {
				arrives = eta.Add(time.Duration(i) * time.Minute) // same day
			}
			if err := product.AddBatch(mustBatch(t, ref, sku, 1, arrives)); err != nil {
				t.Fatal(err)
			}
			want = append(want, ref)
		}

		var got []string
		for i := range 40 {
			got = append(got, mustAllocate(t, product, mustLine(t, fmt.Sprintf("o%02d", i), sku, 1)))
		}

		if !reflect.DeepEqual(got, want) {
			t.Fatalf("eta %v: allocated to %v, want %v", eta, got, want)
		}
	}
}

func TestPullEventsHandsOverTheEventsOnce(t *testing.T) {
	t.Parallel()
	sku := uniqueName("HANDOVER-VASE")
	product := newProduct(t, sku, mustBatch(t, "b", sku, 10, today))
	mustAllocate(t, product, mustLine(t, "o1", sku, 1))

	if got := product.PullEvents(); len(got) != 1 {
		t.Fatalf("pulled %v, want one Allocated", got)
	}
	if got := product.PullEvents(); len(got) != 0 {
		t.Fatalf("pulled %v a second time", got)
	}
}

func TestChangeBatchQuantityDeallocatesTheMostRecentLinesUntilTheBatchFits(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name        string
		qty         int
		deallocated []string // order ids, in the order they give way
		available   int
	}{
		{"down to what is allocated: nothing moves", 30, nil, 0},
		{"one short: the newest line goes", 29, []string{"o3"}, 9},
		{"half: the two newest go", 15, []string{"o3", "o2"}, 5},
		{"to zero: every line goes", 0, []string{"o3", "o2", "o1"}, 0},
		{"up: nothing moves", 50, nil, 20},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			sku := uniqueName("SOFA")
			batch := mustBatch(t, "b1", sku, 35, time.Time{})
			product := newProduct(t, sku, batch)
			for _, o := range []string{"o1", "o2", "o3"} {
				mustAllocate(t, product, mustLine(t, o, sku, 10))
			}
			product.PullEvents()
			version := product.Version()

			if err := product.ChangeBatchQuantity("b1", c.qty); err != nil {
				t.Fatal(err)
			}

			want := []domain.Event{domain.BatchQuantityChanged{Ref: "b1", SKU: sku, OldQty: 35, Qty: c.qty}}
			for _, o := range c.deallocated {
				want = append(want, domain.Deallocated{OrderID: o, SKU: sku, Qty: 10, BatchRef: "b1"})
			}
			if got := product.Events(); !reflect.DeepEqual(got, want) {
				t.Fatalf("events = %v, want %v", got, want)
			}
			if batch.PurchasedQty() != c.qty || batch.AvailableQty() != c.available || product.Version() != version+1 {
				t.Fatalf("purchased %d, available %d, version %d; want %d, %d, %d",
					batch.PurchasedQty(), batch.AvailableQty(), product.Version(), c.qty, c.available, version+1)
			}
			for _, ev := range want[1:] {
				d := ev.(domain.Deallocated)
				if batch.Has(domain.OrderLine{OrderID: d.OrderID, SKU: d.SKU, Qty: d.Qty}) {
					t.Fatalf("%s is still in the batch", d.OrderID)
				}
			}
		})
	}
}

func TestChangeBatchQuantityDeallocatesTheNewestLineOfARestoredBatch(t *testing.T) {
	t.Parallel()
	sku := uniqueName("RESTORED-BED")
	// Storage hands lines back oldest first.
	lines := []domain.OrderLine{mustLine(t, "old", sku, 5), mustLine(t, "new", sku, 5)}
	product := domain.RestoreProduct(sku, 3, []*domain.Batch{domain.RestoreBatch("b1", sku, 10, 10, time.Time{}, lines)})

	if err := product.ChangeBatchQuantity("b1", 7); err != nil {
		t.Fatal(err)
	}

	want := []domain.Event{
		domain.BatchQuantityChanged{Ref: "b1", SKU: sku, OldQty: 10, Qty: 7},
		domain.Deallocated{OrderID: "new", SKU: sku, Qty: 5, BatchRef: "b1"},
	}
	if got := product.Events(); !reflect.DeepEqual(got, want) || product.Version() != 4 {
		t.Fatalf("events %v, version %d; want %v, 4", got, product.Version(), want)
	}
}

func TestADeallocatedLineCanBeAllocatedAgainElsewhere(t *testing.T) {
	t.Parallel()
	sku := uniqueName("MOVING-BOX")
	first := mustBatch(t, "first", sku, 10, time.Time{})
	second := mustBatch(t, "second", sku, 10, tomorrow)
	product := newProduct(t, sku, first, second)
	line := mustLine(t, "o1", sku, 8)
	mustAllocate(t, product, line)
	if err := product.ChangeBatchQuantity("first", 5); err != nil {
		t.Fatal(err)
	}
	product.PullEvents()

	if ref := mustAllocate(t, product, line); ref != "second" {
		t.Fatalf("reallocated to %q, want second", ref)
	}
	want := []domain.Event{domain.Allocated{OrderID: "o1", SKU: sku, Qty: 8, BatchRef: "second"}}
	if got := product.Events(); !reflect.DeepEqual(got, want) {
		t.Fatalf("events = %v, want %v", got, want)
	}
}

func TestChangeBatchQuantityToTheSameQuantityChangesNothing(t *testing.T) {
	t.Parallel()
	sku := uniqueName("STEADY-TABLE")
	product := newProduct(t, sku, mustBatch(t, "b1", sku, 10, today))
	version := product.Version()

	if err := product.ChangeBatchQuantity("b1", 10); err != nil {
		t.Fatal(err)
	}
	if product.Version() != version || len(product.Events()) != 0 {
		t.Fatalf("version %d (was %d), events %v", product.Version(), version, product.Events())
	}
}

func TestChangeBatchQuantityRefusesUnknownBatchesAndBadQuantities(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		ref  string
		qty  int
		want error
	}{
		{"unknown batch", "nope", 5, domain.ErrUnknownBatch},
		{"negative qty", "b1", -1, domain.ErrInvalid},
		{"qty above the maximum", "b1", domain.MaxQuantity + 1, domain.ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			sku := uniqueName("LAMP")
			batch := mustBatch(t, "b1", sku, 10, today)
			product := newProduct(t, sku, batch)
			mustAllocate(t, product, mustLine(t, "o1", sku, 4))
			product.PullEvents()
			version := product.Version()

			err := product.ChangeBatchQuantity(c.ref, c.qty)

			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if batch.PurchasedQty() != 10 || batch.AvailableQty() != 6 || product.Version() != version || len(product.Events()) != 0 {
				t.Fatalf("a refused change changed the product: purchased %d, available %d, version %d, events %v",
					batch.PurchasedQty(), batch.AvailableQty(), product.Version(), product.Events())
			}
		})
	}
}

func TestChangeBatchQuantityErrorNamesTheUnknownBatch(t *testing.T) {
	t.Parallel()
	sku := uniqueName("LAMP")
	product := newProduct(t, sku)
	err := product.ChangeBatchQuantity("ghost-batch", 1)
	if !errors.Is(err, domain.ErrUnknownBatch) || !strings.Contains(err.Error(), "ghost-batch") {
		t.Fatalf("got %v, want ErrUnknownBatch naming ghost-batch", err)
	}
	var v *domain.ValidationError
	if err := product.ChangeBatchQuantity("ghost-batch", -1); !errors.As(err, &v) || v.Field != "qty" {
		t.Fatalf("negative qty: got %v, want a ValidationError on qty", err)
	}
}

func TestAddBatchWithTheSameRefAndValuesIsANoOp(t *testing.T) {
	t.Parallel()
	sku := uniqueName("RUG")
	product := newProduct(t, sku, mustBatch(t, "b1", sku, 10, today))
	mustAllocate(t, product, mustLine(t, "o1", sku, 3))
	version := product.Version()

	// An ETA is a date: the same day at another hour is the same batch.
	for _, again := range []*domain.Batch{mustBatch(t, "b1", sku, 10, today), mustBatch(t, "b1", sku, 10, today.Add(9*time.Hour))} {
		if err := product.AddBatch(again); err != nil {
			t.Fatalf("adding the same batch again: %v", err)
		}
	}
	if len(product.Batches()) != 1 || product.Version() != version || product.Batch("b1").AvailableQty() != 7 {
		t.Fatalf("batches %d, version %d (was %d), available %d: the repeat changed something",
			len(product.Batches()), product.Version(), version, product.Batch("b1").AvailableQty())
	}
}

func TestAddBatchWithTheSameRefAndOtherValuesFails(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		qty  int
		eta  time.Time
	}{
		{"other quantity", 11, today},
		{"other ETA", 10, tomorrow},
		{"in the warehouse instead", 10, time.Time{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			sku := uniqueName("RUG")
			product := newProduct(t, sku, mustBatch(t, "b1", sku, 10, today))
			version := product.Version()

			err := product.AddBatch(mustBatch(t, "b1", sku, c.qty, c.eta))

			if !errors.Is(err, domain.ErrBatchExists) || !strings.Contains(err.Error(), "b1") {
				t.Fatalf("got %v, want ErrBatchExists naming b1", err)
			}
			b := product.Batch("b1")
			if len(product.Batches()) != 1 || product.Version() != version || b.PurchasedQty() != 10 || !b.ETA().Equal(today) {
				t.Fatalf("the refused batch changed the product: batches %d, version %d, purchased %d, eta %v",
					len(product.Batches()), product.Version(), b.PurchasedQty(), b.ETA())
			}
		})
	}
}

func TestAddBatchRefusesABatchOfAnotherSKU(t *testing.T) {
	t.Parallel()
	sku, other := uniqueName("RUG"), uniqueName("MAT")
	product := newProduct(t, sku)

	err := product.AddBatch(mustBatch(t, "b2", other, 10, today))

	var v *domain.ValidationError
	if !errors.As(err, &v) || v.Field != "sku" || !errors.Is(err, domain.ErrInvalid) {
		t.Fatalf("got %v, want a ValidationError on sku", err)
	}
	if len(product.Batches()) != 0 || product.Version() != 0 {
		t.Fatalf("batches %d, version %d; want 0, 0", len(product.Batches()), product.Version())
	}
}

func TestAddBatchAddsStockAndBumpsTheVersion(t *testing.T) {
	t.Parallel()
	sku := uniqueName("RUG")
	product := newProduct(t, sku)

	if err := product.AddBatch(mustBatch(t, "b1", sku, 10, today)); err != nil {
		t.Fatal(err)
	}
	if err := product.AddBatch(mustBatch(t, "b2", sku, 5, time.Time{})); err != nil {
		t.Fatal(err)
	}

	if len(product.Batches()) != 2 || product.Batch("b2").AvailableQty() != 5 || product.Version() != 2 {
		t.Fatalf("batches %d, version %d; want 2, 2", len(product.Batches()), product.Version())
	}
	if product.Batch("nope") != nil {
		t.Fatal("Batch returned a batch for an unknown ref")
	}
}
