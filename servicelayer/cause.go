package servicelayer

import "context"

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
