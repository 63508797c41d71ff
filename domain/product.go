package domain

import (
	"fmt"
	"slices"
)

// Product is the aggregate: every batch of one SKU. All changes to stock of a
// SKU go through it, and its version lets storage detect concurrent writers.
type Product struct {
	sku     string
	batches []*Batch
	version int
	events  []Event
}

// NewProduct creates a product with no stock yet.
func NewProduct(sku string) (*Product, error) {
	if err := validateReference("sku", sku); err != nil {
		return nil, err
	}
	return &Product{sku: sku}, nil
}

// RestoreProduct rebuilds a product from storage.
func RestoreProduct(sku string, version int, batches []*Batch) *Product {
	return &Product{sku: sku, version: version, batches: batches}
}

func (p *Product) SKU() string       { return p.sku }
func (p *Product) Version() int      { return p.version }
func (p *Product) Batches() []*Batch { return slices.Clone(p.batches) }
func (p *Product) Events() []Event   { return slices.Clone(p.events) }

// Batch returns the batch with ref, or nil.
func (p *Product) Batch(ref string) *Batch {
	for _, b := range p.batches {
		if b.ref == ref {
			return b
		}
	}
	return nil
}

// PullEvents returns the events recorded since the last call and forgets them.
func (p *Product) PullEvents() []Event {
	ev := p.events
	p.events = nil
	return ev
}

// AddBatch adds stock and records BatchCreated. Adding a batch that is already here with the same values
// is a no-op, so a retried request does no harm; the same ref with other values
// is refused with ErrBatchExists.
func (p *Product) AddBatch(b *Batch) error {
	if b.sku != p.sku {
		return &ValidationError{Field: "sku", Reason: fmt.Sprintf("batch %s is for %s, not %s", b.ref, b.sku, p.sku)}
	}
	if existing := p.Batch(b.ref); existing != nil {
		if existing.SameAs(b) {
			return nil
		}
		return fmt.Errorf("batch %s: %w", b.ref, ErrBatchExists)
	}
	p.batches = append(p.batches, b)
	p.version++
	p.events = append(p.events, BatchCreated{Ref: b.ref, SKU: b.sku, Qty: b.purchased, ETA: b.eta})
	return nil
}

// Allocate puts the line into the batch that arrives first and can take all of
// it, and returns that batch's ref. It records Allocated, or OutOfStock and
// returns "" when no batch can take the line. A line that is already allocated
// stays where it is: its ref is returned and nothing is recorded.
func (p *Product) Allocate(l OrderLine) (string, error) {
	if l.SKU != p.sku {
		return "", &InvalidSKUError{SKU: l.SKU}
	}
	// A line built as a literal skips NewOrderLine; one of negative
	// quantity would add stock.
	if err := l.validate(); err != nil {
		return "", err
	}
	for _, b := range p.batches {
		if b.Has(l) {
			return b.ref, nil
		}
	}
	for _, b := range p.inAllocationOrder() {
		if b.CanAllocate(l) {
			b.allocate(l)
			p.version++
			p.events = append(p.events, Allocated{OrderID: l.OrderID, SKU: l.SKU, Qty: l.Qty, BatchRef: b.ref})
			return b.ref, nil
		}
	}
	p.events = append(p.events, OutOfStock{SKU: p.sku})
	return "", nil
}

// ChangeBatchQuantity sets the purchased quantity of batch ref and, when that
// leaves less than is allocated, deallocates lines until it fits, recording
// Deallocated for each so that they can be allocated elsewhere. The change
// itself is recorded first, as BatchQuantityChanged.
func (p *Product) ChangeBatchQuantity(ref string, qty int) error {
	if err := validateQuantity("qty", qty, 0); err != nil {
		return err
	}
	b := p.Batch(ref)
	if b == nil {
		return fmt.Errorf("batch %s: %w", ref, ErrUnknownBatch)
	}
	if b.purchased == qty {
		return nil
	}
	p.events = append(p.events, BatchQuantityChanged{Ref: ref, SKU: p.sku, OldQty: b.purchased, Qty: qty})
	b.purchased = qty
	p.version++
	for b.AvailableQty() < 0 {
		l, err := b.deallocateOne()
		if err != nil {
			return err
		}
		p.events = append(p.events, Deallocated{OrderID: l.OrderID, SKU: l.SKU, Qty: l.Qty, BatchRef: b.ref})
	}
	return nil
}

// inAllocationOrder returns the batches sorted by preference; batches that
// arrive together keep the order they were added in.
func (p *Product) inAllocationOrder() []*Batch {
	sorted := slices.Clone(p.batches)
	slices.SortStableFunc(sorted, func(a, b *Batch) int {
		switch {
		case a.arrivesBefore(b):
			return -1
		case b.arrivesBefore(a):
			return 1
		}
		return 0
	})
	return sorted
}
