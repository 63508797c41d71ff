package sqlite

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"allocation/adapters/sqlstore"
	"allocation/servicelayer"
)

// Dialect is SQLite for the SQL store: a unit of work is written statement
// by statement in one transaction (each statement is a function call, not
// a round trip), and the dispatchers are woken through a channel, since one
// process owns the file.
type Dialect struct {
	db    *sqlx.DB
	stmts *sqlstore.Statements
	wake  chan struct{}
}

// NewStore returns the SQL store on db, opened with Open. Closing the store
// does not close db.
func NewStore(db *sqlx.DB, opts sqlstore.Options) *sqlstore.Store {
	return sqlstore.New(db, newDialect(db), opts)
}

func newDialect(db *sqlx.DB) *Dialect {
	return &Dialect{db: db, stmts: sqlstore.NewStatements(db, Classify), wake: make(chan struct{}, 1)}
}

// BindType implements sqlstore.Dialect.
func (d *Dialect) BindType() int { return sqlx.QUESTION }

// Write implements sqlstore.Dialect: the write's plan, one statement per
// step in one transaction.
func (d *Dialect) Write(ctx context.Context, c *sqlstore.Changes) ([]sqlstore.Queued, error) {
	queued, wake, err := sqlstore.RunPlan(ctx, d.db, d.stmts, steps, sqlstore.PlanWrite(c))
	if err != nil {
		return nil, Classify(fmt.Errorf("write unit of work: %w", err))
	}
	if wake {
		d.signal()
	}
	return queued, nil
}

// HeadsQuery implements sqlstore.Dialect. SQLite reads the covering index
// on open deliveries once; it has no lateral join for a loose index scan,
// and in the embedded mode the scan costs no round trip.
func (d *Dialect) HeadsQuery() string {
	return `SELECT aggregate, handler, min(event_id) AS event_id FROM event_deliveries WHERE status <> 'done' GROUP BY aggregate, handler`
}

// MarkDone implements sqlstore.Dialect: the plan's steps, as a write's.
func (d *Dialect) MarkDone(ctx context.Context, done []sqlstore.DeliveryKey, now time.Time) error {
	wake, err := RunMarkDone(ctx, d.db, d.stmts, done, now)
	if err != nil {
		return err
	}
	if wake {
		d.signal()
	}
	return nil
}

// RunMarkDone marks done deliveries on db, keeping its statements in stmts,
// and says whether a delivery waiting for one of them must wake the
// dispatchers.
func RunMarkDone(ctx context.Context, db *sqlx.DB, stmts *sqlstore.Statements, done []sqlstore.DeliveryKey, now time.Time) (wake bool, err error) {
	_, wake, err = sqlstore.RunPlan(ctx, db, stmts, steps, sqlstore.PlanMarkDone(done, now))
	if err != nil {
		return false, Classify(fmt.Errorf("mark %d deliveries done: %w", len(done), err))
	}
	return wake, nil
}

// Notify implements sqlstore.Dialect: the dispatchers to wake are this
// process's.
func (d *Dialect) Notify(context.Context) error {
	d.signal()
	return nil
}

// Wake implements sqlstore.Dialect.
func (d *Dialect) Wake() <-chan struct{} { return d.wake }

// signal wakes the dispatcher; one pending wake-up is as good as many.
func (d *Dialect) signal() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Bookkeeping implements sqlstore.Dialect: SQLite has one pool.
func (d *Dialect) Bookkeeping() *sqlx.DB { return d.db }

// Classify implements sqlstore.Dialect.
func (d *Dialect) Classify(err error) error { return Classify(err) }

// Close implements sqlstore.Dialect: it closes the statements of the
// writes; the database belongs to the caller.
func (d *Dialect) Close() error { return d.stmts.Close() }

// Classify marks what SQLite says, as the PostgreSQL dialect does:
//   - the file locked by another process (busy, after the busy timeout) is
//     a conflict, so a unit of work runs again with backoff, and an
//     unavailable database should it outlast that;
//   - a unique or primary key violation is a concurrent insert of the same
//     key (a batch reference, a line allocated already): a conflict, and the
//     retry reads what won;
//   - the over-allocation check is a decision on totals someone changed
//     meanwhile: a conflict too.
//
// Anything else is returned as it is.
func Classify(err error) error {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return err
	}
	switch code := se.Code(); {
	case code&0xff == sqlite3.SQLITE_BUSY, code&0xff == sqlite3.SQLITE_LOCKED:
		return fmt.Errorf("%w: %w: %w", sqlstore.ErrConflict, servicelayer.ErrUnavailable, err)
	case code == sqlite3.SQLITE_CONSTRAINT_UNIQUE, code == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return fmt.Errorf("%w: %w", sqlstore.ErrConflict, err)
	case code == sqlite3.SQLITE_CONSTRAINT_CHECK && strings.Contains(se.Error(), "batches_not_over_allocated"):
		return fmt.Errorf("%w: %w", sqlstore.ErrConflict, err)
	}
	return err
}
