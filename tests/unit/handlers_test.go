package unit_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"testing"

	"allocation/domain"
	"allocation/servicelayer"
)

// handle runs cmds in order through the bus, failing the test on any error,
// and returns the result of the last.
func handle(t *testing.T, app testApp, cmds ...domain.Command) servicelayer.Result {
	t.Helper()
	var res servicelayer.Result
	for _, cmd := range cmds {
		var err error
		if res, err = app.bus.Handle(context.Background(), cmd); err != nil {
			t.Fatalf("%s %+v: %v", cmd.Name(), cmd, err)
		}
	}
	return res
}

// committedProduct returns the product of sku as the store committed it.
func committedProduct(t *testing.T, app testApp, sku string) *domain.Product {
	t.Helper()
	p := app.store.Product(sku)
	if p == nil {
		t.Fatalf("no product %s in the store", sku)
	}
	return p
}

func batchRefs(p *domain.Product) []string {
	var out []string
	for _, b := range p.Batches() {
		out = append(out, b.Ref())
	}
	return out
}

func viewOf(t *testing.T, app testApp, orderID string) []servicelayer.Allocation {
	t.Helper()
	view, err := app.store.Allocations(context.Background(), orderID)
	if err != nil {
		t.Fatalf("allocations of %s: %v", orderID, err)
	}
	return view
}

// allocatedEvents returns the Allocated events published so far.
// allocatedEvents keeps the line_allocated publications of envs, in order;
// every other one must be a line_deallocated.
func allocatedEvents(t *testing.T, envs []servicelayer.Envelope) []domain.Allocated {
	t.Helper()
	var out []domain.Allocated
	for _, env := range envs {
		switch ev := env.Event.(type) {
		case domain.Allocated:
			out = append(out, ev)
		case domain.Deallocated:
		default:
			t.Fatalf("published %T, only Allocated and Deallocated go out", env.Event)
		}
	}
	return out
}

// The book's TestAddBatch.

func TestAddBatchForNewProduct(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	sku := uniqueName("CRUNCHY-ARMCHAIR")

	handle(t, app, domain.CreateBatch{Ref: "b1", SKU: sku, Qty: 100})

	if got := batchRefs(committedProduct(t, app, sku)); !slices.Equal(got, []string{"b1"}) {
		t.Fatalf("batches = %v, want [b1]", got)
	}
	if app.store.Commits() != 1 {
		t.Fatalf("commits = %d, want 1", app.store.Commits())
	}
}

func TestAddBatchForExistingProduct(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	sku := uniqueName("GARISH-RUG")

	handle(t, app,
		domain.CreateBatch{Ref: "b1", SKU: sku, Qty: 100},
		domain.CreateBatch{Ref: "b2", SKU: sku, Qty: 99})

	if got := batchRefs(committedProduct(t, app, sku)); !slices.Equal(got, []string{"b1", "b2"}) {
		t.Fatalf("batches = %v, want [b1 b2]", got)
	}
}

func TestAddBatchTwiceWithTheSameValuesIsANoOp(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	sku := uniqueName("RETRIED-RUG")
	create := domain.CreateBatch{Ref: "b1", SKU: sku, Qty: 100, ETA: today}

	handle(t, app, create, create)

	p := committedProduct(t, app, sku)
	if len(p.Batches()) != 1 || p.Version() != 1 {
		t.Fatalf("batches %v, version %d; want one batch, version 1", batchRefs(p), p.Version())
	}
}

func TestAddBatchWithAnExistingRefAndOtherValuesFails(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		change func(cmd *domain.CreateBatch)
	}{
		{"other SKU", func(cmd *domain.CreateBatch) { cmd.SKU = uniqueName("MAT") }},
		{"other quantity", func(cmd *domain.CreateBatch) { cmd.Qty++ }},
		{"other ETA", func(cmd *domain.CreateBatch) { cmd.ETA = tomorrow }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			app := newTestApp()
			sku := uniqueName("RUG")
			first := domain.CreateBatch{Ref: uniqueName("b"), SKU: sku, Qty: 100, ETA: today}
			handle(t, app, first)
			again := first
			c.change(&again)

			_, err := app.bus.Handle(context.Background(), again)

			if !errors.Is(err, domain.ErrBatchExists) {
				t.Fatalf("got %v, want ErrBatchExists", err)
			}
			p := committedProduct(t, app, sku)
			if b := p.Batch(first.Ref); b == nil || b.PurchasedQty() != 100 || !b.ETA().Equal(today) || len(p.Batches()) != 1 {
				t.Fatalf("the first batch changed: %v", batchRefs(p))
			}
			if again.SKU != sku && app.store.Product(again.SKU) != nil {
				t.Fatalf("a product %s was created by a refused command", again.SKU)
			}
		})
	}
}

// The book's TestAllocate.

func TestAllocates(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	sku := uniqueName("COMPLICATED-LAMP")

	res := handle(t, app,
		domain.CreateBatch{Ref: "batch1", SKU: sku, Qty: 100},
		domain.Allocate{OrderID: "o1", SKU: sku, Qty: 10})

	if res.BatchRef != "batch1" {
		t.Fatalf("batch ref = %q, want batch1", res.BatchRef)
	}
	batches := committedProduct(t, app, sku).Batches()
	if len(batches) != 1 || batches[0].AvailableQty() != 90 {
		t.Fatalf("batches %v; want one with 90 available", batches)
	}
}

func TestAllocateErrorsForInvalidSKU(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	handle(t, app, domain.CreateBatch{Ref: "b1", SKU: "AREALSKU", Qty: 100})

	_, err := app.bus.Handle(context.Background(), domain.Allocate{OrderID: "o1", SKU: "NONEXISTENTSKU", Qty: 10})

	if !errors.Is(err, domain.ErrInvalidSKU) || err.Error() != "Invalid sku NONEXISTENTSKU" {
		t.Fatalf("got %v, want Invalid sku NONEXISTENTSKU", err)
	}
	if app.store.Product("NONEXISTENTSKU") != nil {
		t.Fatal("the unknown SKU became a product")
	}
}

func TestAllocateRefusesBadLinesWithAValidationError(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		cmd   func(sku string) domain.Allocate
		field string
	}{
		{"zero qty", func(sku string) domain.Allocate { return domain.Allocate{OrderID: "o1", SKU: sku, Qty: 0} }, "qty"},
		{"negative qty", func(sku string) domain.Allocate { return domain.Allocate{OrderID: "o1", SKU: sku, Qty: -1} }, "qty"},
		{"empty order id", func(sku string) domain.Allocate { return domain.Allocate{SKU: sku, Qty: 1} }, "orderid"},
		{"empty sku", func(string) domain.Allocate { return domain.Allocate{OrderID: "o1", Qty: 1} }, "sku"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			app := newTestApp()
			sku := uniqueName("STRICT-LAMP")
			handle(t, app, domain.CreateBatch{Ref: "b1", SKU: sku, Qty: 10})
			commits := app.store.Commits()

			_, err := app.bus.Handle(context.Background(), c.cmd(sku))

			var v *domain.ValidationError
			if !errors.As(err, &v) || v.Field != c.field || !errors.Is(err, domain.ErrInvalid) {
				t.Fatalf("got %v, want a ValidationError on %s", err, c.field)
			}
			if app.store.Commits() != commits || committedProduct(t, app, sku).Batch("b1").AvailableQty() != 10 {
				t.Fatal("a refused line was committed")
			}
		})
	}
}

func TestAllocateCommits(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	sku := uniqueName("OMINOUS-MIRROR")
	handle(t, app, domain.CreateBatch{Ref: "b1", SKU: sku, Qty: 100})
	before := app.store.Commits()

	handle(t, app, domain.Allocate{OrderID: "o1", SKU: sku, Qty: 10})

	if app.store.Commits() <= before {
		t.Fatal("allocation was not committed")
	}
	if got := committedProduct(t, app, sku).Batch("b1").AvailableQty(); got != 90 {
		t.Fatalf("committed available = %d, want 90", got)
	}
}

func TestSendsEmailOnOutOfStockError(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	sku := uniqueName("POPULAR-CURTAINS")

	res := handle(t, app,
		domain.CreateBatch{Ref: "b1", SKU: sku, Qty: 9},
		domain.Allocate{OrderID: "o1", SKU: sku, Qty: 10})

	if res.BatchRef != "" {
		t.Fatalf("allocated to %q, want no batch", res.BatchRef)
	}
	if got, want := app.notifier.sentTo("stock@made.com"), []string{"Out of stock for " + sku}; !slices.Equal(got, want) {
		t.Fatalf("sent to stock@made.com %v, want %v", got, want)
	}
	if app.notifier.destinations() != 1 || len(app.publisher.calls()) != 0 {
		t.Fatal("an out-of-stock line was announced as allocated or sent elsewhere")
	}
	if view := viewOf(t, app, "o1"); len(view) != 0 {
		t.Fatalf("view of an unallocated order = %v", view)
	}
}

// The book's TestChangeBatchQuantity.

func TestChangesAvailableQuantity(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	sku := uniqueName("ADORABLE-SETTEE")
	handle(t, app, domain.CreateBatch{Ref: "batch1", SKU: sku, Qty: 100})
	if got := committedProduct(t, app, sku).Batch("batch1").AvailableQty(); got != 100 {
		t.Fatalf("available = %d, want 100", got)
	}

	handle(t, app, domain.ChangeBatchQuantity{Ref: "batch1", Qty: 50})

	if got := committedProduct(t, app, sku).Batch("batch1").AvailableQty(); got != 50 {
		t.Fatalf("available = %d, want 50", got)
	}
}

// indifferentTable is the book's test_reallocates_if_necessary history: two
// orders of 20 in a warehouse batch of 50, a shipment of 50 arriving today.
func indifferentTable(t *testing.T, app testApp) string {
	t.Helper()
	sku := uniqueName("INDIFFERENT-TABLE")
	handle(t, app,
		domain.CreateBatch{Ref: "batch1", SKU: sku, Qty: 50},
		domain.CreateBatch{Ref: "batch2", SKU: sku, Qty: 50, ETA: today},
		domain.Allocate{OrderID: "order1", SKU: sku, Qty: 20},
		domain.Allocate{OrderID: "order2", SKU: sku, Qty: 20})
	return sku
}

func TestReallocatesIfNecessary(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	sku := indifferentTable(t, app)
	p := committedProduct(t, app, sku)
	if got := available(p.Batch("batch1"), p.Batch("batch2")); !reflect.DeepEqual(got, []int{10, 50}) {
		t.Fatalf("before: available %v, want [10 50]", got)
	}

	handle(t, app, domain.ChangeBatchQuantity{Ref: "batch1", Qty: 25})

	p = committedProduct(t, app, sku)
	// One order gives way, leaving 25 - 20; its 20 move to the next batch.
	if got := available(p.Batch("batch1"), p.Batch("batch2")); !reflect.DeepEqual(got, []int{5, 30}) {
		t.Fatalf("after: available %v, want [5 30]", got)
	}
	// The newest allocation is the one that moves.
	if !p.Batch("batch1").Has(domain.OrderLine{OrderID: "order1", SKU: sku, Qty: 20}) ||
		!p.Batch("batch2").Has(domain.OrderLine{OrderID: "order2", SKU: sku, Qty: 20}) {
		t.Fatalf("batch1 %v, batch2 %v; want order1 kept, order2 moved", p.Batch("batch1").Lines(), p.Batch("batch2").Lines())
	}
}

func TestEveryAllocationIsPublishedWithItsOwnMessageIDIncludingTheReallocation(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	sku := indifferentTable(t, app)

	handle(t, app, domain.ChangeBatchQuantity{Ref: "batch1", Qty: 25})

	sent := app.publisher.sent()
	want := []domain.Allocated{
		{OrderID: "order1", SKU: sku, Qty: 20, BatchRef: "batch1"},
		{OrderID: "order2", SKU: sku, Qty: 20, BatchRef: "batch1"},
		{OrderID: "order2", SKU: sku, Qty: 20, BatchRef: "batch2"},
	}
	if got := allocatedEvents(t, sent); !reflect.DeepEqual(got, want) {
		t.Fatalf("published %v, want %v", got, want)
	}
	// The line that moved was announced as deallocated first.
	var names []string
	for _, env := range sent {
		names = append(names, env.Event.Name())
	}
	if !reflect.DeepEqual(names, []string{"allocated", "allocated", "deallocated", "allocated"}) {
		t.Fatalf("published %v; want order2's deallocation before its reallocation", names)
	}
	ids := map[string]bool{}
	for _, env := range sent {
		if env.MessageID == "" || ids[env.MessageID] || env.OccurredAt.IsZero() {
			t.Fatalf("envelope without its own message id or time: %+v", env)
		}
		ids[env.MessageID] = true
	}
}

func TestTheAllocationsViewFollowsDeallocationAndReallocation(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	sku := indifferentTable(t, app)
	if got := viewOf(t, app, "order2"); !slices.Equal(got, []servicelayer.Allocation{{SKU: sku, BatchRef: "batch1"}}) {
		t.Fatalf("before: view of order2 = %v", got)
	}

	handle(t, app, domain.ChangeBatchQuantity{Ref: "batch1", Qty: 25})

	if got := viewOf(t, app, "order2"); !slices.Equal(got, []servicelayer.Allocation{{SKU: sku, BatchRef: "batch2"}}) {
		t.Fatalf("after: view of order2 = %v, want batch2 only", got)
	}
	if got := viewOf(t, app, "order1"); !slices.Equal(got, []servicelayer.Allocation{{SKU: sku, BatchRef: "batch1"}}) {
		t.Fatalf("after: view of order1 = %v, want batch1", got)
	}
}

func TestALineThatCannotBeReallocatedLeavesTheViewAndRaisesOutOfStock(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	sku := uniqueName("LAST-TABLE")
	handle(t, app,
		domain.CreateBatch{Ref: "only", SKU: sku, Qty: 10},
		domain.Allocate{OrderID: "o1", SKU: sku, Qty: 6})

	handle(t, app, domain.ChangeBatchQuantity{Ref: "only", Qty: 5})

	if got := viewOf(t, app, "o1"); len(got) != 0 {
		t.Fatalf("view of o1 = %v, want nothing: it has no batch any more", got)
	}
	if got := committedProduct(t, app, sku).Batch("only").AvailableQty(); got != 5 {
		t.Fatalf("available = %d, want 5", got)
	}
	if got := app.notifier.sentTo(servicelayer.StockDesk); !slices.Equal(got, []string{"Out of stock for " + sku}) {
		t.Fatalf("notified %v", got)
	}
}

func TestChangeBatchQuantityOfAnUnknownBatchFails(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	sku := uniqueName("LAMP")
	handle(t, app, domain.CreateBatch{Ref: "b1", SKU: sku, Qty: 10})
	commits := app.store.Commits()

	_, err := app.bus.Handle(context.Background(), domain.ChangeBatchQuantity{Ref: "ghost", Qty: 1})

	if !errors.Is(err, domain.ErrUnknownBatch) {
		t.Fatalf("got %v, want ErrUnknownBatch", err)
	}
	if app.store.Commits() != commits {
		t.Fatal("a failed command committed")
	}
}

func TestChangeBatchQuantityRefusesANegativeQuantity(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	sku := uniqueName("LAMP")
	handle(t, app, domain.CreateBatch{Ref: "b1", SKU: sku, Qty: 10})

	_, err := app.bus.Handle(context.Background(), domain.ChangeBatchQuantity{Ref: "b1", Qty: -1})

	if !errors.Is(err, domain.ErrInvalid) {
		t.Fatalf("got %v, want ErrInvalid", err)
	}
	if got := committedProduct(t, app, sku).Batch("b1").PurchasedQty(); got != 10 {
		t.Fatalf("purchased = %d, want 10", got)
	}
}

// The book's views test, against the in-memory read model.
func TestAllocationsViewListsAnOrdersLines(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	sku1, sku2 := uniqueName("sku1"), uniqueName("sku2")
	handle(t, app,
		domain.CreateBatch{Ref: "sku1batch", SKU: sku1, Qty: 50},
		domain.CreateBatch{Ref: "sku2batch", SKU: sku2, Qty: 50, ETA: today},
		domain.Allocate{OrderID: "order1", SKU: sku1, Qty: 20},
		domain.Allocate{OrderID: "order1", SKU: sku2, Qty: 20},
		domain.Allocate{OrderID: "otherorder", SKU: sku1, Qty: 30})

	want := []servicelayer.Allocation{{SKU: sku1, BatchRef: "sku1batch"}, {SKU: sku2, BatchRef: "sku2batch"}}
	if got := viewOf(t, app, "order1"); !slices.Equal(got, want) {
		t.Fatalf("view = %v, want %v", got, want)
	}
}
