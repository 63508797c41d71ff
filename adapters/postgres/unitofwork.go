package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"allocation/domain"
	"allocation/servicelayer"
)

// errConflict marks a transaction that lost a race with a concurrent one; the
// unit of work runs it again.
var errConflict = errors.New("concurrent update")

// notifyChannel is the LISTEN/NOTIFY channel that wakes dispatchers.
const notifyChannel = "allocation_events"

// firstAttemptGrace is how long a new delivery is left to the process that
// committed its event (it delivers right after commit) before a dispatcher
// takes it: it only matters when that process died in between.
const firstAttemptGrace = 2 * time.Second

// UnitOfWork runs handlers in PostgreSQL transactions.
type UnitOfWork struct {
	db     *sqlx.DB
	log    *slog.Logger
	policy servicelayer.RetryPolicy
	// retry bounds how long a conflicting transaction keeps being retried.
	retry func() backoff.BackOff
}

// NewUnitOfWork returns a unit of work on db; log may be nil.
func NewUnitOfWork(db *sqlx.DB, log *slog.Logger) *UnitOfWork {
	if log == nil {
		log = slog.Default()
	}
	return &UnitOfWork{db: db, log: log, policy: servicelayer.DefaultRetryPolicy(), retry: func() backoff.BackOff {
		bo := backoff.NewExponentialBackOff()
		bo.InitialInterval = 5 * time.Millisecond
		bo.MaxInterval = 250 * time.Millisecond
		bo.MaxElapsedTime = 10 * time.Second
		return bo
	}}
}

// SetRetryPolicy changes when failed deliveries are retried or parked.
func (u *UnitOfWork) SetRetryPolicy(p servicelayer.RetryPolicy) { u.policy = p }

// Do implements servicelayer.UnitOfWork. Writers of one product wait for each
// other on the product's row lock, so conflicts are rare; when one happens
// anyway (a racing insert, a serialization failure, a deadlock) fn runs again
// from scratch in a new transaction, with backoff, until ctx ends.
func (u *UnitOfWork) Do(ctx context.Context, fn func(tx servicelayer.Tx) error) ([]servicelayer.Envelope, error) {
	messageID := servicelayer.MessageID(ctx)
	return u.retrying(ctx, func() ([]servicelayer.Envelope, error) {
		return u.transaction(ctx, func(t *tx) error {
			if messageID != "" {
				if err := t.recordInbound(ctx, messageID); err != nil {
					return err
				}
			}
			return fn(t)
		})
	})
}

// Deliver implements servicelayer.UnitOfWork.
func (u *UnitOfWork) Deliver(ctx context.Context, d servicelayer.Delivery, fn func(tx servicelayer.Tx) error) ([]servicelayer.Envelope, error) {
	var attempts int
	events, err := u.retrying(ctx, func() ([]servicelayer.Envelope, error) {
		return u.transaction(ctx, func(t *tx) error {
			var err error
			if attempts, err = t.takeDelivery(ctx, d); err != nil {
				return err
			}
			if err := fn(t); err != nil {
				return &handlerError{err}
			}
			return t.markDone(ctx, d)
		})
	})
	if errors.Is(err, errWaitsForEarlier) {
		return nil, u.deferDelivery(ctx, d)
	}
	var failed *handlerError
	if errors.As(err, &failed) {
		if recErr := u.recordFailure(ctx, d, attempts+1, failed.err); recErr != nil {
			return nil, errors.Join(failed.err, recErr)
		}
		return nil, failed.err
	}
	return events, err
}

// errWaitsForEarlier: an earlier event of the same product is still pending
// for the handler.
var errWaitsForEarlier = errors.New("an earlier event of the product is pending")

// defer makes d due at once and wakes a dispatcher, which delivers it after
// the earlier events, in order.
func (u *UnitOfWork) deferDelivery(ctx context.Context, d servicelayer.Delivery) error {
	if _, err := u.db.ExecContext(ctx, `
		WITH updated AS (
			UPDATE event_deliveries SET next_attempt_at = now()
			WHERE event_id = $1 AND handler = $2 AND status = 'pending'
			RETURNING 1)
		SELECT pg_notify($3, '') FROM updated`, d.LogID, d.Handler, notifyChannel); err != nil {
		return fmt.Errorf("defer delivery %d/%s: %w", d.LogID, d.Handler, err)
	}
	return servicelayer.ErrNotDelivered
}

// handlerError is a handler's own failure, as opposed to the bookkeeping's.
type handlerError struct{ err error }

func (e *handlerError) Error() string { return e.err.Error() }
func (e *handlerError) Unwrap() error { return e.err }

func (u *UnitOfWork) retrying(ctx context.Context, attempt func() ([]servicelayer.Envelope, error)) ([]servicelayer.Envelope, error) {
	var events []servicelayer.Envelope
	tries := 0
	err := backoff.Retry(func() error {
		tries++
		var err error
		events, err = attempt()
		if err != nil && !isConflict(err) {
			return backoff.Permanent(err)
		}
		if err != nil {
			u.log.DebugContext(ctx, "retrying transaction after conflict", "attempt", tries, "error", err)
		}
		return err
	}, backoff.WithContext(u.retry(), ctx))
	return events, err
}

// transaction runs fn, saves every product it saw, logs their events, and
// commits. Anything but a successful commit rolls back.
func (u *UnitOfWork) transaction(ctx context.Context, fn func(t *tx) error) (events []servicelayer.Envelope, err error) {
	sqlTx, err := u.db.BeginTxx(ctx, nil)
	if err != nil {
		return nil, unavailable(fmt.Errorf("begin transaction: %w", err))
	}
	committed := false
	defer func() {
		if !committed {
			// The error that matters is the one that made us roll back.
			_ = sqlTx.Rollback()
		}
	}()
	t := &tx{sql: sqlTx, snapshots: map[string]productSnapshot{}}
	if err := fn(t); err != nil {
		return nil, unavailable(err)
	}
	for _, p := range t.seen {
		if err := t.save(ctx, p); err != nil {
			return nil, fmt.Errorf("save product %s: %w", p.SKU(), err)
		}
	}
	for _, p := range t.seen {
		for _, ev := range p.PullEvents() {
			env, err := t.logEvent(ctx, ev)
			if err != nil {
				return nil, err
			}
			events = append(events, env)
		}
	}
	if err := sqlTx.Commit(); err != nil {
		return nil, unavailable(fmt.Errorf("commit: %w", err))
	}
	committed = true
	return events, nil
}

// isConflict reports whether err comes from racing a concurrent transaction.
func isConflict(err error) bool {
	var failed *handlerError
	if errors.As(err, &failed) {
		// A handler that raced another transaction is retried as a whole.
		err = failed.err
	}
	if errors.Is(err, errConflict) {
		return true
	}
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		switch pqErr.Code {
		case "40001", // serialization_failure
			"40P01", // deadlock_detected
			"23505": // unique_violation: a concurrent insert of the same key won
			return pqErr.Constraint != "inbox_pkey"
		}
	}
	return false
}

// tx is one transaction's view of the ports.
type tx struct {
	sql       *sqlx.Tx
	seen      []*domain.Product
	snapshots map[string]productSnapshot
}

func (t *tx) Products() servicelayer.Products                { return (*repository)(t) }
func (t *tx) Allocations() servicelayer.AllocationsReadModel { return (*readModel)(t) }

// recordInbound claims an inbound message id; a concurrent claim of the same
// id waits for this transaction and then finds it taken.
func (t *tx) recordInbound(ctx context.Context, messageID string) error {
	res, err := t.sql.ExecContext(ctx, `INSERT INTO inbox (message_id) VALUES ($1) ON CONFLICT DO NOTHING`, messageID)
	if err != nil {
		return fmt.Errorf("record inbound message %s: %w", messageID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("message %s: %w", messageID, servicelayer.ErrDuplicateMessage)
	}
	return nil
}

// logEvent writes ev to the event log with one pending delivery per handler.
func (t *tx) logEvent(ctx context.Context, ev domain.Event) (servicelayer.Envelope, error) {
	env := servicelayer.Seal(ctx, ev, time.Now())
	payload, err := encodeEvent(ev)
	if err != nil {
		return env, err
	}
	if err := t.sql.GetContext(ctx, &env.LogID, `
		INSERT INTO event_log (message_id, aggregate, name, payload, occurred_at, causation_id, correlation_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`,
		env.MessageID, ev.ProductSKU(), ev.Name(), payload, env.OccurredAt, env.CausationID, env.CorrelationID); err != nil {
		return env, fmt.Errorf("log event %s: %w", ev.Name(), err)
	}
	if _, err := t.sql.ExecContext(ctx, `
		INSERT INTO event_deliveries (event_id, handler, aggregate, next_attempt_at)
		SELECT $1, handler, $2, now() + $4 * interval '1 millisecond' FROM unnest($3::text[]) AS handler`,
		env.LogID, ev.ProductSKU(), pq.Array(servicelayer.EventHandlers(ev.Name())), firstAttemptGrace.Milliseconds()); err != nil {
		return env, fmt.Errorf("queue deliveries of event %d: %w", env.LogID, err)
	}
	return env, nil
}

// takeDelivery locks d for this transaction and returns how often it was
// tried. It refuses with ErrNotDelivered when d is not pending, is held by
// another transaction, or must wait for an earlier event of its product.
func (t *tx) takeDelivery(ctx context.Context, d servicelayer.Delivery) (int, error) {
	var row struct {
		Status   string `db:"status"`
		Attempts int    `db:"attempts"`
	}
	err := t.sql.GetContext(ctx, &row, `
		SELECT status, attempts FROM event_deliveries
		WHERE event_id = $1 AND handler = $2 FOR UPDATE SKIP LOCKED`, d.LogID, d.Handler)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, servicelayer.ErrNotDelivered
	}
	if err != nil {
		return 0, fmt.Errorf("lock delivery %d/%s: %w", d.LogID, d.Handler, err)
	}
	if row.Status != "pending" {
		return 0, servicelayer.ErrNotDelivered
	}
	var earlier bool
	if err := t.sql.GetContext(ctx, &earlier, `
		SELECT EXISTS (SELECT 1 FROM event_deliveries
		WHERE aggregate = $1 AND handler = $2 AND status = 'pending' AND event_id < $3)`,
		d.Event.ProductSKU(), d.Handler, d.LogID); err != nil {
		return 0, fmt.Errorf("check order of delivery %d/%s: %w", d.LogID, d.Handler, err)
	}
	if earlier {
		return 0, errWaitsForEarlier
	}
	return row.Attempts, nil
}

func (t *tx) markDone(ctx context.Context, d servicelayer.Delivery) error {
	if _, err := t.sql.ExecContext(ctx, `
		UPDATE event_deliveries SET status = 'done', attempts = attempts + 1, last_error = NULL, updated_at = now()
		WHERE event_id = $1 AND handler = $2`, d.LogID, d.Handler); err != nil {
		return fmt.Errorf("mark delivery %d/%s done: %w", d.LogID, d.Handler, err)
	}
	return nil
}

// recordFailure notes a failed attempt and when to try again, or parks the
// delivery as dead after its last attempt, and wakes the dispatchers.
func (u *UnitOfWork) recordFailure(ctx context.Context, d servicelayer.Delivery, attempts int, cause error) error {
	status := "pending"
	if attempts >= u.policy.MaxAttempts {
		status = "dead"
	}
	delay := u.policy.Delay(attempts)
	// The failure is recorded even when the request that hit it is gone.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, err := u.db.ExecContext(ctx, `
		WITH updated AS (
			UPDATE event_deliveries
			SET attempts = $3, status = $4, last_error = $5, updated_at = now(),
			    next_attempt_at = now() + $6 * interval '1 millisecond'
			WHERE event_id = $1 AND handler = $2 AND status = 'pending'
			RETURNING 1)
		SELECT pg_notify($7, '') FROM updated`,
		d.LogID, d.Handler, attempts, status, cause.Error(), delay.Milliseconds(), notifyChannel)
	if err != nil {
		return fmt.Errorf("record failure of delivery %d/%s: %w", d.LogID, d.Handler, err)
	}
	if status == "dead" {
		u.log.ErrorContext(ctx, "event parked as dead", "event_id", d.LogID, "handler", d.Handler,
			"message_id", d.MessageID, "attempts", attempts, "error", cause)
	}
	return nil
}
