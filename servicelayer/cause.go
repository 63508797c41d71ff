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
