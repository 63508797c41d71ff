package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"github.com/jmoiron/sqlx"

	"allocation/domain"
	"allocation/servicelayer"
)

// readModel keeps allocations_view in step, inside the handler's transaction.
type readModel tx

// Add records that line is in batchRef; a redelivery rewrites the same row.
func (m *readModel) Add(ctx context.Context, line domain.OrderLine, batchRef string) error {
	if _, err := m.sql.ExecContext(ctx, `
		INSERT INTO allocations_view (orderid, sku, qty, batchref) VALUES ($1, $2, $3, $4)
		ON CONFLICT (orderid, sku, qty) DO UPDATE SET batchref = EXCLUDED.batchref`,
		line.OrderID, line.SKU, line.Qty, batchRef); err != nil {
		return fmt.Errorf("add %s/%s to allocations view: %w", line.OrderID, line.SKU, err)
	}
	return nil
}

// Remove forgets line; removing it twice is harmless.
func (m *readModel) Remove(ctx context.Context, line domain.OrderLine) error {
	if _, err := m.sql.ExecContext(ctx,
		`DELETE FROM allocations_view WHERE orderid = $1 AND sku = $2 AND qty = $3`,
		line.OrderID, line.SKU, line.Qty); err != nil {
		return fmt.Errorf("remove %s/%s from allocations view: %w", line.OrderID, line.SKU, err)
	}
	return nil
}

// Views answers queries from the read model, outside any unit of work.
type Views struct {
	db     *sqlx.DB
	owners ownerCache
}

func NewViews(db *sqlx.DB) *Views {
	return &Views{db: db, owners: ownerCache{skus: map[string]string{}}}
}

// MaxCachedOwners bounds the batch -> product mappings ProductOfBatch keeps
// (a few hundred bytes each at most).
const MaxCachedOwners = 10_000

// ownerCache remembers which product a batch belongs to. A batch never
// changes product, so a mapping never goes stale; "not found" is not kept,
// since the batch may be created any moment.
type ownerCache struct {
	mu   sync.Mutex
	skus map[string]string // batch reference -> SKU
}

func (c *ownerCache) get(ref string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	sku, ok := c.skus[ref]
	return sku, ok
}

func (c *ownerCache) put(ref, sku string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.skus[ref]; !ok && len(c.skus) >= MaxCachedOwners {
		// Full: forget one mapping. Map iteration starts anywhere, so this
		// is random eviction, which costs nothing to keep track of; a
		// forgotten mapping is one query away.
		for old := range c.skus {
			delete(c.skus, old)
			break
		}
	}
	c.skus[ref] = sku
}

// ProductOfBatch says which product batch ref belongs to; found is false for
// an unknown batch. The consumer asks for every change_batch_quantity, so
// known answers come from memory.
func (v *Views) ProductOfBatch(ctx context.Context, ref string) (sku string, found bool, err error) {
	if sku, ok := v.owners.get(ref); ok {
		return sku, true, nil
	}
	err = v.db.GetContext(ctx, &sku, `SELECT sku FROM batches WHERE reference = $1`, ref)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, unavailable(fmt.Errorf("find the product of batch %s: %w", ref, err))
	}
	v.owners.put(ref, sku)
	return sku, true, nil
}

// Allocations lists where each line of an order went, in allocation order.
func (v *Views) Allocations(ctx context.Context, orderID string) ([]servicelayer.Allocation, error) {
	rows := []struct {
		SKU      string `db:"sku"`
		BatchRef string `db:"batchref"`
	}{}
	if err := v.db.SelectContext(ctx, &rows,
		`SELECT sku, batchref FROM allocations_view WHERE orderid = $1 ORDER BY id`, orderID); err != nil {
		return nil, unavailable(fmt.Errorf("query allocations of %s: %w", orderID, err))
	}
	out := make([]servicelayer.Allocation, len(rows))
	for i, r := range rows {
		out[i] = servicelayer.Allocation{SKU: r.SKU, BatchRef: r.BatchRef}
	}
	return out, nil
}
