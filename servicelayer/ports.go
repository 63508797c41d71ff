// Package servicelayer orchestrates the domain: the message bus, the handlers
// of every command and event, and the ports (interfaces) that adapters
// implement for storage, publishing and notifications.
package servicelayer

import (
	"context"

	"allocation/domain"
)

// UnitOfWork runs fn in one transaction: it commits when fn returns nil and
// rolls back otherwise. It returns the events raised by every product the
// repository handed out. An implementation may run fn more than once when the
// store reports a conflict with a concurrent transaction, so fn must only
// change state through tx.
type UnitOfWork interface {
	Do(ctx context.Context, fn func(tx Tx) error) ([]domain.Event, error)
}

// Tx is what a handler may touch inside a unit of work.
type Tx interface {
	Products() Products
	Allocations() AllocationsReadModel
}

// Products is the repository of the Product aggregate. Every product it
// returns is remembered, so that the unit of work can save it and collect
// its events.
type Products interface {
	// Get returns the product of sku, or nil when there is none.
	Get(ctx context.Context, sku string) (*domain.Product, error)
	// GetByBatchRef returns the product that holds batch ref, or nil.
	GetByBatchRef(ctx context.Context, ref string) (*domain.Product, error)
	// Add registers a new product to be saved with the unit of work.
	Add(ctx context.Context, p *domain.Product) error
}

// AllocationsReadModel keeps the allocations view (the read side) up to date.
// Both calls are idempotent.
type AllocationsReadModel interface {
	Add(ctx context.Context, line domain.OrderLine, batchRef string) error
	Remove(ctx context.Context, line domain.OrderLine) error
}

// Allocation is one row of the allocations view.
type Allocation struct {
	SKU      string
	BatchRef string
}

// Publisher tells other services about an event.
type Publisher interface {
	Publish(ctx context.Context, msg Envelope) error
}

// Notifier sends a message to a person (for example by email).
type Notifier interface {
	Send(ctx context.Context, destination, message string) error
}
