package postgres

import (
	"context"
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

// UnitOfWork runs handlers in PostgreSQL transactions.
type UnitOfWork struct {
	db  *sqlx.DB
	log *slog.Logger
	// retry bounds how long a conflicting transaction keeps being retried.
	retry func() backoff.BackOff
}

// NewUnitOfWork returns a unit of work on db; log may be nil.
func NewUnitOfWork(db *sqlx.DB, log *slog.Logger) *UnitOfWork {
	if log == nil {
		log = slog.Default()
	}
	return &UnitOfWork{db: db, log: log, retry: func() backoff.BackOff {
		bo := backoff.NewExponentialBackOff()
		bo.InitialInterval = 5 * time.Millisecond
		bo.MaxInterval = 250 * time.Millisecond
		bo.MaxElapsedTime = 10 * time.Second
		return bo
	}}
}

// Do implements servicelayer.UnitOfWork. Writers of one product wait for each
// other on the product's row lock, so conflicts are rare; when one happens
// anyway (a racing insert, a serialization failure, a deadlock) fn runs again
// from scratch in a new transaction, with backoff, until ctx ends.
func (u *UnitOfWork) Do(ctx context.Context, fn func(tx servicelayer.Tx) error) ([]domain.Event, error) {
	var events []domain.Event
	attempts := 0
	err := backoff.Retry(func() error {
		attempts++
		var err error
		events, err = u.attempt(ctx, fn)
		if err != nil && !isConflict(err) {
			return backoff.Permanent(err)
		}
		if err != nil {
			u.log.DebugContext(ctx, "retrying transaction after conflict", "attempt", attempts, "error", err)
		}
		return err
	}, backoff.WithContext(u.retry(), ctx))
	return events, err
}

func (u *UnitOfWork) attempt(ctx context.Context, fn func(tx servicelayer.Tx) error) (events []domain.Event, err error) {
	sqlTx, err := u.db.BeginTxx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("begin transaction: %w", err)
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
		return nil, err
	}
	for _, p := range t.seen {
		if err := t.save(ctx, p); err != nil {
			return nil, fmt.Errorf("save product %s: %w", p.SKU(), err)
		}
	}
	if err := sqlTx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	committed = true
	for _, p := range t.seen {
		events = append(events, p.PullEvents()...)
	}
	return events, nil
}

// isConflict reports whether err comes from racing a concurrent transaction.
func isConflict(err error) bool {
	if errors.Is(err, errConflict) {
		return true
	}
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		switch pqErr.Code {
		case "40001", // serialization_failure
			"40P01", // deadlock_detected
			"23505": // unique_violation: a concurrent insert of the same key won
			return true
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
