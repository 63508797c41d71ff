// Package storetest is the contract of the storage ports: one named test per
// rule a store must keep, run against every implementation (the memory fake
// the unit tests use, SQLite and PostgreSQL), so that they can never drift
// apart. An implementation runs it with Run, as watermill's pub/subs run
// tests.TestPubSub.
//
// The rules of a write: the product is still at the version it was read at,
// the inbound message is new, the delivery to complete is still pending, an
// earlier delivery of the product goes first, a batch is never allocated
// beyond what it holds, a stale cached copy costs a retry and never a wrong
// answer, and a refused member of a group commit does not take the others
// down.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"allocation/domain"
	"allocation/servicelayer"
)

// Store is what the contract covers.
type Store interface {
	servicelayer.UnitOfWork
	servicelayer.EventLog
	servicelayer.History
	// Do and Deliver are pieces of work of their own.
	Do(ctx context.Context, fn func(tx servicelayer.Tx) error) ([]servicelayer.Delivery, error)
	Deliver(ctx context.Context, d servicelayer.Delivery, fn func(tx servicelayer.Tx) error) ([]servicelayer.Delivery, error)
	Allocations(ctx context.Context, orderID string) ([]servicelayer.Allocation, error)
	// ProductOfBatch says which product batch ref belongs to (the
	// consumer's question).
	ProductOfBatch(ctx context.Context, ref string) (sku string, found bool, err error)
}

// Setup says how to open the implementation under test.
type Setup struct {
	// New opens a store on fresh, empty data; the test closes nothing.
	New func(t *testing.T) Store
	// Twin opens a second store on the data of s, as another process
	// would: with caches and locks of its own. Nil for a store that lives
	// in one process only; the rules about other writers are then skipped,
	// saying so.
	Twin func(t *testing.T, s Store) Store
}

// Run runs every rule against the implementation, each on fresh data.
func Run(t *testing.T, setup Setup) {
	rules := []struct {
		name string
		run  func(t *testing.T, setup Setup)
	}{
		{"AnUnknownProductIsNil", anUnknownProductIsNil},
		{"ACommittedProductComesBackWhole", aCommittedProductComesBackWhole},
		{"AFailedUnitOfWorkLeavesNothing", aFailedUnitOfWorkLeavesNothing},
		{"EventsAreLoggedAndProjectedInTheSameCommit", eventsAreLoggedAndProjectedInTheSameCommit},
		{"AnInboundMessageIsTakenOnce", anInboundMessageIsTakenOnce},
		{"ADeliveryIsDoneOnce", aDeliveryIsDoneOnce},
		{"AnEarlierDeliveryOfTheProductGoesFirst", anEarlierDeliveryOfTheProductGoesFirst},
		{"TheDeliveriesOfOneWriteAreInTurnTogether", theDeliveriesOfOneWriteAreInTurnTogether},
		{"ARunIsDoneByOneSendOrNotAtAll", aRunIsDoneByOneSendOrNotAtAll},
		{"AFailedDeliveryFallsDueAgain", aFailedDeliveryFallsDueAgain},
		{"AProductThatMovedOnIsReadAgain", aProductThatMovedOnIsReadAgain},
		{"ABatchIsNeverAllocatedBeyondWhatItHolds", aBatchIsNeverAllocatedBeyondWhatItHolds},
		{"ARefusedMemberOfAGroupCommitFailsAlone", aRefusedMemberOfAGroupCommitFailsAlone},
		{"TheHistoryFiltersAndPages", theHistoryFiltersAndPages},
		{"TheProductOfABatchIsKnownOnceCommitted", theProductOfABatchIsKnownOnceCommitted},
	}
	for _, r := range rules {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			r.run(t, setup)
		})
	}
}

func anUnknownProductIsNil(t *testing.T, setup Setup) {
	s, ctx := setup.New(t), context.Background()
	_, err := s.Do(ctx, func(tx servicelayer.Tx) error {
		for _, get := range []func() (*domain.Product, error){
			func() (*domain.Product, error) { return tx.Products().Get(ctx, "nope") },
			func() (*domain.Product, error) { return tx.Products().GetByBatchRef(ctx, "nope") },
			func() (*domain.Product, error) { return tx.Products().GetBatches(ctx, "nope") },
			func() (*domain.Product, error) {
				return tx.Products().GetForLine(ctx, domain.OrderLine{OrderID: "o", SKU: "nope", Qty: 1})
			},
		} {
			if p, err := get(); p != nil || err != nil {
				t.Errorf("got %v, %v; want nil, nil", p, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func aCommittedProductComesBackWhole(t *testing.T, setup Setup) {
	s, ctx := setup.New(t), context.Background()
	eta := time.Date(2031, 2, 3, 0, 0, 0, 0, time.UTC)
	AddStock(t, s, "LAMP", "b1", 10, eta)
	Allocate(t, s, domain.OrderLine{OrderID: "o1", SKU: "LAMP", Qty: 3})
	_, err := s.Do(ctx, func(tx servicelayer.Tx) error {
		p, err := tx.Products().GetByBatchRef(ctx, "b1")
		if err != nil {
			return err
		}
		b := p.Batch("b1")
		if !b.ETA().Equal(eta) || b.AvailableQty() != 7 || p.Version() != 2 ||
			!slices.Equal(b.Lines(), []domain.OrderLine{{OrderID: "o1", SKU: "LAMP", Qty: 3}}) {
			t.Errorf("batch %s: eta %v, available %d, lines %v, version %d", b.Ref(), b.ETA(), b.AvailableQty(), b.Lines(), p.Version())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func aFailedUnitOfWorkLeavesNothing(t *testing.T, setup Setup) {
	s, ctx := setup.New(t), context.Background()
	boom := errors.New("boom")
	queued, err := s.Do(ctx, func(tx servicelayer.Tx) error {
		p, _ := domain.NewProduct("GONE")
		if err := tx.Products().Add(ctx, p); err != nil {
			return err
		}
		b, _ := domain.NewBatch("g1", "GONE", 5, time.Time{})
		_ = p.AddBatch(b)
		_, _ = p.Allocate(domain.OrderLine{OrderID: "o", SKU: "GONE", Qty: 1})
		return boom
	})
	if !errors.Is(err, boom) || len(queued) != 0 {
		t.Fatalf("got %v, %v; want boom and nothing queued", queued, err)
	}
	if due, _ := s.Due(ctx, 10); len(due) != 0 {
		t.Fatalf("events of a rolled back change are due: %v", due)
	}
	if rows, _ := s.Allocations(ctx, "o"); len(rows) != 0 {
		t.Fatalf("the view holds a rolled back allocation: %v", rows)
	}
	if p := product(t, s, "GONE"); p != nil {
		t.Fatal("the product of a rolled back change exists")
	}
}

func eventsAreLoggedAndProjectedInTheSameCommit(t *testing.T, setup Setup) {
	s, ctx := setup.New(t), context.Background()
	AddStock(t, s, "DESK", "d1", 10, time.Time{})
	queued := Allocate(t, s, domain.OrderLine{OrderID: "o1", SKU: "DESK", Qty: 2})
	if len(queued) != 1 || queued[0].MessageID == "" || queued[0].LogID == 0 || queued[0].OccurredAt.IsZero() || !queued[0].FirstInLine {
		t.Fatalf("queued %+v; want one delivery in turn, with its id and place in the log", queued)
	}
	want := []servicelayer.Allocation{{SKU: "DESK", BatchRef: "d1"}}
	if rows, _ := s.Allocations(ctx, "o1"); !slices.Equal(rows, want) {
		t.Fatalf("view %v, want %v", rows, want)
	}
}

func anInboundMessageIsTakenOnce(t *testing.T, setup Setup) {
	s, ctx := setup.New(t), context.Background()
	AddStock(t, s, "RUG", "r1", 10, time.Time{})
	for i, want := range []error{nil, servicelayer.ErrDuplicateMessage} {
		w := s.Begin()
		_, err := w.Do(ctx, "m-1", func(tx servicelayer.Tx) error {
			p, err := tx.Products().GetByBatchRef(ctx, "r1")
			if err != nil {
				return err
			}
			return p.ChangeBatchQuantity("r1", 20+i)
		})
		w.End()
		if !errors.Is(err, want) && (want != nil || err != nil) {
			t.Fatalf("attempt %d: %v, want %v", i, err, want)
		}
	}
	if got := product(t, s, "RUG").Batch("r1").PurchasedQty(); got != 20 {
		t.Fatalf("purchased %d, want the first message's 20", got)
	}
}

func aDeliveryIsDoneOnce(t *testing.T, setup Setup) {
	s := setup.New(t)
	AddStock(t, s, "CUP", "c1", 10, time.Time{})
	d := Allocate(t, s, domain.OrderLine{OrderID: "o1", SKU: "CUP", Qty: 1})[0]
	if err := deliver(s, d); err != nil {
		t.Fatalf("first time: %v", err)
	}
	if err := deliver(s, d); !errors.Is(err, servicelayer.ErrNotDelivered) {
		t.Fatalf("again: %v, want ErrNotDelivered", err)
	}
}

func anEarlierDeliveryOfTheProductGoesFirst(t *testing.T, setup Setup) {
	s := setup.New(t)
	AddStock(t, s, "CHAIR", "c1", 10, time.Time{})
	first := Allocate(t, s, domain.OrderLine{OrderID: "o1", SKU: "CHAIR", Qty: 1})[0]
	second := Allocate(t, s, domain.OrderLine{OrderID: "o2", SKU: "CHAIR", Qty: 1})[0]
	if second.FirstInLine {
		t.Fatal("the second delivery is in turn while the first is pending")
	}
	if err := deliver(s, second); !errors.Is(err, servicelayer.ErrNotDelivered) {
		t.Fatalf("second before first: %v, want ErrNotDelivered", err)
	}
	if err := deliver(s, first); err != nil {
		t.Fatalf("first: %v", err)
	}
	if err := deliver(s, second); err != nil {
		t.Fatalf("second after first: %v", err)
	}
}

// Turns are taken against what was queued before the write: deliveries of
// one product queued by one write all go out at once (in the order of their
// events), whatever the database reads of the rows the write inserts itself.
func theDeliveriesOfOneWriteAreInTurnTogether(t *testing.T, setup Setup) {
	s := setup.New(t)
	AddStock(t, s, "STOOL", "s1", 10, time.Time{})
	queued := allocateInOneWrite(t, s, "STOOL", "o1", "o2")
	if len(queued) < 2 {
		t.Fatalf("queued %d deliveries, want one per event and handler", len(queued))
	}
	for _, d := range queued {
		if !d.FirstInLine {
			t.Fatalf("%s of %s waits for a delivery of the same write", d.Handler, d.Envelope.Event.Name())
		}
	}
	if later := Allocate(t, s, domain.OrderLine{OrderID: "o3", SKU: "STOOL", Qty: 1}); later[0].FirstInLine {
		t.Fatal("a later write's delivery is in turn while those of the first are pending")
	}
}

// A run of deliveries one write queued first in line is made in process by
// one send (the publications of a group of allocations): when the send
// fails, none of them is done and the first falls due again; when it
// succeeds, every one of them is done.
func aRunIsDoneByOneSendOrNotAtAll(t *testing.T, setup Setup) {
	s, ctx := setup.New(t), context.Background()
	AddStock(t, s, "BOWL", "b1", 10, time.Time{})
	run := allocateInOneWrite(t, s, "BOWL", "o1", "o2")
	sends := 0
	boom := errors.New("redis down")
	w := s.Begin()
	err := w.DeliverRun(ctx, run, func(context.Context) error { sends++; return boom })
	w.End()
	if !errors.Is(err, boom) || sends != 1 {
		t.Fatalf("failing run: %v after %d sends, want boom after one", err, sends)
	}
	// A transient failure leaves the first due at once, not after the
	// grace a new delivery gets.
	if next, err := s.NextDue(ctx); err != nil || next.IsZero() || next.After(time.Now()) {
		t.Fatalf("next due %v, %v after a failed run; want now", next, err)
	}
	for _, d := range run {
		if err := deliver(s, d); err != nil {
			t.Fatalf("%s after the failed run: %v, want it still to make", d.Envelope.Event.Name(), err)
		}
	}

	AddStock(t, s, "PLATE", "p1", 10, time.Time{})
	run = allocateInOneWrite(t, s, "PLATE", "o1", "o2")
	w = s.Begin()
	err = w.DeliverRun(ctx, run, func(context.Context) error { return nil })
	w.End()
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, d := range run {
		if err := deliver(s, d); !errors.Is(err, servicelayer.ErrNotDelivered) {
			t.Fatalf("%s after the run: %v, want ErrNotDelivered (done)", d.Envelope.Event.Name(), err)
		}
	}
}

func aFailedDeliveryFallsDueAgain(t *testing.T, setup Setup) {
	s, ctx := setup.New(t), context.Background()
	AddStock(t, s, "FORK", "f1", 10, time.Time{})
	q := Allocate(t, s, domain.OrderLine{OrderID: "o1", SKU: "FORK", Qty: 1})[0]
	boom := errors.New("redis down")
	d := servicelayer.Delivery{Envelope: q.Envelope, Handler: q.Handler}
	if _, err := s.Deliver(ctx, d, func(servicelayer.Tx) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("got %v, want boom", err)
	}
	if next, err := s.NextDue(ctx); err != nil || next.IsZero() {
		t.Fatalf("next due %v, %v; want a time", next, err)
	}
}

// Another process moves the product on after this store cached it: the
// write notices, reads the product again and decides once more.
func aProductThatMovedOnIsReadAgain(t *testing.T, setup Setup) {
	s, other := twins(t, setup)
	AddStock(t, s, "LAMP", "b1", 10, time.Time{})
	Allocate(t, s, domain.OrderLine{OrderID: "o1", SKU: "LAMP", Qty: 1}) // cached here
	Allocate(t, other, domain.OrderLine{OrderID: "o2", SKU: "LAMP", Qty: 2})
	Allocate(t, s, domain.OrderLine{OrderID: "o3", SKU: "LAMP", Qty: 3})
	p := product(t, s, "LAMP")
	if got := p.Batch("b1").AvailableQty(); got != 4 || p.Version() != 4 {
		t.Fatalf("available %d at version %d; want 4 at version 4", got, p.Version())
	}
}

// Two processes decide on the last unit of stock, each from its own cached
// copy: one wins, the other reads again and finds the batch empty.
func aBatchIsNeverAllocatedBeyondWhatItHolds(t *testing.T, setup Setup) {
	s, other := twins(t, setup)
	ctx := context.Background()
	AddStock(t, s, "LAST", "b1", 2, time.Time{})
	Allocate(t, s, domain.OrderLine{OrderID: "o1", SKU: "LAST", Qty: 1})
	Allocate(t, other, domain.OrderLine{OrderID: "o2", SKU: "LAST", Qty: 1}) // takes the last unit
	var ref string
	_, err := s.Do(ctx, func(tx servicelayer.Tx) error {
		line := domain.OrderLine{OrderID: "o3", SKU: "LAST", Qty: 1}
		p, err := tx.Products().GetForLine(ctx, line)
		if err != nil {
			return err
		}
		ref, err = p.Allocate(line)
		return err
	})
	if err != nil || ref != "" {
		t.Fatalf("allocating past the stock: batch %q, %v; want out of stock", ref, err)
	}
	if got := product(t, s, "LAST").Batch("b1").AllocatedQty(); got != 2 {
		t.Fatalf("allocated %d of 2", got)
	}
}

// Units of work on different products that wait together may be written
// together; one refused (a message processed before) must not take the
// others down, nor let itself through.
func aRefusedMemberOfAGroupCommitFailsAlone(t *testing.T, setup Setup) {
	s, ctx := setup.New(t), context.Background()
	const products = 16
	for i := range products {
		AddStock(t, s, fmt.Sprintf("GROUP-%d", i), fmt.Sprintf("b%d", i), 100, time.Time{})
	}
	changeOnce := func(qty int) error {
		w := s.Begin()
		defer w.End()
		_, err := w.Do(ctx, "seen-before", func(tx servicelayer.Tx) error {
			p, err := tx.Products().GetByBatchRef(ctx, "b0")
			if err != nil {
				return err
			}
			return p.ChangeBatchQuantity("b0", qty)
		})
		return err
	}
	if err := changeOnce(90); err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		errs := make([]error, products)
		var wg sync.WaitGroup
		for i := range products {
			wg.Go(func() {
				if i == 0 {
					errs[i] = changeOnce(50)
					return
				}
				errs[i] = allocate(s, domain.OrderLine{OrderID: fmt.Sprintf("o%d", round), SKU: fmt.Sprintf("GROUP-%d", i), Qty: 1})
			})
		}
		wg.Wait()
		if !errors.Is(errs[0], servicelayer.ErrDuplicateMessage) {
			t.Fatalf("round %d: the repeated message answered %v, want ErrDuplicateMessage", round, errs[0])
		}
		if err := errors.Join(errs[1:]...); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
	if got := product(t, s, "GROUP-0").Batch("b0").PurchasedQty(); got != 90 {
		t.Fatalf("b0 holds %d, want the first message's 90", got)
	}
	if got := product(t, s, "GROUP-1").Batch("b1").AllocatedQty(); got != 3 {
		t.Fatalf("GROUP-1 allocated %d, want 3", got)
	}
}

func theHistoryFiltersAndPages(t *testing.T, setup Setup) {
	s, ctx := setup.New(t), context.Background()
	AddStock(t, s, "SHELF", "s1", 10, time.Time{})
	AddStock(t, s, "TABLE", "t1", 10, time.Time{})
	Allocate(t, s, domain.OrderLine{OrderID: "o1", SKU: "SHELF", Qty: 3})
	Allocate(t, s, domain.OrderLine{OrderID: "o1", SKU: "TABLE", Qty: 3})
	Allocate(t, s, domain.OrderLine{OrderID: "o2", SKU: "SHELF", Qty: 30})
	for _, c := range []struct {
		q    servicelayer.EventQuery
		want []string
	}{
		{servicelayer.EventQuery{}, []string{"batch_created", "batch_created", "allocated", "allocated", "out_of_stock"}},
		{servicelayer.EventQuery{SKU: "SHELF"}, []string{"batch_created", "allocated", "out_of_stock"}},
		{servicelayer.EventQuery{OrderID: "o1", Limit: 1}, []string{"allocated"}},
		{servicelayer.EventQuery{BatchRef: "t1"}, []string{"batch_created", "allocated"}},
		{servicelayer.EventQuery{Type: "allocated", SKU: "TABLE"}, []string{"allocated"}},
		{servicelayer.EventQuery{OrderID: "o2"}, nil}, // out of stock names no order
	} {
		found, err := s.Events(ctx, c.q)
		var got []string
		for _, env := range found {
			got = append(got, env.Event.Name())
		}
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%+v: %v, %v; want %v", c.q, got, err, c.want)
		}
		if len(found) > 0 && c.q.Limit == 0 {
			next := c.q
			next.After = found[0].LogID
			rest, err := s.Events(ctx, next)
			if err != nil || len(rest) != len(c.want)-1 {
				t.Errorf("%+v after the first: %d events, %v; want %d", c.q, len(rest), err, len(c.want)-1)
			}
		}
	}
}

func theProductOfABatchIsKnownOnceCommitted(t *testing.T, setup Setup) {
	s, ctx := setup.New(t), context.Background()
	if sku, found, err := s.ProductOfBatch(ctx, "b1"); found || err != nil {
		t.Fatalf("unknown batch: %q, %v, %v; want not found", sku, found, err)
	}
	// Not found is not remembered: the batch may come any moment.
	AddStock(t, s, "LAMP", "b1", 10, time.Time{})
	AddStock(t, s, "DESK", "d1", 10, time.Time{})
	for ref, want := range map[string]string{"b1": "LAMP", "d1": "DESK"} {
		if sku, found, err := s.ProductOfBatch(ctx, ref); sku != want || !found || err != nil {
			t.Errorf("batch %s: %q, %v, %v; want %s", ref, sku, found, err, want)
		}
	}
}
