// Package memory is an in-memory store behind the service layer's ports: the
// fake that unit tests run the real handlers against. A unit of work sees a
// private copy of the data and writes it back only when it commits.
package memory

import (
	"context"
	"slices"
	"sync"
	"time"

	"allocation/domain"
	"allocation/servicelayer"
)

type batchRecord struct {
	ref, sku  string
	purchased int
	eta       time.Time
	lines     []domain.OrderLine
}

type productRecord struct {
	sku     string
	version int
	batches []batchRecord
}

type viewRow struct {
	line     domain.OrderLine
	batchRef string
}

// Store holds committed state. Units of work run one at a time.
type Store struct {
	mu       sync.Mutex
	products map[string]productRecord
	view     []viewRow
	commits  int
}

func NewStore() *Store {
	return &Store{products: map[string]productRecord{}}
}

// Commits counts the units of work that committed.
func (s *Store) Commits() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commits
}

// Product returns a copy of the committed product of sku, or nil.
func (s *Store) Product(sku string) *domain.Product {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.products[sku]
	if !ok {
		return nil
	}
	return rec.restore()
}

// Allocations answers the allocations view for one order, oldest first.
func (s *Store) Allocations(_ context.Context, orderID string) ([]servicelayer.Allocation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []servicelayer.Allocation
	for _, r := range s.view {
		if r.line.OrderID == orderID {
			out = append(out, servicelayer.Allocation{SKU: r.line.SKU, BatchRef: r.batchRef})
		}
	}
	return out, nil
}

// Do implements servicelayer.UnitOfWork.
func (s *Store) Do(_ context.Context, fn func(tx servicelayer.Tx) error) ([]domain.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx := &tx{store: s, seen: map[string]*domain.Product{}, view: slices.Clone(s.view)}
	if err := fn(tx); err != nil {
		return nil, err
	}
	var events []domain.Event
	for sku, p := range tx.seen {
		s.products[sku] = record(p)
		events = append(events, p.PullEvents()...)
	}
	s.view = tx.view
	s.commits++
	return events, nil
}

type tx struct {
	store *Store
	seen  map[string]*domain.Product
	view  []viewRow
}

func (t *tx) Products() servicelayer.Products                { return (*repository)(t) }
func (t *tx) Allocations() servicelayer.AllocationsReadModel { return (*readModel)(t) }

// repository is the Products port of one unit of work.
type repository tx

func (r *repository) Get(_ context.Context, sku string) (*domain.Product, error) {
	if p, ok := r.seen[sku]; ok {
		return p, nil
	}
	rec, ok := r.store.products[sku]
	if !ok {
		return nil, nil
	}
	p := rec.restore()
	r.seen[sku] = p
	return p, nil
}

func (r *repository) GetByBatchRef(ctx context.Context, ref string) (*domain.Product, error) {
	for _, p := range r.seen {
		if p.Batch(ref) != nil {
			return p, nil
		}
	}
	for sku, rec := range r.store.products {
		for _, b := range rec.batches {
			if b.ref == ref {
				return r.Get(ctx, sku)
			}
		}
	}
	return nil, nil
}

func (r *repository) Add(_ context.Context, p *domain.Product) error {
	r.seen[p.SKU()] = p
	return nil
}

// readModel is the allocations view as one unit of work changes it.
type readModel tx

func (m *readModel) Add(_ context.Context, line domain.OrderLine, batchRef string) error {
	for i := range m.view {
		if m.view[i].line == line {
			m.view[i].batchRef = batchRef
			return nil
		}
	}
	m.view = append(m.view, viewRow{line: line, batchRef: batchRef})
	return nil
}

func (m *readModel) Remove(_ context.Context, line domain.OrderLine) error {
	m.view = slices.DeleteFunc(m.view, func(r viewRow) bool { return r.line == line })
	return nil
}

func record(p *domain.Product) productRecord {
	rec := productRecord{sku: p.SKU(), version: p.Version()}
	for _, b := range p.Batches() {
		rec.batches = append(rec.batches, batchRecord{ref: b.Ref(), sku: b.SKU(), purchased: b.PurchasedQty(), eta: b.ETA(), lines: b.Lines()})
	}
	return rec
}

func (rec productRecord) restore() *domain.Product {
	batches := make([]*domain.Batch, len(rec.batches))
	for i, b := range rec.batches {
		batches[i] = domain.RestoreBatch(b.ref, b.sku, b.purchased, b.eta, slices.Clone(b.lines))
	}
	return domain.RestoreProduct(rec.sku, rec.version, batches)
}
