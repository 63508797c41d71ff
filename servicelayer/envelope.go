package servicelayer

import (
	"context"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

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
	// TraceParent and TraceState are the W3C Trace Context of the span
	// that committed the event ("" when there was none): its deliveries are
	// that span's children, and it travels with the published message, so
	// that one trace follows the event into the next service.
	TraceParent string
	TraceState  string
	Event       domain.Event
}

// NewEnvelope gives a new event its identity, and the cause and trace context ctx
// carries. The unit of work calls it when it writes the event to the log.
func NewEnvelope(ctx context.Context, ev domain.Event, now time.Time) Envelope {
	c := CauseOf(ctx)
	parent, state := TraceContext(ctx)
	return Envelope{MessageID: uuid.NewString(), OccurredAt: now.UTC(), CausationID: c.CausationID, CorrelationID: c.CorrelationID,
		TraceParent: parent, TraceState: state, Event: ev}
}

// Delivery is one event for one of its handlers.
type Delivery struct {
	Envelope
	Handler string
	// FirstInLine says that when the unit of work queued this delivery, no
	// earlier event of the product was pending for the handler: the process
	// that committed it may deliver it at once. A delivery not in turn is
	// left to the dispatcher, which keeps the order.
	FirstInLine bool
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

// CauseHandler adds the cause ctx carries (request or message id) to every
// record logged with a context, so that all the lines of one unit of work can
// be found together.
type CauseHandler struct{ slog.Handler }

func (h CauseHandler) Handle(ctx context.Context, r slog.Record) error {
	if c := CauseOf(ctx); c.CorrelationID != "" {
		r.AddAttrs(slog.String("correlation_id", c.CorrelationID), slog.String("causation_id", c.CausationID))
	}
	return h.Handler.Handle(ctx, r)
}

func (h CauseHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return CauseHandler{h.Handler.WithAttrs(attrs)}
}

func (h CauseHandler) WithGroup(name string) slog.Handler {
	return CauseHandler{h.Handler.WithGroup(name)}
}

// traceContext is the W3C Trace Context format: the one the service reads
// from inbound messages, keeps with every event and sends with it.
var traceContext = propagation.TraceContext{}

// TraceContext returns the W3C traceparent and tracestate of the span ctx
// carries, or "" when it carries none. A non-recording span (tracing off)
// still has the context it was started under, so that a trace that came in
// goes out again.
func TraceContext(ctx context.Context) (parent, state string) {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return "", ""
	}
	carrier := propagation.MapCarrier{}
	traceContext.Inject(ctx, carrier)
	return carrier.Get("traceparent"), carrier.Get("tracestate")
}

// WithTraceContext returns ctx carrying the remote span of a W3C traceparent
// and tracestate, the parent of the spans started under it. A parent that is
// empty or malformed leaves ctx as it is.
func WithTraceContext(ctx context.Context, parent, state string) context.Context {
	if parent == "" {
		return ctx
	}
	carrier := propagation.MapCarrier{"traceparent": parent}
	if state != "" {
		carrier["tracestate"] = state
	}
	return traceContext.Extract(ctx, carrier)
}
