package servicelayer

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// DeliveryTimeout bounds one delivery by the dispatcher (a handler and its
// bookkeeping), or one run of deliveries: a store may hand the delivery to
// another dispatcher after that.
const DeliveryTimeout = 4 * time.Second

// RunSize is how many deliveries of one product a batchable handler takes
// at once. A backlog of 10,000 publications is 20 round trips to Redis and
// 20 writes marking them done; one run of 500 line_allocated bodies is about
// 150 kB, which Redis takes in a few milliseconds.
const RunSize = 500

// Dispatcher delivers, in the background, every logged event some handler has
// not done yet: after a crash between commit and delivery, after a handler
// error, while a dependency was down. It sleeps until the next delivery falls
// due, the event log wakes it, or a dependency comes back (Resume).
//
// A product's publications are sent in runs (ClaimRun, one Redis round trip,
// one write marking them done), so that a backlog built during an outage
// drains at thousands per second; other handlers take one delivery at a
// time.
type Dispatcher struct {
	bus    *Bus
	events EventLog
	log    *slog.Logger
	// idle is the longest sleep: a safety net for wake-ups that got lost.
	idle   time.Duration
	batch  int
	resume chan struct{}
}

func NewDispatcher(bus *Bus, events EventLog, log *slog.Logger) *Dispatcher {
	if log == nil {
		log = slog.Default()
	}
	return &Dispatcher{bus: bus, events: events, log: log, idle: 5 * time.Second, batch: 100, resume: make(chan struct{}, 1)}
}

// Resume says a dependency is back (Redis reconnected): every paused handler
// is tried again at once. Its deliveries are due already: a transient
// failure leaves them so.
func (d *Dispatcher) Resume(ctx context.Context) {
	d.bus.Resume()
	select {
	case d.resume <- struct{}{}:
	default:
	}
}

// Run delivers until ctx ends.
func (d *Dispatcher) Run(ctx context.Context) error {
	for {
		progress, err := d.deliverDue(ctx)
		if err != nil && ctx.Err() == nil {
			d.log.ErrorContext(ctx, "dispatcher could not read the event log", "error", err)
		}
		timer := time.NewTimer(d.wait(ctx, progress))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-d.events.Wake():
		case <-d.resume:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// minWait keeps a dispatcher that found only paused work from scanning the
// event log in a loop.
const minWait = 20 * time.Millisecond

// afterProgress is how soon a dispatcher that delivered something looks
// again. A delivery committed behind one it just completed wakes nobody
// (waking the dispatchers on every such write would have them scan the log
// once per request during an outage); marking its predecessor done wakes
// them, but may have looked for followers a moment before it committed.
// Looking again soon catches it within 100 ms instead of the idle poll.
const afterProgress = 100 * time.Millisecond

// wait is how long to sleep after a round: until the next delivery falls
// due, but when what is due now could not be delivered (its handler is
// paused), until the pause ends.
func (d *Dispatcher) wait(ctx context.Context, progress bool) time.Duration {
	wait := d.idle
	if next, err := d.events.NextDue(ctx); err == nil && !next.IsZero() {
		wait = min(wait, time.Until(next))
	}
	if progress {
		wait = min(wait, afterProgress)
	}
	if !progress && wait <= 0 {
		if until := d.bus.PausedUntil(); !until.IsZero() {
			wait = min(d.idle, time.Until(until))
		}
	}
	return max(wait, minWait)
}

// DeliverDue delivers what is due now, round after round, until nothing due
// is left that this process can take.
func (d *Dispatcher) DeliverDue(ctx context.Context) error {
	_, err := d.deliverDue(ctx)
	return err
}

func (d *Dispatcher) deliverDue(ctx context.Context) (bool, error) {
	any := false
	// A handler that failed in this call is not tried again in it: a
	// transient failure leaves its delivery due, for the pause to space
	// the attempts.
	failed := map[string]bool{}
	for ctx.Err() == nil {
		due, err := d.events.Due(ctx, d.batch)
		if err != nil {
			return any, err
		}
		progress := false
		for _, head := range due {
			if failed[head.Handler] || d.bus.Paused(head.Handler) {
				continue
			}
			attempted, ok := d.deliverHead(ctx, head)
			progress = progress || attempted
			failed[head.Handler] = failed[head.Handler] || attempted && !ok
		}
		if !progress {
			return any, nil
		}
		any = true
	}
	return any, nil
}

// deliverHead delivers head, with the run that follows it when its handler
// takes runs. It reports whether an attempt was made, and whether it
// succeeded.
func (d *Dispatcher) deliverHead(ctx context.Context, head Delivery) (attempted, ok bool) {
	if !d.bus.Batchable(head.Handler) {
		return d.deliverOne(ctx, head)
	}
	rctx, cancel := context.WithTimeout(ctx, DeliveryTimeout)
	defer cancel()
	run, err := d.events.ClaimRun(rctx, head, RunSize)
	if err != nil {
		if !errors.Is(err, ErrNotDelivered) {
			d.log.WarnContext(ctx, "could not claim deliveries", "handler", head.Handler, "error", err)
		}
		return false, false
	}
	err = d.bus.DeliverRun(rctx, run)
	if err == nil {
		if err := d.events.CompleteRun(rctx, run); err != nil {
			// They went out; once the claim lapses they go again, and
			// receivers drop the repeats.
			d.log.WarnContext(ctx, "could not mark deliveries done", "deliveries", len(run), "error", err)
		}
		return true, true
	}
	if errors.Is(err, ErrPermanent) && len(run) > 1 {
		// One of them cannot be sent: one at a time finds which, and
		// parks it after its last attempt.
		d.release(ctx, run, nil)
		return d.deliverOne(ctx, head)
	}
	d.release(ctx, run, err)
	return true, false
}

func (d *Dispatcher) release(ctx context.Context, run []Delivery, cause error) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DeliveryTimeout)
	defer cancel()
	if err := d.events.ReleaseRun(rctx, run, cause); err != nil {
		d.log.WarnContext(ctx, "could not release deliveries; they fall due when their claim lapses", "deliveries", len(run), "error", err)
	}
}

func (d *Dispatcher) deliverOne(ctx context.Context, delivery Delivery) (attempted, ok bool) {
	dctx, cancel := context.WithTimeout(ctx, DeliveryTimeout)
	defer cancel()
	err := d.bus.Deliver(dctx, delivery)
	return !errors.Is(err, ErrNotDelivered), err == nil
}
