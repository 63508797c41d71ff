package domain

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Batch is stock of one SKU that arrives at ETA; a zero ETA means it is already
// in the warehouse.
type Batch struct {
	ref       string
	sku       string
	purchased int
	eta       time.Time
	// lines in allocation order, so deallocation is deterministic: the most
	// recent allocation gives way first.
	lines     []OrderLine
	allocated int
}

// NewBatch creates a batch with nothing allocated yet. qty may be zero (a batch
// announced before its size is known) but never negative.
func NewBatch(ref, sku string, qty int, eta time.Time) (*Batch, error) {
	if err := validateReference("ref", ref); err != nil {
		return nil, err
	}
	if err := validateReference("sku", sku); err != nil {
		return nil, err
	}
	if err := validateQuantity("qty", qty, 0); err != nil {
		return nil, err
	}
	if !eta.IsZero() && (eta.Year() < MinETAYear || eta.Year() > MaxETAYear) {
		return nil, &ValidationError{Field: "eta", Reason: fmt.Sprintf("must be a date from year %d to %d, or none", MinETAYear, MaxETAYear)}
	}
	return &Batch{ref: ref, sku: sku, purchased: qty, eta: dateOf(eta)}, nil
}

// RestoreBatch rebuilds a batch from storage. allocated is the quantity
// allocated to it in all; lines are the allocated lines storage loaded,
// oldest first, which may be only some of them: a decision needs the total,
// and the lines only of what it may take back (the line about to be
// allocated, for Product.Allocate; every line of a batch whose quantity
// shrinks, for Product.ChangeBatchQuantity). It trusts its input: storage
// only holds what the model made.
func RestoreBatch(ref, sku string, purchased, allocated int, eta time.Time, lines []OrderLine) *Batch {
	return &Batch{ref: ref, sku: sku, purchased: purchased, eta: dateOf(eta), lines: lines, allocated: allocated}
}

func (b *Batch) Ref() string          { return b.ref }
func (b *Batch) SKU() string          { return b.sku }
func (b *Batch) ETA() time.Time       { return b.eta }
func (b *Batch) PurchasedQty() int    { return b.purchased }
func (b *Batch) AllocatedQty() int    { return b.allocated }
func (b *Batch) AvailableQty() int    { return b.purchased - b.allocated }
func (b *Batch) Lines() []OrderLine   { return slices.Clone(b.lines) }
func (b *Batch) InStock() bool        { return b.eta.IsZero() }
func (b *Batch) Has(l OrderLine) bool { return slices.Contains(b.lines, l) }

// SameAs reports whether other describes this batch: same ref, SKU, purchased
// quantity and ETA. Creating a batch that already exists this way is a no-op.
func (b *Batch) SameAs(other *Batch) bool {
	return b.ref == other.ref && b.sku == other.sku && b.purchased == other.purchased && b.eta.Equal(other.eta)
}

// CanAllocate reports whether the whole line fits into this batch. A line of
// no or negative quantity never does: allocating it would add stock.
func (b *Batch) CanAllocate(l OrderLine) bool {
	return b.sku == l.SKU && l.Qty > 0 && b.AvailableQty() >= l.Qty
}

// allocate adds the line if it fits and is not there yet. Only the product
// calls it, so that every change moves the product's version.
func (b *Batch) allocate(l OrderLine) {
	if b.CanAllocate(l) && !b.Has(l) {
		b.lines = append(b.lines, l)
		b.allocated += l.Qty
	}
}

// deallocate removes the line if it is allocated here.
func (b *Batch) deallocate(l OrderLine) {
	if i := slices.Index(b.lines, l); i >= 0 {
		b.lines = slices.Delete(b.lines, i, i+1)
		b.allocated -= l.Qty
	}
}

// deallocateOne removes the most recently allocated line; it fails when
// storage did not load the batch's lines.
func (b *Batch) deallocateOne() (OrderLine, error) {
	if len(b.lines) == 0 {
		return OrderLine{}, fmt.Errorf("batch %s: %d allocated but no line loaded to deallocate", b.ref, b.allocated)
	}
	l := b.lines[len(b.lines)-1]
	b.lines = b.lines[:len(b.lines)-1]
	b.allocated -= l.Qty
	return l, nil
}

// arrivesBefore orders batches for allocation: warehouse stock first, then by ETA.
func (b *Batch) arrivesBefore(other *Batch) bool {
	switch {
	case b.InStock():
		return !other.InStock()
	case other.InStock():
		return false
	}
	return b.eta.Before(other.eta)
}

// dateOf drops the time of day: an ETA is a date.
func dateOf(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	y, m, d := t.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// OrderLine is a value: two lines with the same order, SKU and quantity are the
// same line, so allocating one twice is allocating it once.
type OrderLine struct {
	OrderID string
	SKU     string
	Qty     int
}

// NewOrderLine refuses empty references and quantities outside 1..MaxQuantity.
func NewOrderLine(orderID, sku string, qty int) (OrderLine, error) {
	l := OrderLine{OrderID: orderID, SKU: sku, Qty: qty}
	if err := l.validate(); err != nil {
		return OrderLine{}, err
	}
	return l, nil
}

// validate applies NewOrderLine's rules; the fields are exported, so a line
// built as a literal is checked again where it could change stock.
func (l OrderLine) validate() error {
	if err := validateReference("orderid", l.OrderID); err != nil {
		return err
	}
	if err := validateReference("sku", l.SKU); err != nil {
		return err
	}
	return validateQuantity("qty", l.Qty, 1)
}

// The rules every reference and quantity obeys, and their limits. They sit
// with batches and order lines because most values enter the model through
// the constructors above; products and the entry points use them too.

// Limits of what the model accepts; the schema stores no more than this.
const (
	MaxReferenceLength = 255
	MaxQuantity        = 1_000_000_000
	// An ETA outside these years is a typo, not a shipment.
	MinETAYear = 1900
	MaxETAYear = 9999
)

// CheckReference applies the rules every reference, SKU and id obeys: 1 to
// MaxReferenceLength bytes of UTF-8 text without NUL characters (which
// storage cannot keep).
func CheckReference(field, value string) error {
	switch {
	case value == "" || len(value) > MaxReferenceLength:
		return &ValidationError{Field: field, Reason: fmt.Sprintf("must be 1 to %d bytes", MaxReferenceLength)}
	case !utf8.ValidString(value) || strings.ContainsRune(value, 0):
		return &ValidationError{Field: field, Reason: "must be UTF-8 text without NUL characters"}
	}
	return nil
}

func validateReference(field, value string) error { return CheckReference(field, value) }

func validateQuantity(field string, qty, min int) error {
	if qty < min || qty > MaxQuantity {
		return &ValidationError{Field: field, Reason: fmt.Sprintf("must be between %d and %d", min, MaxQuantity)}
	}
	return nil
}
