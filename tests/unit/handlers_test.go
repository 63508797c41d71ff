package unit_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"allocation/domain"
	"allocation/servicelayer"
)

func handle(t *testing.T, app testApp, cmds ...domain.Command) servicelayer.Result {
	t.Helper()
	var res servicelayer.Result
	for _, cmd := range cmds {
		var err error
		if res, err = app.bus.Handle(context.Background(), cmd); err != nil {
			t.Fatalf("%s: %v", cmd.Name(), err)
		}
	}
	return res
}

func refs(p *domain.Product) []string {
	var out []string
	for _, b := range p.Batches() {
		out = append(out, b.Ref())
	}
	return out
}

func TestAddBatchForNewProduct(t *testing.T) {
	app := newTestApp()
	handle(t, app, domain.CreateBatch{Ref: "b1", SKU: "CRUNCHY-ARMCHAIR", Qty: 100})
	if app.store.Product("CRUNCHY-ARMCHAIR") == nil || app.store.Commits() == 0 {
		t.Fatal("product not stored or not committed")
	}
}

func TestAddBatchForExistingProduct(t *testing.T) {
	app := newTestApp()
	handle(t, app,
		domain.CreateBatch{Ref: "b1", SKU: "GARISH-RUG", Qty: 100},
		domain.CreateBatch{Ref: "b2", SKU: "GARISH-RUG", Qty: 99})
	if got := refs(app.store.Product("GARISH-RUG")); !slices.Equal(got, []string{"b1", "b2"}) {
		t.Fatalf("batches = %v", got)
	}
}

func TestAddBatchRefusesARefHeldByAnotherSKU(t *testing.T) {
	app := newTestApp()
	handle(t, app, domain.CreateBatch{Ref: "b1", SKU: "RUG", Qty: 100})
	_, err := app.bus.Handle(context.Background(), domain.CreateBatch{Ref: "b1", SKU: "MAT", Qty: 100})
	if !errors.Is(err, domain.ErrBatchExists) {
		t.Fatalf("got %v, want ErrBatchExists", err)
	}
}

func TestAllocates(t *testing.T) {
	app := newTestApp()
	res := handle(t, app,
		domain.CreateBatch{Ref: "batch1", SKU: "COMPLICATED-LAMP", Qty: 100},
		domain.Allocate{OrderID: "o1", SKU: "COMPLICATED-LAMP", Qty: 10})
	if res.BatchRef != "batch1" {
		t.Fatalf("batch ref = %q", res.BatchRef)
	}
	if got := app.store.Product("COMPLICATED-LAMP").Batch("batch1").AvailableQty(); got != 90 {
		t.Fatalf("available = %d, want 90", got)
	}
}

func TestAllocateErrorsForInvalidSKU(t *testing.T) {
	app := newTestApp()
	handle(t, app, domain.CreateBatch{Ref: "b1", SKU: "AREALSKU", Qty: 100})
	_, err := app.bus.Handle(context.Background(), domain.Allocate{OrderID: "o1", SKU: "NONEXISTENTSKU", Qty: 10})
	if !errors.Is(err, domain.ErrInvalidSKU) || err.Error() != "Invalid sku NONEXISTENTSKU" {
		t.Fatalf("got %v, want Invalid sku NONEXISTENTSKU", err)
	}
}

func TestAllocateCommits(t *testing.T) {
	app := newTestApp()
	handle(t, app, domain.CreateBatch{Ref: "b1", SKU: "OMINOUS-MIRROR", Qty: 100})
	before := app.store.Commits()
	handle(t, app, domain.Allocate{OrderID: "o1", SKU: "OMINOUS-MIRROR", Qty: 10})
	if app.store.Commits() <= before {
		t.Fatal("allocation was not committed")
	}
}

func TestSendsEmailOnOutOfStockError(t *testing.T) {
	app := newTestApp()
	handle(t, app,
		domain.CreateBatch{Ref: "b1", SKU: "POPULAR-CURTAINS", Qty: 9},
		domain.Allocate{OrderID: "o1", SKU: "POPULAR-CURTAINS", Qty: 10})
	if got := app.notifier.sent["stock@made.com"]; !slices.Equal(got, []string{"Out of stock for POPULAR-CURTAINS"}) {
		t.Fatalf("sent = %v", got)
	}
}

func TestChangesAvailableQuantity(t *testing.T) {
	app := newTestApp()
	handle(t, app, domain.CreateBatch{Ref: "batch1", SKU: "ADORABLE-SETTEE", Qty: 100})
	handle(t, app, domain.ChangeBatchQuantity{Ref: "batch1", Qty: 50})
	if got := app.store.Product("ADORABLE-SETTEE").Batch("batch1").AvailableQty(); got != 50 {
		t.Fatalf("available = %d, want 50", got)
	}
}

func TestReallocatesIfNecessary(t *testing.T) {
	app := newTestApp()
	handle(t, app,
		domain.CreateBatch{Ref: "batch1", SKU: "INDIFFERENT-TABLE", Qty: 50},
		domain.CreateBatch{Ref: "batch2", SKU: "INDIFFERENT-TABLE", Qty: 50, ETA: today},
		domain.Allocate{OrderID: "order1", SKU: "INDIFFERENT-TABLE", Qty: 20},
		domain.Allocate{OrderID: "order2", SKU: "INDIFFERENT-TABLE", Qty: 20})
	p := app.store.Product("INDIFFERENT-TABLE")
	if p.Batch("batch1").AvailableQty() != 10 || p.Batch("batch2").AvailableQty() != 50 {
		t.Fatalf("before: %d, %d", p.Batch("batch1").AvailableQty(), p.Batch("batch2").AvailableQty())
	}

	handle(t, app, domain.ChangeBatchQuantity{Ref: "batch1", Qty: 25})

	p = app.store.Product("INDIFFERENT-TABLE")
	// order2 (the newest) gives way: 25 - 20 left in batch1, 20 moved to batch2.
	if p.Batch("batch1").AvailableQty() != 5 || p.Batch("batch2").AvailableQty() != 30 {
		t.Fatalf("after: %d, %d; want 5, 30", p.Batch("batch1").AvailableQty(), p.Batch("batch2").AvailableQty())
	}
	// Every move is announced, the reallocation included, each with its own id.
	sent := app.publisher.sent()
	last := sent[len(sent)-1].Event.(domain.Allocated)
	if len(sent) != 3 || last.OrderID != "order2" || last.BatchRef != "batch2" {
		t.Fatalf("published %v", sent)
	}
	ids := map[string]bool{}
	for _, env := range sent {
		if env.MessageID == "" || ids[env.MessageID] || env.OccurredAt.IsZero() {
			t.Fatalf("envelope without a unique id or time: %+v", env)
		}
		ids[env.MessageID] = true
	}
	// The read model follows.
	view, _ := app.store.Allocations(context.Background(), "order2")
	if len(view) != 1 || view[0].BatchRef != "batch2" {
		t.Fatalf("view of order2 = %v", view)
	}
}

func TestChangeBatchQuantityOfUnknownBatchFails(t *testing.T) {
	app := newTestApp()
	_, err := app.bus.Handle(context.Background(), domain.ChangeBatchQuantity{Ref: "ghost", Qty: 1})
	if !errors.Is(err, domain.ErrUnknownBatch) {
		t.Fatalf("got %v, want ErrUnknownBatch", err)
	}
}

func TestAllocationsViewListsAnOrdersLines(t *testing.T) {
	app := newTestApp()
	handle(t, app,
		domain.CreateBatch{Ref: "sku1batch", SKU: "sku1", Qty: 50},
		domain.CreateBatch{Ref: "sku2batch", SKU: "sku2", Qty: 50, ETA: time.Now()},
		domain.Allocate{OrderID: "order1", SKU: "sku1", Qty: 20},
		domain.Allocate{OrderID: "order1", SKU: "sku2", Qty: 20},
		domain.Allocate{OrderID: "otherorder", SKU: "sku1", Qty: 30})
	view, _ := app.store.Allocations(context.Background(), "order1")
	want := []servicelayer.Allocation{{SKU: "sku1", BatchRef: "sku1batch"}, {SKU: "sku2", BatchRef: "sku2batch"}}
	if !slices.Equal(view, want) {
		t.Fatalf("view = %v, want %v", view, want)
	}
}
