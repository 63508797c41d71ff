package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"

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
	// linesNotLoaded are the lines asked for whose rows were not read (their
	// product came from the cache, or was read for another line): the write
	// checks that they were not allocated already.
	linesNotLoaded []domain.OrderLine
	// shared is the session of the group this session's allocation joined
	// (coalesce.go): its products live there.
	shared *session
}

func (s *Store) begin(w *Work) *session {
	return &session{store: s, work: w, snapshots: map[string]productSnapshot{}, cached: map[string]bool{}}
}

// remember updates the caches after a successful write: every product the
// session saw is now as it is in memory, and its new batches belong to it.
func (s *session) remember() {
	for _, p := range s.seen {
		snap := s.snapshots[p.SKU()]
		s.store.cacheProduct(p, snap)
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
		s.store.products.Forget(p.SKU())
	}
}

func (s *session) Products() servicelayer.Products { return (*repository)(s) }

// state is the session whose products this one decides on: its group's
// when its allocation joined one, else its own.
func (s *session) state() *session {
	if s.shared != nil {
		return s.shared
	}
	return s
}

// find is the product of sku the session handed out already, or nil.
func (s *session) find(sku string) *domain.Product {
	for _, p := range s.seen {
		if p.SKU() == sku {
			return p
		}
	}
	return nil
}

// savepoint is a session as one member of a group found it.
type savepoint struct {
	seen, linesNotLoaded int
	versions             []int
}

func (s *session) savepoint() savepoint {
	sp := savepoint{seen: len(s.seen), linesNotLoaded: len(s.linesNotLoaded)}
	for _, p := range s.seen {
		sp.versions = append(sp.versions, p.Version())
	}
	return sp
}

// changedSince reports whether a product the session holds changed, or
// raised an event, since sp.
func (s *session) changedSince(sp savepoint) bool {
	if len(s.seen) != sp.seen {
		return true
	}
	for i, p := range s.seen {
		if p.Version() != sp.versions[i] || len(p.Events()) > 0 {
			return true
		}
	}
	return false
}

// rollback forgets the lines to check asked for since sp: the member that
// asked for them failed.
func (s *session) rollback(sp savepoint) {
	s.linesNotLoaded = s.linesNotLoaded[:min(sp.linesNotLoaded, len(s.linesNotLoaded))]
}

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

// cachedProduct is a product's snapshot as Store.products keeps it: the
// snapshot plus what restoring the product needs (each batch's reference and
// ETA), and no lines.
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

// cacheProduct remembers p, whose stored batches have the ids in snap. A
// batch not stored yet has no id until the database gives it one, so a
// product with one is forgotten instead: the next allocation reads it.
func (s *Store) cacheProduct(p *domain.Product, snap productSnapshot) {
	entry := cachedProduct{version: p.Version()}
	for _, b := range p.Batches() {
		old, stored := snap.batches[b.Ref()]
		if !stored {
			s.products.Forget(p.SKU())
			return
		}
		entry.batches = append(entry.batches, cachedBatch{id: old.id, ref: b.Ref(), purchased: b.PurchasedQty(), allocated: b.AllocatedQty(), eta: b.ETA()})
	}
	s.products.Put(p.SKU(), entry)
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

// repository is the Products port of one session.
type repository session

func (r *repository) state() *session { return (*session)(r).state() }

// Get loads the product with every allocated line.
func (r *repository) Get(ctx context.Context, sku string) (*domain.Product, error) {
	p, _, err := r.get(ctx, sku, loading{}, r.store.queries.loadEveryLine)
	return p, err
}

// GetBatches loads the batches with their allocated totals and no line.
func (r *repository) GetBatches(ctx context.Context, sku string) (*domain.Product, error) {
	p, _, err := r.get(ctx, sku, loading{}, r.store.queries.loadNoLines)
	return p, err
}

// GetForLine loads the batches with their allocated totals and only line
// itself, where it is allocated: the cost does not grow with the product's
// history. A product in the cache is not read at all: it comes without the
// line, and a line allocated already makes the write conflict. Allocations
// waiting for the same product decide together (coalesce.go).
func (r *repository) GetForLine(ctx context.Context, line domain.OrderLine) (*domain.Product, error) {
	p, read, err := r.get(ctx, line.SKU, forAllocation, r.store.queries.loadLineAtHand, line.OrderID, line.SKU, line.Qty)
	if p != nil && !read {
		st := r.state()
		st.linesNotLoaded = append(st.linesNotLoaded, line)
	}
	return p, err
}

// GetByBatchRef loads the product holding ref with the lines of that batch.
func (r *repository) GetByBatchRef(ctx context.Context, ref string) (*domain.Product, error) {
	return r.getByBatchRef(ctx, ref, loading{})
}

// GetForQuantityChange loads the product holding ref for changing that
// batch's quantity to qty. When the cached copy says the batch keeps every
// line at qty, the product is not read: no line is needed, and the write's
// version check catches a stale copy. Otherwise it is read with the lines
// of the batch, the ones the change may deallocate.
func (r *repository) GetForQuantityChange(ctx context.Context, ref string, qty int) (*domain.Product, error) {
	keepsItsLines := func(e cachedProduct) bool {
		for _, b := range e.batches {
			if b.ref == ref {
				return b.allocated <= qty
			}
		}
		return false
	}
	return r.getByBatchRef(ctx, ref, loading{fromCache: keepsItsLines})
}

func (r *repository) getByBatchRef(ctx context.Context, ref string, how loading) (*domain.Product, error) {
	for _, p := range r.state().seen {
		if p.Batch(ref) != nil {
			return p, nil
		}
	}
	sku, found, err := r.store.ProductOfBatch(ctx, ref)
	if err != nil || !found {
		return nil, err
	}
	p, _, err := r.get(ctx, sku, how, r.store.queries.loadLinesOfBatch, ref)
	return p, err
}

// loading says what get may do besides reading the product.
type loading struct {
	// joinGroup: an allocation, which may decide together with the others
	// waiting for the product's turn (coalesce.go).
	joinGroup bool
	// fromCache says whether the cached copy will do; nil: never.
	fromCache func(cachedProduct) bool
}

// forAllocation is how an allocation loads: in a group when the product is
// busy, from the cache whenever it holds the product.
var forAllocation = loading{joinGroup: true, fromCache: func(cachedProduct) bool { return true }}

// get takes the product's turn (an allocation may join a group for it),
// then takes the product from the cache when how allows, or reads it with
// the lines query selects (its arguments first); read says it was read
// from the database now. A product already handed out in the session is
// returned as it is.
func (r *repository) get(ctx context.Context, sku string, how loading, query string, lineArgs ...any) (p *domain.Product, read bool, err error) {
	if p := r.state().find(sku); p != nil {
		return p, false, nil
	}
	joined, err := r.work.lockProduct(ctx, sku, how.joinGroup)
	if err != nil {
		return nil, false, err
	}
	if joined {
		r.shared = r.work.group.State().sess
	}
	st := r.state()
	if p := st.find(sku); p != nil {
		return p, false, nil // an earlier member of the group had it
	}
	var snap productSnapshot
	if entry, ok := r.store.products.Get(sku); ok && how.fromCache != nil && how.fromCache(entry) {
		p, snap = entry.restore(sku)
		st.cached[sku] = true
	} else {
		if p, snap, err = r.store.load(ctx, sku, query, append(lineArgs, sku)); err != nil || p == nil {
			return nil, false, err
		}
		r.store.cacheProduct(p, snap)
		read = true
	}
	st.seen = append(st.seen, p)
	st.snapshots[sku] = snap
	return p, read, nil
}

// Add registers a new product, to be inserted with the unit of work; a
// concurrent creator of the same SKU makes that a conflict, and the retry
// finds the product.
func (r *repository) Add(ctx context.Context, p *domain.Product) error {
	if _, err := r.work.lockProduct(ctx, p.SKU(), false); err != nil {
		return err
	}
	st := r.state()
	st.seen = append(st.seen, p)
	return nil
}

func (r *repository) Seen() []*domain.Product { return slices.Clone(r.state().seen) }

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
