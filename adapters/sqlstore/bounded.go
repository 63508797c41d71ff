package sqlstore

import "sync"

// bounded is a map safe for concurrent use that holds at most max entries:
// when it is full, an arbitrary entry makes room. The store's caches are
// hints, so forgetting one only costs a read.
type bounded[K comparable, V any] struct {
	mu  sync.RWMutex
	m   map[K]V
	max int
}

func newBounded[K comparable, V any](max int) *bounded[K, V] {
	return &bounded[K, V]{m: map[K]V{}, max: max}
}

func (b *bounded[K, V]) get(k K) (V, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	v, ok := b.m[k]
	return v, ok
}

func (b *bounded[K, V]) put(k K, v V) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.m[k]; !ok && len(b.m) >= b.max {
		for evicted := range b.m {
			delete(b.m, evicted)
			break
		}
	}
	b.m[k] = v
}

func (b *bounded[K, V]) forget(k K) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.m, k)
}
