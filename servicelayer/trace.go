package servicelayer

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// TracerName is the instrumentation scope of the service's own spans.
const TracerName = "allocation"

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

// tracerOf is provider's tracer of the service; the global provider's (a
// no-op unless the program sets one) when provider is nil.
func tracerOf(provider trace.TracerProvider) trace.Tracer {
	if provider == nil {
		provider = otel.GetTracerProvider()
	}
	return provider.Tracer(TracerName)
}

// endSpan ends span, recording err as its status.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// startDelivery starts the span of one delivery. Its parent is the span
// that committed the event, kept with it in the event log, so that the
// delivery joins that trace however late it is made (by the dispatcher,
// after a restart); the span ctx carried before, when it is of another
// trace, is linked.
func startDelivery(ctx context.Context, tracer trace.Tracer, d Delivery) (context.Context, trace.Span) {
	opts := []trace.SpanStartOption{trace.WithAttributes(
		attribute.String("allocation.handler", d.Handler),
		attribute.String("allocation.event", d.Event.Name()),
		attribute.String("messaging.message.id", d.MessageID),
		attribute.Int64("allocation.event_id", d.LogID),
	)}
	if d.TraceParent != "" {
		current := trace.SpanContextFromContext(ctx)
		ctx = WithTraceContext(ctx, d.TraceParent, d.TraceState)
		if stored := trace.SpanContextFromContext(ctx); current.IsValid() && current.TraceID() != stored.TraceID() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: current}))
		}
	}
	return tracer.Start(ctx, fmt.Sprintf("deliver %s %s", d.Handler, d.Event.Name()), opts...)
}

// maxRunLinks caps the links of a run's span: the SDK keeps 128 by default.
const maxRunLinks = 128

// startRun starts the span of a run of deliveries sent at once: a child of
// the first event's trace, linked to the trace of each of them.
func startRun(ctx context.Context, tracer trace.Tracer, run []Delivery) (context.Context, trace.Span) {
	var links []trace.Link
	for _, d := range run {
		if len(links) == maxRunLinks {
			break
		}
		if sc := trace.SpanContextFromContext(WithTraceContext(context.Background(), d.TraceParent, d.TraceState)); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	first := run[0]
	ctx = WithTraceContext(ctx, first.TraceParent, first.TraceState)
	return tracer.Start(ctx, fmt.Sprintf("deliver %s run", first.Handler), trace.WithLinks(links...), trace.WithAttributes(
		attribute.String("allocation.handler", first.Handler),
		attribute.Int("messaging.batch.message_count", len(run)),
		attribute.String("messaging.message.id", first.MessageID),
	))
}
