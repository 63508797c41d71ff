package sqlstore

import (
	"context"
	"sync"

	"allocation/servicelayer"
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

// lockProduct takes the product's lock for the rest of the hold in ctx, or
// of the session when there is none. Only the first lock of a piece of work
// is waited for; while holding one, another is only taken when free, so two
// pieces of work can never wait for each other.
func (s *session) lockProduct(ctx context.Context, sku string) error {
	key := "product:" + sku
	hold := servicelayer.HoldOf(ctx)
	if hold != nil && hold.Has(key) || s.locked[key] {
		return nil
	}
	first := len(s.locked) == 0 && (hold == nil || hold.Empty())
	release, err := s.store.locks.acquire(ctx, sku, first)
	if err != nil {
		return err
	}
	if release == nil {
		return nil // busy: the version check keeps us apart
	}
	s.locked[key] = true
	if hold != nil {
		hold.Keep(key, release)
	} else {
		s.releases = append(s.releases, release)
	}
	return nil
}
