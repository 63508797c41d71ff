package sqlstore

import (
	"context"
	"sync"
)

// productLocks are in-process locks, one per product: writers of a product
// in this process take turns, so that their optimistic writes rarely
// conflict and its events go out in order. They are an optimisation only:
// the version check in the database keeps writers apart in any case.
type productLocks struct {
	mu    sync.Mutex
	locks map[string]*productLock
}

type productLock struct {
	turn  chan struct{} // holds a token while the lock is taken
	users int           // holders and waiters; the lock is forgotten at 0
}

// acquire takes the lock of sku. It waits for it (until ctx ends) when wait
// is set, and otherwise only takes it if it is free. It returns the release
// function, or nil when the lock was not taken.
func (l *productLocks) acquire(ctx context.Context, sku string, wait bool) (func(), error) {
	l.mu.Lock()
	pl, ok := l.locks[sku]
	if !ok {
		pl = &productLock{turn: make(chan struct{}, 1)}
		l.locks[sku] = pl
	}
	pl.users++
	l.mu.Unlock()

	taken := false
	if wait {
		select {
		case pl.turn <- struct{}{}:
			taken = true
		case <-ctx.Done():
		}
	} else {
		select {
		case pl.turn <- struct{}{}:
			taken = true
		default:
		}
	}
	if !taken {
		l.forget(sku, pl)
		return nil, ctx.Err()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			<-pl.turn
			l.forget(sku, pl)
		})
	}, nil
}

func (l *productLocks) forget(sku string, pl *productLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	pl.users--
	if pl.users == 0 {
		delete(l.locks, sku)
	}
}

// lockProduct takes the product's lock for the rest of the piece of work.
// Only the first lock of a piece of work is waited for; while holding one,
// another is only taken when free, so two pieces of work can never wait for
// each other.
func (w *Work) lockProduct(ctx context.Context, sku string) error {
	if w.held[sku] {
		return nil
	}
	release, err := w.store.locks.acquire(ctx, sku, len(w.held) == 0)
	if err != nil {
		return err
	}
	if release == nil {
		return nil // busy: the version check keeps us apart
	}
	w.held[sku] = true
	w.releases = append(w.releases, release)
	return nil
}
