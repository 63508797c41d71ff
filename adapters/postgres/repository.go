package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/lib/pq"

	"allocation/domain"
)

// productSnapshot is a product as it was loaded, so that saving writes only
// what changed.
type productSnapshot struct {
	version int
	batches map[string]batchSnapshot // by reference
}

type batchSnapshot struct {
	id        int64
	purchased int
	allocated int
	lines     []domain.OrderLine // the loaded ones
}

// repository is the Products port of one transaction.
type repository tx

// lineQuery selects (batch_id, orderid, qty) of the allocated lines to load,
// oldest first; $1 is the product's batch ids, the other arguments its own.
type lineQuery struct {
	sql  string
	args []any
}

// Get loads the product with every allocated line.
func (r *repository) Get(ctx context.Context, sku string) (*domain.Product, error) {
	return r.get(ctx, sku, lineQuery{sql: `SELECT batch_id, orderid, qty FROM allocations WHERE batch_id = ANY($1) ORDER BY id`})
}

// GetForLine loads the batches with their allocated totals and only line
// itself, where it is allocated: the cost does not grow with the product's
// history.
func (r *repository) GetForLine(ctx context.Context, line domain.OrderLine) (*domain.Product, error) {
	return r.get(ctx, line.SKU, lineQuery{
		sql:  `SELECT batch_id, orderid, qty FROM allocations WHERE batch_id = ANY($1) AND orderid = $2 AND sku = $3 AND qty = $4`,
		args: []any{line.OrderID, line.SKU, line.Qty},
	})
}

// GetByBatchRef loads the product holding ref with the lines of that batch.
func (r *repository) GetByBatchRef(ctx context.Context, ref string) (*domain.Product, error) {
	for _, p := range r.seen {
		if p.Batch(ref) != nil {
			return p, nil
		}
	}
	var sku string
	err := r.sql.GetContext(ctx, &sku, `SELECT sku FROM batches WHERE reference = $1`, ref)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, unavailable(fmt.Errorf("find batch %s: %w", ref, err))
	}
	return r.get(ctx, sku, lineQuery{
		sql:  `SELECT a.batch_id, a.orderid, a.qty FROM allocations a JOIN batches b ON b.id = a.batch_id WHERE a.batch_id = ANY($1) AND b.reference = $2 ORDER BY a.id`,
		args: []any{ref},
	})
}

// get locks the product row before reading its batches, so that concurrent
// writers of one product take turns instead of overwriting each other. A
// product already handed out in this transaction is returned as it is.
func (r *repository) get(ctx context.Context, sku string, lines lineQuery) (*domain.Product, error) {
	for _, p := range r.seen {
		if p.SKU() == sku {
			return p, nil
		}
	}
	var version int
	err := r.sql.GetContext(ctx, &version, `SELECT version_number FROM products WHERE sku = $1 FOR UPDATE`, sku)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, unavailable(fmt.Errorf("lock product %s: %w", sku, err))
	}
	p, snap, err := r.load(ctx, sku, version, lines)
	if err != nil {
		return nil, err
	}
	r.seen = append(r.seen, p)
	r.snapshots[sku] = snap
	return p, nil
}

// Add inserts the product row at once, which also locks it; a concurrent
// creator of the same SKU makes this a conflict, and the retry finds it.
func (r *repository) Add(ctx context.Context, p *domain.Product) error {
	res, err := r.sql.ExecContext(ctx,
		`INSERT INTO products (sku, version_number) VALUES ($1, $2) ON CONFLICT (sku) DO NOTHING`,
		p.SKU(), p.Version())
	if err != nil {
		return fmt.Errorf("insert product %s: %w", p.SKU(), err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("product %s created concurrently: %w", p.SKU(), errConflict)
	}
	r.seen = append(r.seen, p)
	r.snapshots[p.SKU()] = productSnapshot{version: p.Version(), batches: map[string]batchSnapshot{}}
	return nil
}

func (r *repository) Seen() []*domain.Product { return slices.Clone(r.seen) }

type batchRow struct {
	ID        int64        `db:"id"`
	Reference string       `db:"reference"`
	Purchased int          `db:"purchased_quantity"`
	Allocated int          `db:"allocated_quantity"`
	ETA       sql.NullTime `db:"eta"`
}

type lineRow struct {
	BatchID int64  `db:"batch_id"`
	OrderID string `db:"orderid"`
	Qty     int    `db:"qty"`
}

func (r *repository) load(ctx context.Context, sku string, version int, lines lineQuery) (*domain.Product, productSnapshot, error) {
	var batchRows []batchRow
	if err := r.sql.SelectContext(ctx, &batchRows,
		`SELECT id, reference, purchased_quantity, allocated_quantity, eta FROM batches WHERE sku = $1 ORDER BY id`, sku); err != nil {
		return nil, productSnapshot{}, fmt.Errorf("load batches of %s: %w", sku, err)
	}
	ids := make([]int64, len(batchRows))
	for i, b := range batchRows {
		ids[i] = b.ID
	}
	var lineRows []lineRow
	if err := r.sql.SelectContext(ctx, &lineRows, lines.sql, append([]any{pq.Array(ids)}, lines.args...)...); err != nil {
		return nil, productSnapshot{}, fmt.Errorf("load allocations of %s: %w", sku, err)
	}
	linesOf := map[int64][]domain.OrderLine{}
	for _, l := range lineRows {
		linesOf[l.BatchID] = append(linesOf[l.BatchID], domain.OrderLine{OrderID: l.OrderID, SKU: sku, Qty: l.Qty})
	}
	snap := productSnapshot{version: version, batches: make(map[string]batchSnapshot, len(batchRows))}
	batches := make([]*domain.Batch, len(batchRows))
	for i, b := range batchRows {
		loaded := linesOf[b.ID]
		snap.batches[b.Reference] = batchSnapshot{id: b.ID, purchased: b.Purchased, allocated: b.Allocated, lines: loaded}
		batches[i] = domain.RestoreBatchInPart(b.Reference, sku, b.Purchased, b.Allocated, b.ETA.Time, slices.Clone(loaded))
	}
	return domain.RestoreProduct(sku, version, batches), snap, nil
}

// save writes what changed in p since it was loaded.
func (t *tx) save(ctx context.Context, p *domain.Product) error {
	snap := t.snapshots[p.SKU()]
	if p.Version() == snap.version {
		return nil
	}
	res, err := t.sql.ExecContext(ctx,
		`UPDATE products SET version_number = $1 WHERE sku = $2 AND version_number = $3`,
		p.Version(), p.SKU(), snap.version)
	if err != nil {
		return fmt.Errorf("update version: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("version %d of %s changed underneath: %w", snap.version, p.SKU(), errConflict)
	}

	// Removals first, so a line never exists twice in between.
	for _, b := range p.Batches() {
		old, ok := snap.batches[b.Ref()]
		if !ok {
			continue
		}
		for _, l := range old.lines {
			if !b.Has(l) {
				if _, err := t.sql.ExecContext(ctx,
					`DELETE FROM allocations WHERE batch_id = $1 AND orderid = $2 AND sku = $3 AND qty = $4`,
					old.id, l.OrderID, l.SKU, l.Qty); err != nil {
					return fmt.Errorf("deallocate %s from %s: %w", l.OrderID, b.Ref(), err)
				}
			}
		}
	}
	for _, b := range p.Batches() {
		old, ok := snap.batches[b.Ref()]
		switch {
		case !ok:
			if err := t.sql.GetContext(ctx, &old.id,
				`INSERT INTO batches (reference, sku, purchased_quantity, allocated_quantity, eta) VALUES ($1, $2, $3, $4, $5) RETURNING id`,
				b.Ref(), b.SKU(), b.PurchasedQty(), b.AllocatedQty(), nullDate(b.ETA())); err != nil {
				return fmt.Errorf("insert batch %s: %w", b.Ref(), err)
			}
		case old.purchased != b.PurchasedQty() || old.allocated != b.AllocatedQty():
			if _, err := t.sql.ExecContext(ctx,
				`UPDATE batches SET purchased_quantity = $1, allocated_quantity = $2 WHERE id = $3`,
				b.PurchasedQty(), b.AllocatedQty(), old.id); err != nil {
				return fmt.Errorf("update batch %s: %w", b.Ref(), err)
			}
		}
		for _, l := range b.Lines() {
			if slices.Contains(old.lines, l) {
				continue
			}
			if _, err := t.sql.ExecContext(ctx,
				`INSERT INTO allocations (batch_id, orderid, sku, qty) VALUES ($1, $2, $3, $4)`,
				old.id, l.OrderID, l.SKU, l.Qty); err != nil {
				return fmt.Errorf("allocate %s to %s: %w", l.OrderID, b.Ref(), err)
			}
		}
	}
	return nil
}

func nullDate(t time.Time) sql.NullTime {
	return sql.NullTime{Time: t, Valid: !t.IsZero()}
}
