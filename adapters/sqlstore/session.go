package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"slices"

	"allocation/domain"
	"allocation/servicelayer"
)

// session is one attempt at a unit of work: what it read, and the view
// changes it asked for. Nothing is written until the dialect applies its
// Changes.
type session struct {
	store     *Store
	seen      []*domain.Product
	snapshots map[string]productSnapshot
	// work is the piece of work the session belongs to: it keeps the
	// product locks.
	work *Work
	// cached are the products taken from the cache rather than read: their
	// version is checked by the write even when they did not change.
	cached map[string]bool
	// linesNotLoaded are the lines asked for whose products came from the cache:
	// the write checks that they were not allocated already.
	linesNotLoaded []domain.OrderLine
}

func (s *Store) begin(w *Work) *session {
	return &session{store: s, work: w, snapshots: map[string]productSnapshot{}, cached: map[string]bool{}}
}

// remember updates the caches after a successful write: every product the
// session saw is now as it is in memory, and its new batches belong to it.
func (s *session) remember() {
	for _, p := range s.seen {
		snap := s.snapshots[p.SKU()]
		s.store.cache.put(p, snap)
		for _, b := range p.Batches() {
			if _, stored := snap.batches[b.Ref()]; !stored {
				s.store.owners.Put(b.Ref(), p.SKU())
			}
		}
	}
}

// forget drops from the cache every product the session saw, after a write
// that failed: the next attempt reads them.
func (s *session) forget() {
	for _, p := range s.seen {
		s.store.cache.forget(p.SKU())
	}
}

func (s *session) Products() servicelayer.Products { return (*repository)(s) }

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

// repository is the Products port of one session.
type repository session

// Get loads the product with every allocated line.
func (r *repository) Get(ctx context.Context, sku string) (*domain.Product, error) {
	return r.get(ctx, sku, false, r.store.queries.loadEveryLine)
}

// GetBatches loads the batches with their allocated totals and no line.
func (r *repository) GetBatches(ctx context.Context, sku string) (*domain.Product, error) {
	return r.get(ctx, sku, false, r.store.queries.loadNoLines)
}

// GetForLine loads the batches with their allocated totals and only line
// itself, where it is allocated: the cost does not grow with the product's
// history. A product in the cache is not read at all: it comes without the
// line, and a line allocated already makes the write conflict.
func (r *repository) GetForLine(ctx context.Context, line domain.OrderLine) (*domain.Product, error) {
	p, err := r.get(ctx, line.SKU, true, r.store.queries.loadLineAtHand, line.OrderID, line.SKU, line.Qty)
	if p != nil && r.cached[line.SKU] {
		r.linesNotLoaded = append(r.linesNotLoaded, line)
	}
	return p, err
}

// GetByBatchRef loads the product holding ref with the lines of that batch.
func (r *repository) GetByBatchRef(ctx context.Context, ref string) (*domain.Product, error) {
	for _, p := range r.seen {
		if p.Batch(ref) != nil {
			return p, nil
		}
	}
	sku, found, err := r.store.ProductOfBatch(ctx, ref)
	if err != nil || !found {
		return nil, err
	}
	return r.get(ctx, sku, false, r.store.queries.loadLinesOfBatch, ref)
}

// get takes the product's in-process lock, then takes it from the cache
// when allowed, or loads it with the lines query selects (its arguments
// first). A product already handed out in this session is returned as it
// is.
func (r *repository) get(ctx context.Context, sku string, cacheable bool, query string, lineArgs ...any) (*domain.Product, error) {
	for _, p := range r.seen {
		if p.SKU() == sku {
			return p, nil
		}
	}
	if err := r.work.lockProduct(ctx, sku); err != nil {
		return nil, err
	}
	var (
		p    *domain.Product
		snap productSnapshot
	)
	if entry, ok := r.store.cache.get(sku); ok && cacheable {
		p, snap = entry.restore(sku)
		r.cached[sku] = true
	} else {
		var err error
		if p, snap, err = r.store.load(ctx, sku, query, append(lineArgs, sku)); err != nil || p == nil {
			return nil, err
		}
		r.store.cache.put(p, snap)
	}
	r.seen = append(r.seen, p)
	r.snapshots[sku] = snap
	return p, nil
}

// Add registers a new product, to be inserted with the unit of work; a
// concurrent creator of the same SKU makes that a conflict, and the retry
// finds the product.
func (r *repository) Add(ctx context.Context, p *domain.Product) error {
	if err := r.work.lockProduct(ctx, p.SKU()); err != nil {
		return err
	}
	r.seen = append(r.seen, p)
	return nil
}

func (r *repository) Seen() []*domain.Product { return slices.Clone(r.seen) }

// productRow is one row of loadProduct.
type productRow struct {
	Version   int            `db:"version_number"`
	BatchID   sql.NullInt64  `db:"id"`
	Reference sql.NullString `db:"reference"`
	Purchased sql.NullInt64  `db:"purchased_quantity"`
	Allocated sql.NullInt64  `db:"allocated_quantity"`
	ETA       Timestamp      `db:"eta"`
	OrderID   sql.NullString `db:"orderid"`
	Qty       sql.NullInt64  `db:"qty"`
}

// load reads the product of sku in one round trip; nil when there is none.
func (s *Store) load(ctx context.Context, sku, query string, args []any) (*domain.Product, productSnapshot, error) {
	st, err := s.stmts.Get(ctx, query)
	if err != nil {
		return nil, productSnapshot{}, err
	}
	var rows []productRow
	if err := st.SelectContext(ctx, &rows, args...); err != nil {
		return nil, productSnapshot{}, s.dialect.Classify(fmt.Errorf("load product %s: %w", sku, err))
	}
	if len(rows) == 0 {
		return nil, productSnapshot{}, nil
	}
	snap := productSnapshot{version: rows[0].Version, batches: map[string]batchSnapshot{}}
	var batches []*domain.Batch
	for i := 0; i < len(rows); {
		row := rows[i]
		if !row.BatchID.Valid {
			break // a product without batches
		}
		var lines []domain.OrderLine
		for ; i < len(rows) && rows[i].BatchID == row.BatchID; i++ {
			if rows[i].OrderID.Valid {
				lines = append(lines, domain.OrderLine{OrderID: rows[i].OrderID.String, SKU: sku, Qty: int(rows[i].Qty.Int64)})
			}
		}
		ref := row.Reference.String
		snap.batches[ref] = batchSnapshot{id: row.BatchID.Int64, purchased: int(row.Purchased.Int64), allocated: int(row.Allocated.Int64), lines: lines}
		batches = append(batches, domain.RestoreBatch(ref, sku, int(row.Purchased.Int64), int(row.Allocated.Int64), row.ETA.Time, slices.Clone(lines)))
	}
	return domain.RestoreProduct(sku, snap.version, batches), snap, nil
}
