// Package sqlstore keeps products, their batches and allocations, the
// allocations view, the event log and the inbox in a SQL database, behind the
// service layer's ports. What differs between databases (how the changes of
// a unit of work are written in one atomic step, how dispatchers are woken,
// which driver errors mean what) is a Dialect's; the rest is here, once.
//
// Units of work are optimistic: a product is read without a lock, decided on
// in Go, and written back with a check that its version did not move, in one
// statement where the dialect can. Within a process, writers of one product
// take turns on an in-process lock first, so the check rarely fails; across
// processes it is what keeps them apart, and a failed check runs the unit of
// work again.
package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jmoiron/sqlx"

	"allocation/adapters/sqlstore/internal/cache"
	"allocation/adapters/sqlstore/internal/groupcommit"
	"allocation/adapters/sqlstore/internal/marking"
	"allocation/adapters/sqlstore/internal/turns"
	"allocation/servicelayer"
)

// ErrConflict marks a write that lost a race with a concurrent one: the unit
// of work runs again from the start.
var ErrConflict = errors.New("concurrent update")

// FirstAttemptGrace is how long a new delivery is left to the process that
// committed its event (it delivers right after commit) before a dispatcher
// takes it: it only matters when that process died in between.
const FirstAttemptGrace = 2 * time.Second

// Dialect is what differs between the databases the store runs on.
type Dialect interface {
	// BindType is the placeholder style of the driver (sqlx.DOLLAR, ...).
	BindType() int
	// Write writes the changes of one unit of work atomically and returns
	// the deliveries it queued, with their event's LogID. A product that
	// changed since it was read fails with ErrConflict, a repeated inbox id
	// with servicelayer.ErrDuplicateMessage, a delivery to mark done that is
	// no longer pending with servicelayer.ErrNotDelivered. Deliveries not in
	// turn, and later deliveries waiting for the one marked done, wake the
	// dispatchers.
	Write(ctx context.Context, c *Changes) ([]Queued, error)
	// MarkDone marks done deliveries whose handler changed nothing stored,
	// and wakes the dispatchers when later deliveries of their product wait
	// for them. Losing this write in a crash is harmless (the delivery is
	// made again and its receivers drop the repeat), so it need not wait for
	// the disk.
	MarkDone(ctx context.Context, done []DeliveryKey, now time.Time) error
	// Bookkeeping is the pool for other writes that may be lost in a crash
	// (pruning): where the database allows, their commits do not wait for
	// the disk.
	Bookkeeping() *sqlx.DB
	// HeadsQuery is a query of the first delivery not done of every
	// product and handler (columns aggregate, handler, event_id), served by
	// the index on open deliveries (aggregate, handler, event_id).
	HeadsQuery() string
	// Notify wakes the dispatchers of every process on the database.
	Notify(ctx context.Context) error
	// Wake delivers the wake-ups, possibly sent by another process.
	Wake() <-chan struct{}
	// Classify marks err with ErrConflict or servicelayer.ErrUnavailable
	// where the driver says so, and returns it.
	Classify(err error) error
	// Close releases what the dialect holds (its listener, extra pools).
	Close() error
}

// The caches a store keeps are hints, bounded so that they never grow with
// the number of products.
const (
	// maxCachedProducts bounds Store.products.
	maxCachedProducts = 10_000
	// MaxCachedOwners bounds Store.owners: a batch never changes product,
	// so what was found once is remembered, up to this many.
	MaxCachedOwners = 10_000
)

// Store implements the storage ports of the service layer: the unit of
// work, the event log the dispatcher reads, and the views queries read.
type Store struct {
	db      *sqlx.DB
	dialect Dialect
	log     *slog.Logger
	policy  servicelayer.RetryPolicy
	// retry bounds how long a conflicting unit of work keeps being retried.
	retry func() backoff.BackOff
	// routes names the handlers of each event; claimLease is how long a
	// dispatcher's claim on a delivery lasts (Options).
	routes     servicelayer.Routes
	claimLease time.Duration
	turns      *turns.Turns
	groups     *productGroups                 // of allocations waiting for a product's turn
	owners     *cache.Bounded[string, string] // batch ref -> sku
	// products keeps each product as this process last read or wrote it:
	// its version and its batches with their allocated totals, no lines. An
	// allocation starts from it instead of reading the database; the write
	// checks the version as always, so a stale entry costs a conflict and a
	// fresh read, never a wrong answer. A line that turns out to be
	// allocated already is refused by the allocations key the same way.
	products *cache.Bounded[string, cachedProduct]
	marks    *marking.Marks[DeliveryKey]
	writes   *groupcommit.Committer[*Changes, []Queued]
	queries  queries
	// deadLetters gathers concurrent dead letters into one write.
	deadLetters deadLetterQueue
	dlQueries   deadLetterQueries

	closeOnce sync.Once
	closeErr  error
	stmts     *Statements
}

// Options are what a store is built with.
type Options struct {
	// Log is slog.Default() when nil.
	Log *slog.Logger
	// Routes names the handlers of each event: a unit of work queues one
	// delivery of the event for each.
	Routes servicelayer.Routes
	// ClaimLease is how long a dispatcher keeps a delivery it took before
	// another may take it, presuming the first died: longer than the
	// dispatcher lets a delivery run.
	ClaimLease time.Duration
}

// New returns a store on db that writes through dialect. It panics
// without Routes or a ClaimLease: a store that queued no deliveries would
// lose every event, one with no lease would let dispatchers take each
// other's deliveries.
func New(db *sqlx.DB, dialect Dialect, opts Options) *Store {
	if len(opts.Routes) == 0 || opts.ClaimLease <= 0 {
		panic("sqlstore.New: Options need Routes and a positive ClaimLease (bootstrap.StoreOptions builds them)")
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	s := &Store{
		db:      db,
		dialect: dialect,
		log:     log,
		policy:  servicelayer.DefaultRetryPolicy(),
		retry: func() backoff.BackOff {
			bo := backoff.NewExponentialBackOff()
			bo.InitialInterval = 2 * time.Millisecond
			bo.MaxInterval = 250 * time.Millisecond
			bo.MaxElapsedTime = 10 * time.Second
			return bo
		},
		routes:     opts.Routes,
		claimLease: opts.ClaimLease,
		turns:      turns.New(),
		owners:     cache.New[string, string](MaxCachedOwners),
		products:   cache.New[string, cachedProduct](maxCachedProducts),
		queries:    rebindQueries(dialect.BindType(), dialect.HeadsQuery()),
		dlQueries:  rebindDeadLetterQueries(dialect.BindType()),
		stmts:      NewStatements(db, dialect.Classify),
		marks: marking.New(func(ctx context.Context, done []DeliveryKey) error {
			return dialect.MarkDone(ctx, done, time.Now().UTC())
		}, log),
	}
	s.groups = newProductGroups(s)
	s.writes = groupcommit.New(groupcommit.Port[*Changes, []Queued]{
		Write:    dialect.Write,
		Merge:    merge,
		Split:    split,
		Products: (*Changes).products,
	})
	return s
}

// SetRetryPolicy changes when failed deliveries are retried or parked.
func (s *Store) SetRetryPolicy(p servicelayer.RetryPolicy) { s.policy = p }

// Close marks done what this process delivered, then releases the prepared
// statements and what the dialect holds; the database handle belongs to the
// caller. Closing twice does nothing more.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.writes.Close()
		s.closeErr = errors.Join(s.marks.Close(context.Background()), s.stmts.Close(), s.dialect.Close())
	})
	return s.closeErr
}

// Statements prepares each query once per pool, on first use: the
// statements of the hot path skip parsing and planning, and cost one round
// trip each.
type Statements struct {
	db       *sqlx.DB
	classify func(error) error
	mu       sync.Mutex
	stmts    map[string]*sqlx.Stmt
}

// NewStatements prepares on db; classify marks the errors of preparing.
func NewStatements(db *sqlx.DB, classify func(error) error) *Statements {
	return &Statements{db: db, classify: classify, stmts: map[string]*sqlx.Stmt{}}
}

// Get returns query prepared.
func (s *Statements) Get(ctx context.Context, query string) (*sqlx.Stmt, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.stmts[query]; ok {
		return st, nil
	}
	st, err := s.db.PreparexContext(ctx, query)
	if err != nil {
		return nil, s.classify(fmt.Errorf("prepare statement: %w", err))
	}
	s.stmts[query] = st
	return st, nil
}

// prepared returns query if it is prepared already, and prepares nothing.
func (s *Statements) prepared(query string) (*sqlx.Stmt, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.stmts[query]
	return st, ok
}

// prepareUnlocked prepares query unless it is prepared already, without
// holding the lock while it waits for a connection: with a pool of one
// (SQLite), a transaction holding it may be looking up its next statement.
// A statement that cannot be prepared is left out.
func (s *Statements) prepareUnlocked(ctx context.Context, query string) {
	if _, ok := s.prepared(query); ok {
		return
	}
	st, err := s.db.PreparexContext(ctx, query)
	if err != nil {
		return
	}
	s.mu.Lock()
	_, twice := s.stmts[query]
	if !twice {
		s.stmts[query] = st
	}
	s.mu.Unlock()
	if twice {
		_ = st.Close()
	}
}

// Close closes every statement prepared.
func (s *Statements) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, st := range s.stmts {
		errs = append(errs, st.Close())
	}
	s.stmts = map[string]*sqlx.Stmt{}
	return errors.Join(errs...)
}
