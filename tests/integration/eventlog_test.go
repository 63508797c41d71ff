package integration_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"allocation/adapters/sqlstore"
	"allocation/adapters/storetest"
	"allocation/domain"
	"allocation/servicelayer"
	"allocation/tests/testenv"
)

// flakyPublisher fails while down is set, and counts what it published.
type flakyPublisher struct {
	down      atomic.Bool
	mu        sync.Mutex
	published map[string]int // message id -> times
	order     []string       // order ids, in publishing order
	refuse    map[string]bool
}

func (p *flakyPublisher) Publish(ctx context.Context, env servicelayer.Envelope) error {
	return p.PublishBatch(ctx, []servicelayer.Envelope{env})
}

// PublishBatch refuses, as a permanent failure, any batch holding an order
// id in refuse; records line_allocated in order.
func (p *flakyPublisher) PublishBatch(_ context.Context, envs []servicelayer.Envelope) error {
	if p.down.Load() {
		return errors.New("redis is down")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, env := range envs {
		if a, ok := env.Event.(domain.Allocated); ok && p.refuse[a.OrderID] {
			return fmt.Errorf("order %s cannot be encoded: %w", a.OrderID, servicelayer.ErrPermanent)
		}
	}
	if p.published == nil {
		p.published = map[string]int{}
	}
	for _, env := range envs {
		if a, ok := env.Event.(domain.Allocated); ok {
			p.published[env.MessageID]++
			p.order = append(p.order, a.OrderID)
		}
	}
	return nil
}

// refuseOrders makes every publication of these orders fail permanently.
func (p *flakyPublisher) refuseOrders(ids ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = map[string]bool{}
	for _, id := range ids {
		p.refuse[id] = true
	}
}

func (p *flakyPublisher) count() (distinct, total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range p.published {
		distinct++
		total += n
	}
	return distinct, total
}

type outboxFixture struct {
	db        testDB
	uow       *sqlstore.Store // the unit of work
	events    *sqlstore.Store // the event log, the same store
	bus       *servicelayer.Bus
	publisher *flakyPublisher
}

func newOutbox(t *testing.T, open opener) outboxFixture {
	t.Helper()
	db := open(t)
	f := outboxFixture{db: db, uow: db.store, events: db.store, publisher: &flakyPublisher{}}
	policy := servicelayer.RetryPolicy{MaxAttempts: 4, Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond}
	f.uow.SetRetryPolicy(policy)
	f.bus = servicelayer.NewBus(servicelayer.Dependencies{UoW: f.uow, Publisher: f.publisher, Notifier: nopNotifier{}, Retry: policy})
	return f
}

// runDispatcher runs a dispatcher until the test ends.
func (f outboxFixture) runDispatcher(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = servicelayer.NewDispatcher(f.bus, f.events, slog.Default()).Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

func (f outboxFixture) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	if err := f.db.Get(&n, query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func TestEventsAreLoggedInTheSameTransactionAsTheChange(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		f := newOutbox(t, open)
		handleAll(t, f.bus, domain.CreateBatch{Ref: "b1", SKU: "LOGGED", Qty: 10}, domain.Allocate{OrderID: "o1", SKU: "LOGGED", Qty: 1})
		if n := f.count(t, `SELECT count(*) FROM event_log WHERE name = 'allocated' AND payload->>'orderid' = 'o1'`); n != 1 {
			t.Fatalf("%d allocated events logged, want 1", n)
		}
		// A rolled back change leaves no event behind.
		_, err := f.uow.Do(context.Background(), func(tx servicelayer.Tx) error {
			p, _ := tx.Products().Get(context.Background(), "LOGGED")
			_, _ = p.Allocate(domain.OrderLine{OrderID: "o2", SKU: "LOGGED", Qty: 1})
			return errors.New("changed my mind")
		})
		if err == nil || f.count(t, `SELECT count(*) FROM event_log WHERE payload->>'orderid' = 'o2'`) != 0 {
			t.Fatalf("the event of a rolled back change was logged (err %v)", err)
		}
		// A publication is marked done a moment after it went out.
		testenv.Eventually(t, 5*time.Second, func() error {
			if n := f.count(t, `SELECT count(*) FROM event_deliveries WHERE status = 'done'`); n != 1 {
				return fmt.Errorf("%d deliveries done, want the one publish", n)
			}
			return nil
		})
	})
}

// A crash between commit and delivery: the events are in the log, nobody
// delivered them. A dispatcher started afterwards delivers every one, once.
func TestDispatcherDeliversWhatACrashLeftBehind(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		f := newOutbox(t, open)
		handleAll(t, f.bus,
			domain.CreateBatch{Ref: "early", SKU: "CRASH", Qty: 40},
			domain.CreateBatch{Ref: "late", SKU: "CRASH", Qty: 100, ETA: today()})
		for i := range 20 {
			handleAll(t, f.bus, domain.Allocate{OrderID: fmt.Sprintf("o%02d", i), SKU: "CRASH", Qty: 2})
		}
		// The change commits; the process "dies" before handling its events.
		_, err := f.uow.Do(context.Background(), func(tx servicelayer.Tx) error {
			p, err := tx.Products().GetByBatchRef(context.Background(), "early")
			if err != nil {
				return err
			}
			return p.ChangeBatchQuantity("early", 10)
		})
		if err != nil {
			t.Fatal(err)
		}
		f.runDispatcher(t)
		testenv.Eventually(t, 20*time.Second, func() error {
			if n := f.count(t, `SELECT count(*) FROM event_deliveries WHERE status <> 'done'`); n != 0 {
				return fmt.Errorf("%d deliveries not done", n)
			}
			return nil
		})
		lines := f.count(t, `SELECT count(*) FROM allocations`)
		viewOnLate := f.count(t, `SELECT count(*) FROM allocations_view WHERE batchref = 'late'`)
		distinct, total := f.publisher.count()
		if lines != 20 || viewOnLate != 15 || distinct != 35 || total != 35 {
			t.Fatalf("lines %d, view rows on late %d, published %d distinct / %d total; want 20, 15, 35 (20 allocations + 15 moves), 35", lines, viewOnLate, distinct, total)
		}
	})
}

// Redis being down is no fault of the event's: the delivery is retried for
// as long as it takes, and never parked.
func TestATransientFailureIsRetriedAndNeverParked(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		f := newOutbox(t, open)
		f.runDispatcher(t)
		f.publisher.down.Store(true)
		handleAll(t, f.bus, domain.CreateBatch{Ref: "b1", SKU: "DOWN", Qty: 10}, domain.Allocate{OrderID: "o1", SKU: "DOWN", Qty: 1})
		// Twice the attempts that park a permanent failure.
		testenv.Eventually(t, 20*time.Second, func() error {
			if n := f.count(t, `SELECT attempts FROM event_deliveries WHERE status = 'pending'`); n < 8 {
				return fmt.Errorf("%d attempts so far", n)
			}
			return nil
		})
		if dead, err := f.events.Dead(context.Background()); err != nil || len(dead) != 0 {
			t.Fatalf("a transient failure parked deliveries: %v (%v)", dead, err)
		}
		f.publisher.down.Store(false)
		testenv.Eventually(t, 10*time.Second, func() error {
			if d, total := f.publisher.count(); d != 1 || total != 1 {
				return fmt.Errorf("published %d distinct, %d total", d, total)
			}
			return nil
		})
	})
}

// A delivery its handler refuses every time is parked after its last
// attempt, and the later deliveries of its product for that handler wait
// behind it: replaying it sends all of them in order.
func TestAPermanentFailureParksADeliveryAndHoldsItsProductUntilReplayed(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		f := newOutbox(t, open)
		f.runDispatcher(t)
		f.publisher.refuseOrders("o1")
		handleAll(t, f.bus, domain.CreateBatch{Ref: "b1", SKU: "PARKED", Qty: 10})
		for _, id := range []string{"o1", "o2", "o3"} {
			handleAll(t, f.bus, domain.Allocate{OrderID: id, SKU: "PARKED", Qty: 1})
		}
		dead := waitForDead(t, f, 1)
		if dead[0].Attempts != 4 || dead[0].Handler != servicelayer.PublishHandler {
			t.Fatalf("dead delivery %+v", dead[0])
		}
		if b, err := f.events.Backlog(context.Background()); err != nil || b.Blocked != 2 || b.Dead != 1 {
			t.Fatalf("backlog %+v (%v), want 1 dead and 2 blocked behind it", b, err)
		}
		if _, total := f.publisher.count(); total != 0 {
			t.Fatalf("%d published past the parked one", total)
		}
		f.publisher.refuseOrders()
		if n, err := f.events.Replay(context.Background(), dead[0].LogID); err != nil || n != 1 {
			t.Fatalf("replay: %d, %v", n, err)
		}
		waitForPublished(t, f, "o1", "o2", "o3")
	})
}

// Skipping a parked delivery lets the ones behind it go, without it.
func TestSkippingAParkedDeliveryReleasesItsProduct(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		f := newOutbox(t, open)
		f.runDispatcher(t)
		f.publisher.refuseOrders("o1")
		handleAll(t, f.bus, domain.CreateBatch{Ref: "b1", SKU: "SKIPPED", Qty: 10})
		handleAll(t, f.bus, domain.Allocate{OrderID: "o1", SKU: "SKIPPED", Qty: 1}, domain.Allocate{OrderID: "o2", SKU: "SKIPPED", Qty: 1})
		dead := waitForDead(t, f, 1)
		if n, err := f.events.Skip(context.Background(), dead[0].LogID); err != nil || n != 1 {
			t.Fatalf("skip: %d, %v", n, err)
		}
		waitForPublished(t, f, "o2")
		testenv.Eventually(t, 5*time.Second, func() error {
			if n := f.count(t, `SELECT count(*) FROM event_deliveries WHERE status <> 'done'`); n != 0 {
				return fmt.Errorf("%d deliveries left after the skip", n)
			}
			return nil
		})
	})
}

func waitForDead(t *testing.T, f outboxFixture, n int) []sqlstore.DeadDelivery {
	t.Helper()
	var dead []sqlstore.DeadDelivery
	testenv.Eventually(t, 20*time.Second, func() error {
		var err error
		if dead, err = f.events.Dead(context.Background()); err != nil || len(dead) != n {
			return fmt.Errorf("dead deliveries %v (%v)", dead, err)
		}
		return nil
	})
	return dead
}

// waitForPublished waits until exactly orders were published, in that order.
func waitForPublished(t *testing.T, f outboxFixture, orders ...string) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		f.publisher.mu.Lock()
		defer f.publisher.mu.Unlock()
		if !slices.Equal(f.publisher.order, orders) {
			return fmt.Errorf("published %v, want %v", f.publisher.order, orders)
		}
		return nil
	})
}

// Many dispatchers on one database deliver each event once.
func TestConcurrentDispatchersDeliverEachEventOnce(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		f := newOutbox(t, open)
		f.publisher.down.Store(true) // the request path fails: everything is left to the dispatchers
		handleAll(t, f.bus, domain.CreateBatch{Ref: "b1", SKU: "SHARED", Qty: 1000})
		for i := range 30 {
			handleAll(t, f.bus, domain.Allocate{OrderID: fmt.Sprintf("o%02d", i), SKU: "SHARED", Qty: 1})
		}
		f.publisher.down.Store(false)
		for range 3 {
			f.runDispatcher(t)
		}
		testenv.Eventually(t, 20*time.Second, func() error {
			if d, _ := f.publisher.count(); d != 30 {
				return fmt.Errorf("published %d of 30", d)
			}
			return nil
		})
		distinct, total := f.publisher.count()
		f.publisher.mu.Lock()
		defer f.publisher.mu.Unlock()
		for i, id := range f.publisher.order {
			if id != fmt.Sprintf("o%02d", i) {
				t.Fatalf("published out of order: %v", f.publisher.order)
			}
		}
		if distinct != 30 || total != 30 {
			t.Fatalf("published %d distinct, %d total; want each of 30 once", distinct, total)
		}
	})
}

func TestInboxProcessesAMessageIDOnce(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		f := newOutbox(t, open)
		handleAll(t, f.bus, domain.CreateBatch{Ref: "b1", SKU: "INBOX", Qty: 10})
		ctx := context.Background()
		if _, err := f.bus.HandleMessage(ctx, "msg-1", domain.ChangeBatchQuantity{Ref: "b1", Qty: 5}); err != nil {
			t.Fatal(err)
		}
		handleAll(t, f.bus, domain.ChangeBatchQuantity{Ref: "b1", Qty: 8})
		// Redelivered, concurrently with itself.
		errs := make(chan error, 3)
		for range 3 {
			go func() {
				_, err := f.bus.HandleMessage(ctx, "msg-1", domain.ChangeBatchQuantity{Ref: "b1", Qty: 5})
				errs <- err
			}()
		}
		for range 3 {
			if err := <-errs; !errors.Is(err, servicelayer.ErrDuplicateMessage) {
				t.Fatalf("got %v, want ErrDuplicateMessage", err)
			}
		}
		if n := f.count(t, `SELECT purchased_quantity FROM batches WHERE reference = 'b1'`); n != 8 {
			t.Fatalf("purchased %d, want the newer 8", n)
		}
	})
}

// Deallocated keeps the batch the line left through the event log; a row
// written before it named one decodes with none.
func TestTheEventLogKeepsTheBatchADeallocatedLineLeft(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		ctx := context.Background()
		bus, db := busOn(t, open)
		sku, ref, order := testenv.RandomName("sku-"), testenv.RandomName("batch-"), testenv.RandomName("order-")
		if _, err := bus.Handle(ctx, domain.CreateBatch{Ref: ref, SKU: sku, Qty: 10}); err != nil {
			t.Fatal(err)
		}
		if _, err := bus.Handle(ctx, domain.Allocate{OrderID: order, SKU: sku, Qty: 3}); err != nil {
			t.Fatal(err)
		}
		// The change through the unit of work alone: its deliveries stay due.
		if _, err := db.store.Do(ctx, func(tx servicelayer.Tx) error {
			p, err := tx.Products().Get(ctx, sku)
			if err != nil {
				return err
			}
			return p.ChangeBatchQuantity(ref, 0)
		}); err != nil {
			t.Fatal(err)
		}
		// Read back as the dispatcher reads it, once the deliveries' grace
		// for the process that committed them is over.
		deallocated := func() domain.Deallocated {
			t.Helper()
			var ev domain.Deallocated
			testenv.Eventually(t, 10*time.Second, func() error {
				due, err := db.store.Due(ctx, 100)
				if err != nil {
					return err
				}
				for _, d := range due {
					var ok bool
					if ev, ok = d.Event.(domain.Deallocated); ok {
						return nil
					}
				}
				return fmt.Errorf("no deallocated event among the due deliveries %v", due)
			})
			return ev
		}

		if got, want := deallocated(), (domain.Deallocated{OrderID: order, SKU: sku, Qty: 3, BatchRef: ref}); got != want {
			t.Fatalf("from the log: %+v, want %+v", got, want)
		}
		old := fmt.Sprintf(`{"orderid":%q,"sku":%q,"qty":3}`, order, sku)
		if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE event_log SET payload = ? WHERE name = 'deallocated'`), old); err != nil {
			t.Fatal(err)
		}
		if got, want := deallocated(), (domain.Deallocated{OrderID: order, SKU: sku, Qty: 3}); got != want {
			t.Fatalf("from an old row: %+v, want %+v", got, want)
		}
	})
}

// Completing a delivery that a later one of its product waits for wakes
// the dispatchers, whether the handler changed something stored (the
// completion is part of its write) or not (marked done a moment later).
func TestCompletingADeliveryWakesTheOneWaitingForIt(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		store, ctx := open(t).store, context.Background()
		storetest.AddStock(t, store, "BELL", "BELL-b", 10, time.Time{})
		allocate := func(id string) servicelayer.Delivery {
			t.Helper()
			queued, err := store.Do(ctx, func(tx servicelayer.Tx) error {
				p, err := tx.Products().Get(ctx, "BELL")
				if err != nil {
					return err
				}
				_, err = p.Allocate(domain.OrderLine{OrderID: id, SKU: "BELL", Qty: 1})
				return err
			})
			if err != nil || len(queued) == 0 {
				t.Fatalf("allocate %s: %v, %v", id, queued, err)
			}
			return queued[0]
		}
		drain := func() {
			for {
				select {
				case <-store.Wake():
				default:
					return
				}
			}
		}
		woken := func(how string) {
			t.Helper()
			select {
			case <-store.Wake():
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: the dispatchers were not woken", how)
			}
		}
		first, second, _ := allocate("o1"), allocate("o2"), allocate("o3")
		drain()
		// The handler allocates another line: its write completes the delivery.
		if _, err := store.Deliver(ctx, first, func(tx servicelayer.Tx) error {
			p, err := tx.Products().Get(ctx, "BELL")
			if err != nil {
				return err
			}
			_, err = p.Allocate(domain.OrderLine{OrderID: "o4", SKU: "BELL", Qty: 1})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		woken("a write that completes a delivery")
		drain()
		// The handler changes nothing: the delivery is marked done later.
		if _, err := store.Deliver(ctx, second, func(servicelayer.Tx) error { return nil }); err != nil {
			t.Fatal(err)
		}
		woken("marking a delivery done")
	})
}
