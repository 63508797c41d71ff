package servicelayer

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"

	"allocation/domain"
)

// Result is what a command answers its caller.
type Result struct {
	// BatchRef is the batch a line was allocated to; "" when out of stock.
	BatchRef string
}

type commandHandler func(ctx context.Context, cmd domain.Command) (Result, []domain.Event, error)

type eventHandler struct {
	name   string
	handle func(ctx context.Context, env Envelope) ([]domain.Event, error)
}

// Bus dispatches a command to its handler and then every event that follows
// from it to the event's handlers, in order. It keeps no state between calls,
// so one Bus serves concurrent callers.
type Bus struct {
	commands map[string]commandHandler
	events   map[string][]eventHandler
	log      *slog.Logger
	now      func() time.Time
	// retry builds the backoff for one failing event handler.
	retry func() backoff.BackOff
}

// Dependencies are the adapters the handlers need.
type Dependencies struct {
	UoW       UnitOfWork
	Publisher Publisher
	Notifier  Notifier
	Log       *slog.Logger
	// Now is the clock that stamps events; time.Now when nil.
	Now func() time.Time
}

// NewBus wires every handler of the service to its message.
func NewBus(deps Dependencies) *Bus {
	h := handlers{uow: deps.UoW, publisher: deps.Publisher, notifier: deps.Notifier}
	b := &Bus{
		log: deps.Log,
		now: deps.Now,
		retry: func() backoff.BackOff {
			bo := backoff.NewExponentialBackOff()
			bo.InitialInterval = 10 * time.Millisecond
			bo.MaxInterval = 200 * time.Millisecond
			return backoff.WithMaxRetries(bo, 2)
		},
	}
	if b.log == nil {
		b.log = slog.Default()
	}
	if b.now == nil {
		b.now = time.Now
	}
	b.commands = map[string]commandHandler{
		domain.CreateBatch{}.Name():         command(h.createBatch),
		domain.Allocate{}.Name():            command(h.allocate),
		domain.ChangeBatchQuantity{}.Name(): command(h.changeBatchQuantity),
	}
	b.events = map[string][]eventHandler{
		domain.Allocated{}.Name(): {
			event("add_allocation_to_read_model", h.addAllocationToReadModel),
			event("publish_allocated_event", h.publishAllocatedEvent),
		},
		domain.Deallocated{}.Name(): {
			event("remove_allocation_from_read_model", h.removeAllocationFromReadModel),
			event("reallocate", h.reallocate),
		},
		domain.OutOfStock{}.Name(): {
			event("send_out_of_stock_notification", h.sendOutOfStockNotification),
		},
	}
	return b
}

// Handle runs cmd and then every event it leads to. The command's error is
// returned; an event handler's error is logged after a few retries and never
// fails the command, whose change is already committed.
func (b *Bus) Handle(ctx context.Context, cmd domain.Command) (Result, error) {
	h, ok := b.commands[cmd.Name()]
	if !ok {
		return Result{}, fmt.Errorf("no handler for command %s", cmd.Name())
	}
	res, events, err := h(ctx, cmd)
	if err != nil {
		return Result{}, err
	}
	// The queue lives in this call only: concurrent commands never share it.
	queue := seal(events, b.now())
	for len(queue) > 0 {
		env := queue[0]
		queue = queue[1:]
		for _, eh := range b.events[env.Event.Name()] {
			more := b.handleEvent(ctx, eh, env)
			queue = append(queue, seal(more, b.now())...)
		}
	}
	return res, nil
}

func (b *Bus) handleEvent(ctx context.Context, eh eventHandler, env Envelope) []domain.Event {
	var events []domain.Event
	attempt := 0
	err := backoff.Retry(func() error {
		attempt++
		var err error
		events, err = eh.handle(ctx, env)
		return err
	}, backoff.WithContext(b.retry(), ctx))
	if err != nil {
		b.log.ErrorContext(ctx, "event handler failed",
			"handler", eh.name, "event", env.Event.Name(), "message_id", env.MessageID,
			"attempts", attempt, "error", err)
		return nil
	}
	return events
}

// command adapts a typed handler to the bus; the map key guarantees the type.
func command[C domain.Command](h func(context.Context, C) (Result, []domain.Event, error)) commandHandler {
	return func(ctx context.Context, cmd domain.Command) (Result, []domain.Event, error) {
		return h(ctx, cmd.(C))
	}
}

func event[E domain.Event](name string, h func(context.Context, E, Envelope) ([]domain.Event, error)) eventHandler {
	return eventHandler{name: name, handle: func(ctx context.Context, env Envelope) ([]domain.Event, error) {
		return h(ctx, env.Event.(E), env)
	}}
}
