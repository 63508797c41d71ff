package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"allocation/adapters/sqlstore"
	"allocation/servicelayer"
)

// notifyChannel is the LISTEN/NOTIFY channel that wakes dispatchers.
const notifyChannel = "allocation_events"

// Dialect is PostgreSQL for the SQL store: a unit of work is one statement,
// bookkeeping that may be lost in a crash skips waiting for the disk, and
// dispatchers of every process are woken through LISTEN/NOTIFY.
type Dialect struct {
	db       *sqlx.DB
	stmts    *sqlstore.Statements
	relaxed  *sqlx.DB // synchronous_commit off
	relaxedS *sqlstore.Statements
	listener *pq.Listener
	wake     chan struct{}
	done     chan struct{}
}

// NewStore returns the SQL store on db, which was opened from url; the
// dialect opens a second small pool and a LISTEN connection from url.
// Closing the store releases them, not db.
func NewStore(db *sqlx.DB, rawURL string, opts sqlstore.Options) (*sqlstore.Store, error) {
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	relaxed, err := OpenBookkeeping(rawURL)
	if err != nil {
		return nil, err
	}
	d := &Dialect{db: db, relaxed: relaxed, wake: make(chan struct{}, 1), done: make(chan struct{})}
	d.stmts = sqlstore.NewStatements(db, d.Classify)
	d.relaxedS = sqlstore.NewStatements(relaxed, d.Classify)
	d.listener = pq.NewListener(rawURL, 100*time.Millisecond, 10*time.Second, func(ev pq.ListenerEventType, err error) {
		switch ev {
		case pq.ListenerEventReconnected:
			// Notifications sent while we were away are lost: look again.
			d.signal()
		case pq.ListenerEventConnectionAttemptFailed, pq.ListenerEventDisconnected:
			log.Warn("event log listener lost its connection", "error", err)
		}
	})
	if err := d.listener.Listen(notifyChannel); err != nil {
		d.listener.Close()
		relaxed.Close()
		return nil, fmt.Errorf("listen on %s: %w", notifyChannel, err)
	}
	go d.forward()
	return sqlstore.New(db, d, opts), nil
}

func (d *Dialect) forward() {
	for {
		select {
		case <-d.done:
			return
		case _, ok := <-d.listener.Notify:
			if !ok {
				return
			}
			d.signal()
		}
	}
}

func (d *Dialect) signal() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// BindType implements sqlstore.Dialect.
func (d *Dialect) BindType() int { return sqlx.DOLLAR }

// Wake implements sqlstore.Dialect.
func (d *Dialect) Wake() <-chan struct{} { return d.wake }

// Bookkeeping implements sqlstore.Dialect: the pool whose commits do not
// wait for the disk.
func (d *Dialect) Bookkeeping() *sqlx.DB { return d.relaxed }

// Notify implements sqlstore.Dialect.
func (d *Dialect) Notify(ctx context.Context) error {
	if _, err := d.relaxed.ExecContext(ctx, `SELECT pg_notify($1, '')`, notifyChannel); err != nil {
		return d.Classify(fmt.Errorf("wake dispatchers: %w", err))
	}
	return nil
}

// headsQuery walks the index on open deliveries from one (product, handler)
// to the next (a loose index scan): its cost grows with the number of
// products waiting, not with their backlog. 10,000 deliveries pending on one
// product cost one index probe, not a scan of 10,000 rows.
const headsQuery = `
WITH RECURSIVE heads AS (
	(SELECT aggregate, handler, event_id FROM event_deliveries WHERE status <> 'done'
	 ORDER BY aggregate, handler, event_id LIMIT 1)
	UNION ALL
	SELECT n.aggregate, n.handler, n.event_id FROM heads p CROSS JOIN LATERAL (
		SELECT aggregate, handler, event_id FROM event_deliveries
		WHERE status <> 'done' AND (aggregate, handler) > (p.aggregate, p.handler)
		ORDER BY aggregate, handler, event_id LIMIT 1) n)
SELECT aggregate, handler, event_id FROM heads`

// HeadsQuery implements sqlstore.Dialect.
func (d *Dialect) HeadsQuery() string { return headsQuery }

// Classify implements sqlstore.Dialect.
func (d *Dialect) Classify(err error) error {
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		switch pqErr.Code {
		case "AL001":
			return fmt.Errorf("%w: %w", servicelayer.ErrDuplicateMessage, err)
		case "AL002":
			return fmt.Errorf("%w: %w", servicelayer.ErrNotDelivered, err)
		case "40001", // serialization_failure, and a product that moved on
			"40P01", // deadlock_detected
			"23505": // unique_violation: a concurrent insert of the same key won, or a line allocated already
			return fmt.Errorf("%w: %w", sqlstore.ErrConflict, err)
		case "23514": // check_violation
			if pqErr.Constraint == "batches_not_over_allocated" {
				// Decided on totals someone changed meanwhile: read again.
				return fmt.Errorf("%w: %w", sqlstore.ErrConflict, err)
			}
		}
	}
	return unavailable(err)
}

// Close implements sqlstore.Dialect.
func (d *Dialect) Close() error {
	close(d.done)
	return errors.Join(d.stmts.Close(), d.relaxedS.Close(), d.listener.Close(), d.relaxed.Close())
}
