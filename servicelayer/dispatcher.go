package servicelayer

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// DeliveryTimeout bounds one delivery by the dispatcher (a handler and its
// bookkeeping): a store may hand the delivery to another dispatcher after
// that.
const DeliveryTimeout = 4 * time.Second

// Dispatcher delivers, in the background, every logged event some handler has
// not done yet: after a crash between commit and delivery, after a handler
// error, while a dependency was down. It sleeps until the next delivery falls
// due or the event log wakes it.
type Dispatcher struct {
	bus    *Bus
	events EventLog
	log    *slog.Logger
	// idle is the longest sleep: a safety net for wake-ups that got lost.
	idle  time.Duration
	batch int
}

func NewDispatcher(bus *Bus, events EventLog, log *slog.Logger) *Dispatcher {
	if log == nil {
		log = slog.Default()
	}
	return &Dispatcher{bus: bus, events: events, log: log, idle: 5 * time.Second, batch: 100}
}

// Run delivers until ctx ends.
func (d *Dispatcher) Run(ctx context.Context) error {
	for {
		if err := d.DeliverDue(ctx); err != nil && ctx.Err() == nil {
			d.log.ErrorContext(ctx, "dispatcher could not read the event log", "error", err)
		}
		wait := d.idle
		if next, err := d.events.NextDue(ctx); err == nil && !next.IsZero() {
			wait = min(wait, max(time.Until(next), time.Millisecond))
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-d.events.Wake():
		case <-timer.C:
		}
		timer.Stop()
	}
}

// DeliverDue delivers what is due now, batch after batch, until nothing due
// is left that this process can take.
func (d *Dispatcher) DeliverDue(ctx context.Context) error {
	for ctx.Err() == nil {
		due, err := d.events.Due(ctx, d.batch)
		if err != nil {
			return err
		}
		progress := false
		for _, delivery := range due {
			dctx, cancel := context.WithTimeout(ctx, DeliveryTimeout)
			err := d.bus.Deliver(dctx, delivery)
			cancel()
			if err == nil {
				progress = true
			} else if !errors.Is(err, ErrNotDelivered) {
				// Recorded as a failure with its next attempt; the next
				// batch moves on to other products.
				progress = true
			}
		}
		if !progress {
			return nil
		}
	}
	return nil
}
