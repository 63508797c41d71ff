package servicelayer

import (
	"context"

	"allocation/domain"
)

// History reads the event log: every change to stock, oldest first.
type History interface {
	// Events returns up to q.Limit events that match every filter of q and
	// come after the event q.After, in the order they were logged.
	Events(ctx context.Context, q EventQuery) ([]Envelope, error)
}

// EventQuery selects events of the log. Empty filters match everything.
type EventQuery struct {
	SKU      string
	OrderID  string
	BatchRef string
	// Type is an event's name, one of EventTypes.
	Type string
	// After is the log id of the last event already seen (0: from the start).
	After int64
	// Limit is how many events to return: DefaultEventsPage when 0, at
	// most MaxEventsPage+1 (one more than a page tells a caller whether
	// another page follows).
	Limit int
}

// Pages of history: DefaultEventsPage events when no limit is asked for,
// at most MaxEventsPage.
const (
	DefaultEventsPage = 100
	MaxEventsPage     = 1000
)

// EventTypes are the names of the events the log holds, as queries name
// them.
var EventTypes = []string{
	domain.BatchCreated{}.Name(),
	domain.BatchQuantityChanged{}.Name(),
	domain.Allocated{}.Name(),
	domain.Deallocated{}.Name(),
	domain.OutOfStock{}.Name(),
}
