// Package cache holds the store's bounded maps: what it remembers to skip a
// read (a product as last read or written, the product a batch belongs to).
// They are hints, so forgetting an entry only costs a read; what matters is
// that they never grow past their bound, however many products there are.
package cache

import "sync"

// Bounded is a map safe for concurrent use that holds at most max entries:
// when it is full, an arbitrary entry makes room for a new one. Reads share
// the lock, so lookups on the hot path do not queue behind each other.
type Bounded[K comparable, V any] struct {
	mu  sync.RWMutex
	m   map[K]V
	max int
}

// New returns an empty map that holds at most max entries.
func New[K comparable, V any](max int) *Bounded[K, V] {
	return &Bounded[K, V]{m: map[K]V{}, max: max}
}

// Get returns the value of k, and whether there is one.
func (b *Bounded[K, V]) Get(k K) (V, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	v, ok := b.m[k]
	return v, ok
}

// Put sets the value of k. A new key in a full map evicts one other entry,
// whichever the map's iteration yields first; replacing a key evicts none.
func (b *Bounded[K, V]) Put(k K, v V) {
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

// Forget drops k.
func (b *Bounded[K, V]) Forget(k K) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.m, k)
}
