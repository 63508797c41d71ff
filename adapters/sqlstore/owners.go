package sqlstore

import "sync"

// maxOwners bounds the batch-to-product cache; when it is full it starts
// over, which costs a lookup per batch and nothing else.
const maxOwners = 100_000

// ownerCache remembers which product each batch belongs to.
type ownerCache struct {
	mu   sync.RWMutex
	skus map[string]string // batch ref -> sku
}

func (c *ownerCache) get(ref string) (string, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	sku, ok := c.skus[ref]
	return sku, ok
}

func (c *ownerCache) put(ref, sku string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.skus) >= maxOwners {
		c.skus = map[string]string{}
	}
	c.skus[ref] = sku
}
