package servicelayer

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"allocation/domain"
)

// Envelope is an event as the event log keeps it: with the identity it keeps
// wherever it travels (a receiver uses MessageID to recognise a redelivery)
// and its place in the log.
type Envelope struct {
	// LogID is the event's position in the event log; events of one product
	// are handled in LogID order.
	LogID      int64
	MessageID  string
	OccurredAt time.Time
	// CausationID is the id of the request, inbound message or event that
	// directly caused this event; CorrelationID the id of the request or
	// inbound message that started the chain. Together they let a chain
	// (change -> deallocate -> reallocate -> line_allocated) be followed
	// across services.
	CausationID   string
	CorrelationID string
	Event         domain.Event
}

// Seal gives a new event its identity, and the cause ctx carries. The unit
// of work calls it when it writes the event to the log.
func Seal(ctx context.Context, ev domain.Event, now time.Time) Envelope {
	c := CauseOf(ctx)
	return Envelope{MessageID: uuid.NewString(), OccurredAt: now.UTC(), CausationID: c.CausationID, CorrelationID: c.CorrelationID, Event: ev}
}

// Cause is why work is being done: what caused it directly, and what
// started the chain it belongs to.
type Cause struct {
	CausationID   string
	CorrelationID string
}

type causeKey struct{}

// WithCause marks ctx as doing work for c. Logs of that work carry it.
func WithCause(ctx context.Context, c Cause) context.Context {
	return context.WithValue(ctx, causeKey{}, c)
}

// CauseOf returns the cause ctx carries, if any.
func CauseOf(ctx context.Context) Cause {
	c, _ := ctx.Value(causeKey{}).(Cause)
	return c
}

// Delivery is one event for one of its handlers.
type Delivery struct {
	Envelope
	Handler string
	// InTurn says that when the unit of work queued this delivery, no
	// earlier event of the product was pending for the handler: the process
	// that committed it may deliver it at once. A delivery not in turn is
	// left to the dispatcher, which keeps the order.
	InTurn bool
}

// ErrNotDelivered: a delivery was not attempted because it is done, parked
// as dead, being delivered by someone else, or waiting for an earlier event of
// its product. It is no failure: whoever holds the turn will deliver it.
var ErrNotDelivered = errors.New("delivery not attempted")

// ErrUnavailable: a dependency (the database) cannot be reached. The request
// may succeed later; nothing was changed.
var ErrUnavailable = errors.New("service unavailable")

// ErrDuplicateMessage: an inbound message with this id was processed before.
var ErrDuplicateMessage = errors.New("message already processed")

type messageIDKey struct{}

// WithMessageID marks ctx as handling the inbound message id. The unit of
// work of the command records id in the inbox in the same transaction as the
// command's effect, and refuses a second message with the same id.
func WithMessageID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, messageIDKey{}, id)
}

// MessageID returns the inbound message id ctx carries, or "".
func MessageID(ctx context.Context) string {
	id, _ := ctx.Value(messageIDKey{}).(string)
	return id
}
