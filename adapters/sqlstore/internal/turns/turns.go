// Package turns gives the writers of one product in this process turns, one
// at a time, so that their optimistic writes rarely conflict and the
// product's events go out in order. The turns are an optimisation only: the
// version check in the database keeps writers apart in any case, across
// processes too.
//
// Whoever waits for a turn gets it in the order they came: a released turn
// passes straight to the first waiter, never to a newcomer.
package turns

import (
	"context"
	"sync"
)

// Turns are the turns of every product someone holds or waits for.
type Turns struct {
	mu    sync.Mutex
	turns map[string]*turn
}

type turn struct {
	token chan struct{} // holds a token while the turn is taken
	users int           // holders and waiters; the turn is forgotten at 0
}

// New returns turns on no product yet.
func New() *Turns {
	return &Turns{turns: map[string]*turn{}}
}

// Take waits for the turn of sku, until ctx ends, and returns the function
// that gives it back. When ctx ended it returns ctx's error.
func (t *Turns) Take(ctx context.Context, sku string) (release func(), err error) {
	tu := t.join(sku)
	select {
	case tu.token <- struct{}{}:
		return t.releaser(sku, tu), nil
	case <-ctx.Done():
		t.leave(sku, tu)
		return nil, ctx.Err()
	}
}

// TryTake takes the turn of sku only if it is free, and returns the function
// that gives it back; ok is false when someone else holds it.
func (t *Turns) TryTake(sku string) (release func(), ok bool) {
	tu := t.join(sku)
	select {
	case tu.token <- struct{}{}:
		return t.releaser(sku, tu), true
	default:
		t.leave(sku, tu)
		return nil, false
	}
}

// join counts one more user of sku's turn, making the turn if needed.
func (t *Turns) join(sku string) *turn {
	t.mu.Lock()
	defer t.mu.Unlock()
	tu, ok := t.turns[sku]
	if !ok {
		tu = &turn{token: make(chan struct{}, 1)}
		t.turns[sku] = tu
	}
	tu.users++
	return tu
}

// releaser gives the turn back once, however often it is called.
func (t *Turns) releaser(sku string, tu *turn) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			<-tu.token
			t.leave(sku, tu)
		})
	}
}

// leave counts one user less, and forgets the turn when nobody uses it.
func (t *Turns) leave(sku string, tu *turn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tu.users--
	if tu.users == 0 {
		delete(t.turns, sku)
	}
}
