// Package servicelayer orchestrates the domain: the message bus, the handlers
// of every command and event, and the ports (interfaces) that adapters
// implement for storage, publishing and notifications.
package servicelayer

import (
	"context"
	"time"

	"allocation/domain"
)

// UnitOfWork runs handlers in transactions, within pieces of work.
type UnitOfWork interface {
	// Begin starts a piece of work: one command, or one delivery, with every
	// delivery the bus makes right after it. A store may keep what it takes
	// for the work until End: the in-process turn of each product the work
	// touched, so that the next command on a product is decided only once
	// the events of this one went out, in order.
	Begin() Work
}

// Work is one piece of work (UnitOfWork.Begin). One goroutine uses it.
type Work interface {
	// Do runs fn as one atomic change: it commits when fn returns nil and
	// changes nothing otherwise. It may run fn more than once when the store
	// reports a conflict with a concurrent transaction, so fn must only
	// change state through tx. The events raised by every product the
	// repository handed out are written to the event log in the same commit,
	// with one pending delivery per handler, and those deliveries are
	// returned in order; the allocations view is brought up to date with
	// them in the same commit too. A non-empty inboxID (the inbound message
	// the work answers) is recorded in the inbox in the same commit; a
	// repeated id fails with ErrDuplicateMessage and changes nothing.
	Do(ctx context.Context, inboxID string, fn func(tx Tx) error) ([]Delivery, error)
	// Deliver runs fn for one pending delivery and marks it done; when fn
	// changes stored state, in the same commit, so a handler's effect and
	// its bookkeeping commit together. It returns ErrNotDelivered, without
	// running fn, unless the delivery is pending, nobody else holds it, and
	// every earlier event of the same product is done for this handler (a
	// delivery marked FirstInLine was found so when it was queued). When fn fails
	// the failure is recorded. A transient failure leaves the delivery due
	// (the bus pauses the handler instead); a permanent one (ErrPermanent)
	// makes it due after the retry policy's delay, or parks it as dead after
	// its last attempt.
	Deliver(ctx context.Context, d Delivery, fn func(tx Tx) error) ([]Delivery, error)
	// DeliverRun makes a run of deliveries of one product and handler,
	// each queued first in line by this work, by one call of send, which
	// changes nothing stored. When send returns nil they are done; when it
	// fails, the failure is recorded on the first, and the others wait
	// behind it.
	DeliverRun(ctx context.Context, run []Delivery, send func(ctx context.Context) error) error
	// End lets go of what the work kept.
	End()
}

// EventLog is what the background dispatcher reads.
type EventLog interface {
	// Due returns up to limit deliveries whose time has come: for each
	// product and handler only the first one not done, when it is pending
	// (not parked as dead: what comes after a parked delivery waits for an
	// operator), due and held by no one, oldest first. Its cost grows with
	// the number of products and handlers waiting, not of deliveries.
	Due(ctx context.Context, limit int) ([]Delivery, error)
	// NextDue says when the next of those falls due; zero when none.
	NextDue(ctx context.Context) (time.Time, error)
	// Wake signals that deliveries may have become due (a failure was
	// recorded, an event was replayed), possibly by another process.
	Wake() <-chan struct{}
	// ClaimRun takes head, which Due returned, and up to limit-1 pending
	// deliveries of its product and handler that follow it, in order, for
	// this process (a lease, as Deliver's). ErrNotDelivered when head is
	// no longer first in line or is taken.
	ClaimRun(ctx context.Context, head Delivery, limit int) ([]Delivery, error)
	// CompleteRun marks a claimed run done.
	CompleteRun(ctx context.Context, run []Delivery) error
	// ReleaseRun gives a claimed run back, due again at once. With a cause
	// the attempt failed: it is recorded on the run's first delivery as
	// Deliver records a failure.
	ReleaseRun(ctx context.Context, run []Delivery, cause error) error
}

// Tx is what a handler may touch inside a unit of work.
type Tx interface {
	Products() Products
}

// Products is the repository of the Product aggregate. Every product it
// returns is remembered, so that the unit of work can save it and collect
// its events.
type Products interface {
	// Get returns the product of sku with every allocated line, or nil when
	// there is none.
	Get(ctx context.Context, sku string) (*domain.Product, error)
	// GetForLine returns the product of line.SKU, or nil, loaded for
	// allocating line: every batch with its allocated quantity, and line
	// itself where it is allocated; a store may leave the other lines out, so
	// that allocating costs the same however many lines the product has.
	GetForLine(ctx context.Context, line domain.OrderLine) (*domain.Product, error)
	// GetBatches returns the product of sku, or nil, with every batch and its
	// allocated quantity but none of their lines: enough to add a batch.
	GetBatches(ctx context.Context, sku string) (*domain.Product, error)
	// GetByBatchRef returns the product that holds batch ref, or nil, with
	// at least every line of that batch loaded.
	GetByBatchRef(ctx context.Context, ref string) (*domain.Product, error)
	// GetForQuantityChange returns the product that holds batch ref, or
	// nil, loaded for changing that batch's quantity to qty: with every line
	// of the batch the change could deallocate; a store may leave the lines
	// out when the batch keeps them all at qty.
	GetForQuantityChange(ctx context.Context, ref string, qty int) (*domain.Product, error)
	// Add registers a new product to be saved with the unit of work.
	Add(ctx context.Context, p *domain.Product) error
	// Seen returns every product handed out or added so far, in that order.
	Seen() []*domain.Product
}

// Allocation is one row of the allocations view.
type Allocation struct {
	SKU      string
	BatchRef string
}

// Publisher tells other services about events. An event it cannot encode
// fails with ErrPermanent; any other error is taken as transient.
type Publisher interface {
	Publish(ctx context.Context, msg Envelope) error
	// PublishBatch publishes msgs in order, at once (one round trip where
	// the broker allows). On an error some may have gone out: publishing
	// them again is safe, receivers drop repeats by message id.
	PublishBatch(ctx context.Context, msgs []Envelope) error
}

// Notifier sends a message to a person (for example by email).
type Notifier interface {
	Send(ctx context.Context, destination, message string) error
}
