package turns

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"allocation/adapters/sqlstore/internal/parked"
)

// waitFor is how long a test waits for something that should happen at once.
const waitFor = 5 * time.Second

func take(t *testing.T, tu *Turns, sku string) func() {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	release, err := tu.Take(ctx, sku)
	if err != nil {
		t.Fatalf("take %s: %v", sku, err)
	}
	return release
}

// waitParked waits until n goroutines are blocked waiting in Take, so that
// the order in which they wait is known.
func waitParked(t *testing.T, n int) {
	t.Helper()
	parked.Wait(t, "turns.(*Turns).Take", n, waitFor)
}

func assertForgotten(t *testing.T, tu *Turns) {
	t.Helper()
	tu.mu.Lock()
	defer tu.mu.Unlock()
	if len(tu.turns) != 0 {
		t.Fatalf("%d turns remembered after every one was given back, want none", len(tu.turns))
	}
}

func TestOneHolderAtATime(t *testing.T) {
	tu := New()
	release := take(t, tu, "a")
	if _, ok := tu.TryTake("a"); ok {
		t.Fatal("a second holder took a turn that was held")
	}
	release()
	again, ok := tu.TryTake("a")
	if !ok {
		t.Fatal("a free turn was refused")
	}
	again()
	assertForgotten(t, tu)
}

func TestManyWritersHoldOneAtATime(t *testing.T) {
	tu := New()
	var holders atomic.Int32
	var together atomic.Bool
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			for range 50 {
				release := take(t, tu, "a")
				if holders.Add(1) != 1 {
					together.Store(true)
				}
				holders.Add(-1)
				release()
			}
		})
	}
	wg.Wait()
	if together.Load() {
		t.Fatal("two writers held the turn at once")
	}
	assertForgotten(t, tu)
}

func TestDifferentProductsDoNotWait(t *testing.T) {
	tu := New()
	releaseA := take(t, tu, "a")
	releaseB := take(t, tu, "b") // fails the test if it waits past the bound
	releaseC, ok := tu.TryTake("c")
	if !ok {
		t.Fatal("the turn of c was refused while only a and b were held")
	}
	releaseA()
	releaseB()
	releaseC()
	assertForgotten(t, tu)
}

func TestWaitersGetTheTurnInOrder(t *testing.T) {
	tu := New()
	release := take(t, tu, "a")
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			r := take(t, tu, "a")
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			r()
		})
		waitParked(t, i+1)
	}
	release()
	wg.Wait()
	if !slices.Equal(order, []int{0, 1, 2}) {
		t.Fatalf("waiters got the turn in the order %v, want the order they came in", order)
	}
	assertForgotten(t, tu)
}

func TestCancelWhileWaiting(t *testing.T) {
	tu := New()
	release := take(t, tu, "a")
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 1)
	go func() {
		r, err := tu.Take(ctx, "a")
		if r != nil {
			r()
		}
		errs <- err
	}()
	waitParked(t, 1)
	cancel()
	select {
	case err := <-errs:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled waiter got %v, want context.Canceled", err)
		}
	case <-time.After(waitFor):
		t.Fatal("a cancelled waiter kept waiting")
	}
	release()
	assertForgotten(t, tu)
}

func TestReleaseTwiceIsHarmless(t *testing.T) {
	tu := New()
	first := take(t, tu, "a")
	first()
	second := take(t, tu, "a")
	first() // must not give back the second holder's turn
	if _, ok := tu.TryTake("a"); ok {
		t.Fatal("releasing twice gave back someone else's turn")
	}
	second()
	second()
	assertForgotten(t, tu)
}
