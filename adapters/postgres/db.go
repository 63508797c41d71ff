// Package postgres stores products, their batches and allocations, and the
// allocations view in PostgreSQL, behind the service layer's ports.
package postgres

import (
	"context"
	"embed"
	"fmt"
	"net/url"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // registers the "postgres" driver
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"allocation/adapters/sqlstore"
)

// Pool limits: enough connections for two cores' worth of work without
// starving PostgreSQL's default max_connections (100) when a few replicas run.
// relaxedConns is the small pool for bookkeeping that need not wait for the
// disk.
const (
	maxOpenConns    = 20
	relaxedConns    = 4
	connMaxIdleTime = 5 * time.Minute
)

// Open connects to the database at url and checks that it answers.
// Statements with arguments are sent with them in one round trip
// (binary_parameters), not prepared first in another; prepared statements
// are planned once (plan_cache_mode), not at every execution: the store's
// statements have the same good plan whatever their arguments.
func Open(ctx context.Context, url string) (*sqlx.DB, error) { return OpenDriver(ctx, "postgres", url) }

// OpenDriver is Open through driver: lib/pq's "postgres", or a wrapper of
// it registered under another name (a traced one, tracing.SQLDriver).
func OpenDriver(ctx context.Context, driver, url string) (*sqlx.DB, error) {
	db, err := pool(driver, url, maxOpenConns, map[string]string{"binary_parameters": "yes", "plan_cache_mode": "force_generic_plan"})
	if err != nil {
		return nil, err
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("ping postgres: %w", err)
	}
	return db, nil
}

// OpenBookkeeping opens the small pool for the writes that need not wait
// for the disk (synchronous_commit off): marking deliveries done, recording
// failures, pruning. Their statements look rows up by key in
// event_deliveries, a table that starts empty and grows with every event,
// so they are planned at every execution (force_custom_plan). A plan made
// once, on a connection's first use while the table was small, stays a
// sequential scan for the connection's life on a server that does not
// re-analyze the table (autovacuum off): at the end of a one-minute
// flash-sale bench the mark-done statement then cost 3.05 ms a call, against
// 0.28 ms planned each time (pg_stat_statements, go run ./cmd/loadgen
// -flashsale-only, 2026-12-02).
func OpenBookkeeping(rawURL string) (*sqlx.DB, error) {
	return pool("postgres", rawURL, relaxedConns, map[string]string{"synchronous_commit": "off", "plan_cache_mode": "force_custom_plan"})
}

// pool opens a pool of up to conns connections to url with the given
// connection parameters; lib/pq sends the ones it does not know itself to
// the server as settings.
func pool(driver, rawURL string, conns int, params map[string]string) (*sqlx.DB, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	q := u.Query()
	for k, v := range params {
		q.Set(k, v)
	}
	u.RawQuery = q.Encode()
	db, err := sqlx.Open(driver, u.String())
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	db.SetConnMaxIdleTime(connMaxIdleTime)
	return db, nil
}

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate brings the schema up to date. An advisory lock makes replicas that
// start together apply each migration once.
func Migrate(ctx context.Context, db *sqlx.DB) error {
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return fmt.Errorf("migration lock: %w", err)
	}
	return sqlstore.Migrate(ctx, db, goose.DialectPostgres, migrations, goose.WithSessionLocker(locker))
}

// MigrationStatus lists the migrations with when db applied each, oldest
// first; it does not wait for a migration in progress.
func MigrationStatus(ctx context.Context, db *sqlx.DB) ([]sqlstore.MigrationState, error) {
	return sqlstore.MigrationStatus(ctx, db, goose.DialectPostgres, migrations)
}
