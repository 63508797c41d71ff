package unit_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"allocation/domain"
)

func TestPrefersWarehouseBatchesToShipments(t *testing.T) {
	inStock := mustBatch(t, "in-stock-batch", "RETRO-CLOCK", 100, time.Time{})
	shipment := mustBatch(t, "shipment-batch", "RETRO-CLOCK", 100, tomorrow)
	product := domain.RestoreProduct("RETRO-CLOCK", 0, []*domain.Batch{shipment, inStock})

	if _, err := product.Allocate(mustLine(t, "oref", "RETRO-CLOCK", 10)); err != nil {
		t.Fatal(err)
	}
	if inStock.AvailableQty() != 90 || shipment.AvailableQty() != 100 {
		t.Fatalf("in stock %d, shipment %d; want 90, 100", inStock.AvailableQty(), shipment.AvailableQty())
	}
}

func TestPrefersEarlierBatches(t *testing.T) {
	earliest := mustBatch(t, "speedy-batch", "MINIMALIST-SPOON", 100, today)
	medium := mustBatch(t, "normal-batch", "MINIMALIST-SPOON", 100, tomorrow)
	latest := mustBatch(t, "slow-batch", "MINIMALIST-SPOON", 100, later)
	product := domain.RestoreProduct("MINIMALIST-SPOON", 0, []*domain.Batch{medium, earliest, latest})

	if _, err := product.Allocate(mustLine(t, "order1", "MINIMALIST-SPOON", 10)); err != nil {
		t.Fatal(err)
	}
	if earliest.AvailableQty() != 90 || medium.AvailableQty() != 100 || latest.AvailableQty() != 100 {
		t.Fatalf("available: earliest %d, medium %d, latest %d", earliest.AvailableQty(), medium.AvailableQty(), latest.AvailableQty())
	}
}

func TestBatchesArrivingTogetherKeepTheOrderTheyWereAddedIn(t *testing.T) {
	first := mustBatch(t, "first", "TWIN-LAMP", 100, today)
	second := mustBatch(t, "second", "TWIN-LAMP", 100, today)
	product := domain.RestoreProduct("TWIN-LAMP", 0, []*domain.Batch{first, second})
	ref, _ := product.Allocate(mustLine(t, "o", "TWIN-LAMP", 1))
	if ref != "first" {
		t.Fatalf("allocated to %s, want first", ref)
	}
}

func TestReturnsAllocatedBatchRef(t *testing.T) {
	inStock := mustBatch(t, "in-stock-batch-ref", "HIGHBROW-POSTER", 100, time.Time{})
	shipment := mustBatch(t, "shipment-batch-ref", "HIGHBROW-POSTER", 100, tomorrow)
	product := domain.RestoreProduct("HIGHBROW-POSTER", 0, []*domain.Batch{inStock, shipment})
	ref, err := product.Allocate(mustLine(t, "oref", "HIGHBROW-POSTER", 10))
	if err != nil || ref != "in-stock-batch-ref" {
		t.Fatalf("got %q, %v; want in-stock-batch-ref", ref, err)
	}
}

func TestOutputsAllocatedEvent(t *testing.T) {
	batch := mustBatch(t, "batchref", "RETRO-LAMPSHADE", 100, time.Time{})
	product := domain.RestoreProduct("RETRO-LAMPSHADE", 0, []*domain.Batch{batch})
	_, _ = product.Allocate(mustLine(t, "oref", "RETRO-LAMPSHADE", 10))
	want := domain.Allocated{OrderID: "oref", SKU: "RETRO-LAMPSHADE", Qty: 10, BatchRef: "batchref"}
	if events := product.Events(); len(events) == 0 || events[len(events)-1] != want {
		t.Fatalf("events = %v, want last %v", events, want)
	}
}

func TestRecordsOutOfStockEventIfCannotAllocate(t *testing.T) {
	batch := mustBatch(t, "batch1", "SMALL-FORK", 10, today)
	product := domain.RestoreProduct("SMALL-FORK", 0, []*domain.Batch{batch})
	_, _ = product.Allocate(mustLine(t, "order1", "SMALL-FORK", 10))

	ref, err := product.Allocate(mustLine(t, "order2", "SMALL-FORK", 1))
	if err != nil || ref != "" {
		t.Fatalf("got %q, %v; want no batch and no error", ref, err)
	}
	events := product.Events()
	if events[len(events)-1] != (domain.OutOfStock{SKU: "SMALL-FORK"}) {
		t.Fatalf("last event %v, want OutOfStock", events[len(events)-1])
	}
}

func TestIncrementsVersionNumber(t *testing.T) {
	product := domain.RestoreProduct("SCANDI-PEN", 7, []*domain.Batch{mustBatch(t, "b1", "SCANDI-PEN", 100, time.Time{})})
	_, _ = product.Allocate(mustLine(t, "oref", "SCANDI-PEN", 10))
	if product.Version() != 8 {
		t.Fatalf("version = %d, want 8", product.Version())
	}
}

func TestAllocatingAnAllocatedLineIsANoOp(t *testing.T) {
	early := mustBatch(t, "early", "DUP-DESK", 10, today)
	late := mustBatch(t, "late", "DUP-DESK", 10, tomorrow)
	product := domain.RestoreProduct("DUP-DESK", 0, []*domain.Batch{early, late})
	line := mustLine(t, "o1", "DUP-DESK", 6)
	_, _ = product.Allocate(line)
	product.PullEvents()

	// The line no longer fits the early batch, but it is already there.
	ref, err := product.Allocate(line)
	if err != nil || ref != "early" {
		t.Fatalf("got %q, %v; want early", ref, err)
	}
	if len(product.Events()) != 0 || product.Version() != 1 || early.AvailableQty() != 4 || late.AvailableQty() != 10 {
		t.Fatalf("re-allocation changed something: events %v, version %d, early %d, late %d",
			product.Events(), product.Version(), early.AvailableQty(), late.AvailableQty())
	}
}

func TestAllocateRefusesALineOfAnotherSKU(t *testing.T) {
	product := domain.RestoreProduct("CHAIR", 0, []*domain.Batch{mustBatch(t, "b", "CHAIR", 10, today)})
	_, err := product.Allocate(mustLine(t, "o", "TABLE", 1))
	if !errors.Is(err, domain.ErrInvalidSKU) {
		t.Fatalf("got %v, want ErrInvalidSKU", err)
	}
}

func TestChangeBatchQuantityDeallocatesNewestLinesFirst(t *testing.T) {
	batch := mustBatch(t, "b1", "SOFA", 30, time.Time{})
	product := domain.RestoreProduct("SOFA", 0, []*domain.Batch{batch})
	for _, o := range []string{"o1", "o2", "o3"} {
		_, _ = product.Allocate(mustLine(t, o, "SOFA", 10))
	}
	product.PullEvents()

	if err := product.ChangeBatchQuantity("b1", 15); err != nil {
		t.Fatal(err)
	}
	want := []domain.Event{
		domain.Deallocated{OrderID: "o3", SKU: "SOFA", Qty: 10},
		domain.Deallocated{OrderID: "o2", SKU: "SOFA", Qty: 10},
	}
	if got := product.Events(); !reflect.DeepEqual(got, want) {
		t.Fatalf("events = %v, want %v", got, want)
	}
	if batch.AvailableQty() != 5 || batch.PurchasedQty() != 15 || product.Version() != 4 {
		t.Fatalf("available %d, purchased %d, version %d", batch.AvailableQty(), batch.PurchasedQty(), product.Version())
	}
}

func TestChangeBatchQuantityRefusesUnknownBatchesAndNegativeQuantities(t *testing.T) {
	product := domain.RestoreProduct("LAMP", 0, []*domain.Batch{mustBatch(t, "b1", "LAMP", 10, today)})
	if err := product.ChangeBatchQuantity("nope", 5); !errors.Is(err, domain.ErrUnknownBatch) {
		t.Fatalf("unknown batch: got %v", err)
	}
	if err := product.ChangeBatchQuantity("b1", -1); !errors.Is(err, domain.ErrInvalid) {
		t.Fatalf("negative qty: got %v", err)
	}
}

func TestAddBatch(t *testing.T) {
	product, _ := domain.NewProduct("RUG")
	if err := product.AddBatch(mustBatch(t, "b1", "RUG", 10, today)); err != nil {
		t.Fatal(err)
	}
	if err := product.AddBatch(mustBatch(t, "b1", "RUG", 10, today)); err != nil {
		t.Fatalf("re-adding the same batch: %v", err)
	}
	if err := product.AddBatch(mustBatch(t, "b1", "RUG", 11, today)); !errors.Is(err, domain.ErrBatchExists) {
		t.Fatalf("same ref, other qty: got %v, want ErrBatchExists", err)
	}
	if err := product.AddBatch(mustBatch(t, "b2", "MAT", 10, today)); !errors.Is(err, domain.ErrInvalid) {
		t.Fatalf("batch of another SKU: got %v", err)
	}
	if len(product.Batches()) != 1 || product.Version() != 1 {
		t.Fatalf("batches %d, version %d; want 1, 1", len(product.Batches()), product.Version())
	}
}
