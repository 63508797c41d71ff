package servicelayer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"allocation/domain"
)

// Result is what a command answers its caller.
type Result struct {
	// BatchRef is the batch a line was allocated to; "" when out of stock.
	BatchRef string
}

type commandHandler func(ctx context.Context, uow commandUnit, cmd domain.Command) (Result, []Delivery, error)

// commandUnit is the unit of work a command handler commits through: the
// command's piece of work, and the inbound message it answers ("" for an
// HTTP request), which its commit records in the inbox.
type commandUnit struct {
	work    Work
	inboxID string
	tracer  trace.Tracer
}

// Do runs fn as the command's atomic change (Work.Do), in a span of its
// own. The events it commits are sealed under that span (NewEnvelope), so their
// deliveries are its children.
func (u commandUnit) Do(ctx context.Context, fn func(tx Tx) error) (queued []Delivery, err error) {
	ctx, span := u.tracer.Start(ctx, "unit_of_work")
	defer func() {
		span.SetAttributes(attribute.Int("allocation.deliveries_queued", len(queued)))
		endSpan(span, err)
	}()
	return u.work.Do(ctx, u.inboxID, fn)
}

// eventHandler runs inside the transaction of its delivery. A handler with
// sendAll can also take many deliveries of one product at once, in order
// (publishing a backlog in one round trip); it changes no stored state.
type eventHandler struct {
	name    string
	handle  func(ctx context.Context, tx Tx, env Envelope) error
	sendAll func(ctx context.Context, envs []Envelope) error
}

// Bus dispatches a command to its handler and then every event that follows
// from it to the event's handlers, in order. It keeps no state between calls,
// so one Bus serves concurrent callers.
type Bus struct {
	uow      UnitOfWork
	commands map[string]commandHandler
	events   map[string][]eventHandler
	log      *slog.Logger
	observer Observer
	pauses   *handlerPauses
	tracer   trace.Tracer
}

// Dependencies are the adapters the handlers need.
type Dependencies struct {
	UoW       UnitOfWork
	Publisher Publisher
	Notifier  Notifier
	Log       *slog.Logger
	// Observer is told the outcome of every command and delivery; optional.
	Observer Observer
	// Retry says how long a handler is paused after a transient failure;
	// DefaultRetryPolicy when zero.
	Retry RetryPolicy
	// TracerProvider makes the spans of commands, units of work and
	// deliveries; the global provider (a no-op unless set) when nil.
	TracerProvider trace.TracerProvider
}

// Observer is told what the bus did, for metrics.
type Observer interface {
	CommandHandled(command string, err error)
	EventDelivered(handler string, err error)
}

type noObserver struct{}

func (noObserver) CommandHandled(string, error) {}
func (noObserver) EventDelivered(string, error) {}

// NewBus wires every handler of the service to its message.
func NewBus(deps Dependencies) *Bus {
	tracer := tracerOf(deps.TracerProvider)
	h := handlers{publisher: deps.Publisher, notifier: deps.Notifier}
	b := &Bus{uow: deps.UoW, log: deps.Log, events: routes(h), observer: deps.Observer, pauses: newHandlerPauses(deps.Retry), tracer: tracer}
	if b.log == nil {
		b.log = slog.Default()
	}
	if b.observer == nil {
		b.observer = noObserver{}
	}
	b.commands = map[string]commandHandler{
		domain.CreateBatch{}.Name():         command(h.createBatch),
		domain.Allocate{}.Name():            command(h.allocate),
		domain.ChangeBatchQuantity{}.Name(): command(h.changeBatchQuantity),
	}
	return b
}

// PublishHandler publishes every event other services hear about
// (line_allocated, line_deallocated). One handler for all of them keeps them
// in one queue per product: a line's line_deallocated goes out before the
// line_allocated of its reallocation.
const PublishHandler = "publish"

// routes says which handlers each event has after the commit that raised it;
// each is delivered through the event log. The allocations view is not one
// of them: the store projects it in the raising commit itself
// (AllocationsViewChange), so that a caller reads its own writes and the
// view can never lag behind or reorder.
func routes(h handlers) map[string][]eventHandler {
	publish := eventHandler{name: PublishHandler, handle: h.publishEvent, sendAll: h.publishEvents}
	return map[string][]eventHandler{
		domain.Allocated{}.Name(): {publish},
		domain.Deallocated{}.Name(): {
			publish,
			event("reallocate", h.reallocate),
		},
		domain.OutOfStock{}.Name(): {
			event("notify_out_of_stock", h.sendOutOfStockNotification),
		},
	}
}

// Routes names the handlers of each event, by event name: a unit of work
// records one delivery of the event for each. An event with no route is on
// record only.
type Routes map[string][]string

// EventRoutes are the routes of the bus's handlers. The composition root
// hands them to the store when it builds it.
func EventRoutes() Routes {
	r := Routes{}
	for name, hs := range routes(handlers{}) {
		for _, h := range hs {
			r[name] = append(r[name], h.name)
		}
	}
	return r
}

// Handle runs cmd and then, right after its commit, every event it leads to,
// so that a caller reads its own writes. The command's error is returned; an
// event handler's error is logged and left to the dispatcher, which retries
// it from the event log: the command's change is committed already.
func (b *Bus) Handle(ctx context.Context, cmd domain.Command) (Result, error) {
	return b.handle(ctx, "", cmd)
}

// HandleMessage is Handle for a command that came as the inbound message
// messageID: the id is recorded in the inbox with the command's change, and
// a message handled before fails with ErrDuplicateMessage.
func (b *Bus) HandleMessage(ctx context.Context, messageID string, cmd domain.Command) (Result, error) {
	return b.handle(ctx, messageID, cmd)
}

func (b *Bus) handle(ctx context.Context, inboxID string, cmd domain.Command) (_ Result, err error) {
	ctx, span := b.tracer.Start(ctx, "bus "+cmd.Name())
	defer func() { endSpan(span, err) }()
	h, ok := b.commands[cmd.Name()]
	if !ok {
		return Result{}, fmt.Errorf("no handler for command %s", cmd.Name())
	}
	work := b.uow.Begin()
	defer work.End()
	hctx, hspan := b.tracer.Start(ctx, "handle "+cmd.Name())
	res, queued, err := h(hctx, commandUnit{work: work, inboxID: inboxID, tracer: b.tracer}, cmd)
	endSpan(hspan, err)
	b.observer.CommandHandled(cmd.Name(), err)
	if err != nil {
		return Result{}, err
	}
	b.drain(ctx, work, queued)
	return res, nil
}

// Deliver runs one delivery from the event log and then every event that
// follows from it. The dispatcher calls it.
func (b *Bus) Deliver(ctx context.Context, d Delivery) error {
	work := b.uow.Begin()
	defer work.End()
	more, err := b.deliver(ctx, work, d)
	b.drain(ctx, work, more)
	return err
}

// InProcessTimeout bounds a delivery made right after its commit, on the
// caller's time: a Redis that stopped answering holds a request for this
// long at most, not for its read timeout, and the delivery is left to the
// dispatcher.
const InProcessTimeout = time.Second

// drain delivers the deliveries a commit queued, and what they queue in
// turn; the queue lives in this call only, so concurrent callers never share
// it. A delivery that is not in turn, or comes after one of its product and
// handler that failed here, is left to the dispatcher, which keeps the order.
func (b *Bus) drain(ctx context.Context, work Work, queue []Delivery) {
	type turn struct{ sku, handler string }
	blocked := map[turn]bool{}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		t := turn{d.Event.ProductSKU(), d.Handler}
		if !d.FirstInLine || blocked[t] || b.pauses.paused(d.Handler, time.Now()) {
			// Left pending for the dispatcher, and so is every later
			// delivery of this product for the handler.
			blocked[t] = true
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, InProcessTimeout)
		var more []Delivery
		var err error
		if run := b.runFrom(d, queue); len(run) > 1 {
			// Several of one product for one batchable handler (the
			// allocations of a group): one call for them all.
			queue = queue[len(run)-1:]
			err = b.sendRun(dctx, run, func(ctx context.Context, send func(context.Context) error) error {
				return work.DeliverRun(ctx, run, send)
			})
		} else {
			more, err = b.deliver(dctx, work, d)
		}
		cancel()
		if err != nil {
			blocked[t] = true
		}
		queue = append(queue, more...)
	}
}

// runFrom is d and the deliveries right after it in queue of the same
// product and handler, queued first in line, when the handler takes runs.
func (b *Bus) runFrom(d Delivery, queue []Delivery) []Delivery {
	if !b.Batchable(d.Handler) {
		return nil
	}
	run := []Delivery{d}
	for _, next := range queue {
		if !next.FirstInLine || next.Handler != d.Handler || next.Event.ProductSKU() != d.Event.ProductSKU() {
			break
		}
		run = append(run, next)
	}
	return run
}

func (b *Bus) deliver(ctx context.Context, work Work, d Delivery) ([]Delivery, error) {
	// What this handler raises was caused by d, in d's chain.
	correlation := d.CorrelationID
	if correlation == "" {
		correlation = d.MessageID // the chain starts here
	}
	ctx = WithCause(ctx, Cause{CausationID: d.MessageID, CorrelationID: correlation})
	var eh *eventHandler
	for i, candidate := range b.events[d.Event.Name()] {
		if candidate.name == d.Handler {
			eh = &b.events[d.Event.Name()][i]
		}
	}
	if eh == nil {
		return nil, fmt.Errorf("event %s has no handler %s", d.Event.Name(), d.Handler)
	}
	ctx, span := startDelivery(ctx, b.tracer, d)
	more, err := work.Deliver(ctx, d, func(tx Tx) error { return eh.handle(ctx, tx, d.Envelope) })
	b.observer.EventDelivered(d.Handler, err)
	if errors.Is(err, ErrNotDelivered) {
		span.SetAttributes(attribute.Bool("allocation.delivered", false))
		span.End()
		b.log.DebugContext(ctx, "delivery left for later", "handler", d.Handler, "event", d.Event.Name(), "message_id", d.MessageID)
		return more, err
	}
	endSpan(span, err)
	b.settled(ctx, d.Handler, err, "event", d.Event.Name(), "message_id", d.MessageID)
	return more, err
}

// settled keeps the handler's pause up to date with the outcome of a
// delivery, and logs a failure.
func (b *Bus) settled(ctx context.Context, handler string, err error, attrs ...any) {
	switch {
	case err == nil:
		b.pauses.succeeded(handler)
	case errors.Is(err, ErrPermanent):
		b.log.ErrorContext(ctx, "event handler refused an event; it is parked after its last attempt",
			append(attrs, "handler", handler, "error", err)...)
	default:
		pause := b.pauses.failed(handler, time.Now())
		b.log.WarnContext(ctx, "event handler failed; it is paused and the dispatcher retries",
			append(attrs, "handler", handler, "retry_in", pause.String(), "error", err)...)
	}
}

// Batchable reports whether handler can take many deliveries at once
// (DeliverRun).
func (b *Bus) Batchable(handler string) bool {
	for _, hs := range b.events {
		for _, eh := range hs {
			if eh.name == handler {
				return eh.sendAll != nil
			}
		}
	}
	return false
}

// DeliverRun hands a run of deliveries of one product and one batchable
// handler, oldest first, to the handler at once. The caller marks them done
// when it returns nil; on an error none of them counts as done.
func (b *Bus) DeliverRun(ctx context.Context, run []Delivery) error {
	if len(run) == 0 {
		return nil
	}
	return b.sendRun(ctx, run, func(ctx context.Context, send func(context.Context) error) error { return send(ctx) })
}

// sendRun sends run through its handler's batch call, by way of deliver
// (which may keep the books around it), in a span of its own.
func (b *Bus) sendRun(ctx context.Context, run []Delivery, deliver func(context.Context, func(context.Context) error) error) error {
	var sendAll func(context.Context, []Envelope) error
	for _, eh := range b.events[run[0].Event.Name()] {
		if eh.name == run[0].Handler {
			sendAll = eh.sendAll
		}
	}
	if sendAll == nil {
		return fmt.Errorf("handler %s cannot take a run: %w", run[0].Handler, ErrPermanent)
	}
	envs := make([]Envelope, len(run))
	for i, d := range run {
		envs[i] = d.Envelope
	}
	ctx, span := startRun(ctx, b.tracer, run)
	err := deliver(ctx, func(ctx context.Context) error { return sendAll(ctx, envs) })
	endSpan(span, err)
	for range run {
		b.observer.EventDelivered(run[0].Handler, err)
	}
	b.settled(ctx, run[0].Handler, err, "events", len(run), "first_message_id", run[0].MessageID)
	return err
}

// Paused reports whether handler is paused after a transient failure.
func (b *Bus) Paused(handler string) bool { return b.pauses.paused(handler, time.Now()) }

// PausedUntil is when the earliest pause ends; zero when none.
func (b *Bus) PausedUntil() time.Time { return b.pauses.next() }

// Pause pauses handler as after a failure, for the longest delay of the
// retry policy or until Resume: its dependency is known to be gone.
func (b *Bus) Pause(handler string) { b.pauses.pauseLongest(handler, time.Now()) }

// Resume ends every pause: a dependency is back.
func (b *Bus) Resume() { b.pauses.resumeAll() }

// command adapts a typed handler to the bus; the map key guarantees the type.
func command[C domain.Command](h func(context.Context, commandUnit, C) (Result, []Delivery, error)) commandHandler {
	return func(ctx context.Context, uow commandUnit, cmd domain.Command) (Result, []Delivery, error) {
		return h(ctx, uow, cmd.(C))
	}
}

func event[E domain.Event](name string, h func(context.Context, Tx, E, Envelope) error) eventHandler {
	return eventHandler{name: name, handle: func(ctx context.Context, tx Tx, env Envelope) error {
		return h(ctx, tx, env.Event.(E), env)
	}}
}

// TracerName is the instrumentation scope of the service's own spans.
const TracerName = "allocation"

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
