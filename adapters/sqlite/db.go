// Package sqlite keeps the service's data in an embedded SQLite database
// file (modernc.org/sqlite, pure Go: nothing to install), through the same
// SQL store as PostgreSQL. It is the storage of the embedded mode: one
// process owns the file.
package sqlite

import (
	"context"
	"embed"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"allocation/adapters/sqlstore"
)

// BusyTimeout is how long a statement waits for another process's write
// lock (`allocation events replay` while the service runs) before it fails
// with SQLITE_BUSY.
const BusyTimeout = 5 * time.Second

// CacheSize is how much of the file SQLite keeps in its own page cache.
// With SQLite's default, 2 MB, the embedded mode under 16 busy clients read
// the pages of its tables and indexes back from the file through a system
// call each (pread) within its first minute; with 32 MB it hardly reads
// the file at all, and in 100 s runs back to back on 2 busy cores the
// last 50 s went from 401 to 532 and 574 allocations/s. It is memory the
// process may hold on top of the rest.
const CacheSize = 32 << 20

// Open opens (creating it and its directory when missing) the database file
// at path and checks that it answers.
//
// The pool has one connection. SQLite lets one writer in at a time whatever
// the pool holds; with several connections, concurrent units of work would
// meet as SQLITE_BUSY and sleep in SQLite's busy handler (polling, up to
// 100 ms a turn), or fail outright when a transaction that read first tries
// to write. With one, they queue in database/sql instead, in order and
// woken at once, and no statement of this process can find the file locked
// by another of its own. Statements take microseconds, so readers lose
// little by waiting their turn; the product locks and the cache in sqlstore
// keep most reads off the database anyway.
//
// Settings, per connection: WAL (readers in other processes, such as
// `allocation events dead`, do not block the writer), a busy timeout for
// them, foreign keys enforced, synchronous FULL (a 202 survives a power
// loss, as it does on PostgreSQL), transactions that take the write lock
// when they begin (BEGIN IMMEDIATE: no lock upgrade that could fail
// half-way), temporary tables and statement journals in memory (a write's
// set-based statements use them, and losing them in a crash loses nothing:
// the transaction rolls back), and times written as UTC text in one
// layout, which sorts as the times do.
func Open(ctx context.Context, path string) (*sqlx.DB, error) { return OpenDriver(ctx, "sqlite", path) }

// OpenDriver is Open through driver: modernc's "sqlite", or a wrapper of it
// registered under another name (a traced one, tracing.SQLDriver).
func OpenDriver(ctx context.Context, driver, path string) (*sqlx.DB, error) {
	if path == "" || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("sqlite: %q is not a usable file name", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create the data directory: %w", err)
	}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", fmt.Sprintf("cache_size(%d)", -CacheSize/1024))
	q.Add("_pragma", "temp_store(MEMORY)")
	q.Set("_txlock", "immediate")
	q.Set("_time_format", "sqlite")
	q.Set("_timezone", "UTC")
	db, err := sqlx.Open(driver, path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxIdleTime(0)
	db.SetConnMaxLifetime(0)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	return db, nil
}

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate brings the schema up to date. There is no lock between
// processes: one process owns the file.
func Migrate(ctx context.Context, db *sqlx.DB) error {
	return sqlstore.Migrate(ctx, db, goose.DialectSQLite3, migrations)
}

// MigrationStatus lists the migrations with when db applied each, oldest
// first; a nil db is a file not created yet, where every one is pending.
func MigrationStatus(ctx context.Context, db *sqlx.DB) ([]sqlstore.MigrationState, error) {
	return sqlstore.MigrationStatus(ctx, db, goose.DialectSQLite3, migrations)
}
