package integration_test

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
	"allocation/tests/testenv"
)

// flashSale is a product whose turn a test holds while allocations queue
// for it, so that they wait together.
type flashSale struct {
	t     *testing.T
	bus   *servicelayer.Bus
	db    testDB
	pub   *recordingPublisher
	sku   string
	hold  servicelayer.Work
	wg    sync.WaitGroup
	mu    sync.Mutex
	refs  map[string]string // orderid -> batchref answered
	errs  map[string]error  // orderid -> error answered
	start [2]int64          // Coalesced() before
}

func newFlashSale(t *testing.T, open opener, stock int) *flashSale {
	db := open(t)
	pub := &recordingPublisher{}
	bus := servicelayer.NewBus(servicelayer.Dependencies{UoW: db.store, Publisher: pub, Notifier: nopNotifier{}})
	f := &flashSale{t: t, bus: bus, db: db, pub: pub, sku: testenv.RandomName("FLASH-"), refs: map[string]string{}, errs: map[string]error{}}
	if _, err := bus.Handle(context.Background(), domain.CreateBatch{Ref: "b1", SKU: f.sku, Qty: stock}); err != nil {
		t.Fatal(err)
	}
	return f
}

// holdTurn takes the product's turn with a piece of work that reads it and
// changes nothing, until release.
func (f *flashSale) holdTurn() {
	f.start[0], f.start[1] = f.db.store.Coalesced()
	f.hold = f.db.store.Begin()
	line := domain.OrderLine{OrderID: "holder", SKU: f.sku, Qty: 1}
	if _, err := f.hold.Do(context.Background(), "", func(tx servicelayer.Tx) error {
		_, err := tx.Products().GetForLine(context.Background(), line)
		return err
	}); err != nil {
		f.t.Fatal(err)
	}
}

// allocate queues an allocation of one unit for order, through the bus; a
// messageID makes it an inbound message.
func (f *flashSale) allocate(order, messageID string) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		cmd := domain.Allocate{OrderID: order, SKU: f.sku, Qty: 1}
		var res servicelayer.Result
		var err error
		if messageID == "" {
			res, err = f.bus.Handle(context.Background(), cmd)
		} else {
			res, err = f.bus.HandleMessage(context.Background(), messageID, cmd)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.refs[order], f.errs[order] = res.BatchRef, err
	}()
}

// awaitWaiting waits, at most 10 s, until n allocations wait in the
// product's group.
func (f *flashSale) awaitWaiting(n int) {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for f.db.store.WaitingInGroup(f.sku) < n {
		if time.Now().After(deadline) {
			f.t.Fatalf("%d allocations wait in the group after 10 s, want %d", f.db.store.WaitingInGroup(f.sku), n)
		}
		time.Sleep(time.Millisecond) // polling a condition, bounded above
	}
}

// release waits until n allocations wait in the product's group, lets the
// turn go and waits for every answer.
func (f *flashSale) release(n int) {
	f.awaitWaiting(n)
	f.hold.End()
	f.wg.Wait()
}

// grouped is how many allocations were decided in groups since holdTurn.
func (f *flashSale) grouped() int64 {
	_, members := f.db.store.Coalesced()
	return members - f.start[1]
}

// published are the order ids of the line_allocated sent, in order.
func (f *flashSale) published() []string {
	f.pub.mu.Lock()
	defer f.pub.mu.Unlock()
	var ids []string
	for _, env := range f.pub.sent {
		if a, ok := env.Event.(domain.Allocated); ok {
			ids = append(ids, a.OrderID)
		}
	}
	return ids
}

// Thirty allocations of one unit wait for a product that has twenty: they
// are decided together, as they would have been one at a time: twenty get
// the batch, ten are out of stock, the version moved once per allocation,
// and the line_allocated go out in the order the event log has them, in one
// call of the publisher.
func TestAllocationsWaitingForOneProductAreDecidedTogether(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		f := newFlashSale(t, open, 20)
		f.holdTurn()
		for i := range 30 {
			f.allocate(fmt.Sprintf("o%d", i), "")
		}
		f.release(30)

		allocated := 0
		for order, err := range f.errs {
			if err != nil {
				t.Errorf("%s: %v", order, err)
			}
			if f.refs[order] == "b1" {
				allocated++
			}
		}
		if allocated != 20 {
			t.Errorf("%d allocations answered b1, want 20", allocated)
		}
		if n := f.grouped(); n != 30 {
			t.Errorf("%d allocations decided in a group, want 30", n)
		}
		var lines, version, outOfStock int
		mustGet(t, f.db, &lines, `SELECT count(*) FROM allocations`)
		mustGet(t, f.db, &version, `SELECT version_number FROM products`)
		mustGet(t, f.db, &outOfStock, `SELECT count(*) FROM event_log WHERE name = 'out_of_stock'`)
		if lines != 20 || version != 21 || outOfStock != 10 {
			t.Errorf("lines %d, version %d, OutOfStock events %d; want 20, 21, 10", lines, version, outOfStock)
		}
		var logged []string
		if err := f.db.Select(&logged, `SELECT orderid FROM event_log WHERE name = 'allocated' ORDER BY id`); err != nil {
			t.Fatal(err)
		}
		if got := f.published(); !slices.Equal(got, logged) {
			t.Errorf("line_allocated sent for %v, want the event log's order %v", got, logged)
		}
		if f.pub.calls != 1 {
			t.Errorf("the publisher was called %d times, want once for the group", f.pub.calls)
		}
	})
}

// One allocation of a group repeats an inbound message processed before:
// it alone is refused; the others are written.
func TestARepeatedMessageInAGroupIsRefusedAlone(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		f := newFlashSale(t, open, 100)
		if _, err := f.bus.HandleMessage(context.Background(), "msg-seen", domain.Allocate{OrderID: "first", SKU: f.sku, Qty: 1}); err != nil {
			t.Fatal(err)
		}
		f.holdTurn()
		for i := range 9 {
			f.allocate(fmt.Sprintf("o%d", i), fmt.Sprintf("msg-%d", i))
		}
		f.allocate("again", "msg-seen")
		f.release(10)

		if !errors.Is(f.errs["again"], servicelayer.ErrDuplicateMessage) {
			t.Errorf("the repeated message: %v, want ErrDuplicateMessage", f.errs["again"])
		}
		for i := range 9 {
			if order := fmt.Sprintf("o%d", i); f.errs[order] != nil || f.refs[order] != "b1" {
				t.Errorf("%s: %q, %v; want b1", order, f.refs[order], f.errs[order])
			}
		}
		var lines int
		mustGet(t, f.db, &lines, `SELECT count(*) FROM allocations`)
		if lines != 10 {
			t.Errorf("%d lines, want 10 (the first and nine)", lines)
		}
	})
}

// A member whose handler fails after allocating fails with its own error
// and leaves nothing; the others are written, and one whose handler fails
// before changing anything does not send them back.
func TestAFailingMemberOfAGroupFailsAlone(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		f := newFlashSale(t, open, 100)
		f.holdTurn()
		boom := errors.New("handler failed")
		outcome := map[string]error{}
		var mu sync.Mutex
		run := func(order string, failAfter, failBefore bool) {
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				line := domain.OrderLine{OrderID: order, SKU: f.sku, Qty: 1}
				_, err := f.db.store.Do(context.Background(), func(tx servicelayer.Tx) error {
					p, err := tx.Products().GetForLine(context.Background(), line)
					if err != nil || failBefore {
						return errors.Join(err, boom)
					}
					if _, err := p.Allocate(line); err != nil {
						return err
					}
					if failAfter {
						return boom
					}
					return nil
				})
				mu.Lock()
				outcome[order] = err
				mu.Unlock()
			}()
		}
		run("o1", false, false)
		run("before", false, true)
		run("o2", false, false)
		run("after", true, false)
		run("o3", false, false)
		f.release(5)

		for order, err := range outcome {
			wantErr := order == "before" || order == "after"
			if wantErr != errors.Is(err, boom) || (!wantErr && err != nil) {
				t.Errorf("%s: %v", order, err)
			}
		}
		var lines []string
		if err := f.db.Select(&lines, `SELECT orderid FROM allocations ORDER BY orderid`); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(lines, []string{"o1", "o2", "o3"}) {
			t.Errorf("allocated %v, want o1, o2, o3", lines)
		}
	})
}

// An allocation that gives up while it waits in a group leaves it: the
// others are written without it, and the product's turn is free again
// afterwards.
func TestAnAllocationThatGivesUpLeavesItsGroup(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		f := newFlashSale(t, open, 100)
		f.holdTurn()
		for i := range 3 {
			f.allocate(fmt.Sprintf("o%d", i), "")
		}
		ctx, cancel := context.WithCancel(context.Background())
		gaveUp := make(chan error, 1)
		go func() {
			_, err := f.bus.Handle(ctx, domain.Allocate{OrderID: "impatient", SKU: f.sku, Qty: 1})
			gaveUp <- err
		}()
		f.awaitWaiting(4)
		cancel()
		if err := <-gaveUp; !errors.Is(err, context.Canceled) {
			t.Errorf("the allocation that gave up: %v, want context.Canceled", err)
		}
		f.release(0)

		for i := range 3 {
			if order := fmt.Sprintf("o%d", i); f.errs[order] != nil || f.refs[order] != "b1" {
				t.Errorf("%s: %q, %v; want b1", order, f.refs[order], f.errs[order])
			}
		}
		var lines []string
		if err := f.db.Select(&lines, `SELECT orderid FROM allocations ORDER BY orderid`); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(lines, []string{"o0", "o1", "o2"}) {
			t.Errorf("allocated %v, want o0, o1, o2", lines)
		}
		afterCtx, done := context.WithTimeout(context.Background(), 10*time.Second)
		defer done()
		if res, err := f.bus.Handle(afterCtx, domain.Allocate{OrderID: "later", SKU: f.sku, Qty: 1}); err != nil || res.BatchRef != "b1" {
			t.Errorf("an allocation after the group: %q, %v; want b1 (the turn must be free)", res.BatchRef, err)
		}
	})
}
