package sqlstore

import (
	"slices"
	"time"

	"allocation/adapters/sqlstore/internal/cache"
	"allocation/domain"
)

// maxCachedProducts bounds the product cache.
const maxCachedProducts = 10_000

// productCache keeps each product as this process last read or wrote it:
// its version and its batches with their allocated totals, no lines. An
// allocation starts from it instead of reading the database; the write
// checks the version as always, so a stale entry costs a conflict and a
// fresh read, never a wrong answer. A line that turns out to be allocated
// already is refused by the allocations key the same way.
type productCache struct {
	entries *cache.Bounded[string, cachedProduct]
}

type cachedProduct struct {
	version int
	batches []cachedBatch
}

type cachedBatch struct {
	id                   int64
	ref                  string
	purchased, allocated int
	eta                  time.Time
}

func (c *productCache) get(sku string) (cachedProduct, bool) { return c.entries.Get(sku) }

func (c *productCache) forget(sku string) { c.entries.Forget(sku) }

// put remembers p, whose stored batches have the ids in snap.
func (c *productCache) put(p *domain.Product, snap productSnapshot) {
	entry := cachedProduct{version: p.Version()}
	for _, b := range p.Batches() {
		old, stored := snap.batches[b.Ref()]
		if !stored {
			c.forget(p.SKU()) // a new batch: its id is the database's
			return
		}
		entry.batches = append(entry.batches, cachedBatch{id: old.id, ref: b.Ref(), purchased: b.PurchasedQty(), allocated: b.AllocatedQty(), eta: b.ETA()})
	}
	c.entries.Put(p.SKU(), entry)
}

// restore builds the product and its snapshot from the entry.
func (e cachedProduct) restore(sku string) (*domain.Product, productSnapshot) {
	snap := productSnapshot{version: e.version, batches: make(map[string]batchSnapshot, len(e.batches))}
	batches := make([]*domain.Batch, len(e.batches))
	for i, b := range e.batches {
		snap.batches[b.ref] = batchSnapshot{id: b.id, purchased: b.purchased, allocated: b.allocated}
		batches[i] = domain.RestoreBatch(b.ref, sku, b.purchased, b.allocated, b.eta, nil)
	}
	return domain.RestoreProduct(sku, e.version, slices.Clip(batches)), snap
}

// MaxCachedOwners bounds the batch-to-product cache: a batch never changes
// product, so what was found once is remembered, up to this many.
const MaxCachedOwners = 10_000
