package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jmoiron/sqlx"
)

// rawSQL is the reference the service is held against: the least a
// transactional allocation with an outbox costs on this PostgreSQL. It lives
// in its own schema so its tables never meet the service's.
type rawSQL struct {
	db  *sqlx.DB
	url string // for pgbench (flashSalePhases)
}

// rawPool matches the service's PostgreSQL pool, so both get the same
// number of connections.
const rawPool = 20

func newRawSQL(ctx context.Context, dbURL string, skus []string) (*rawSQL, error) {
	db, err := sqlx.ConnectContext(ctx, "postgres", dbURL)
	if err != nil {
		return nil, fmt.Errorf("connect the raw SQL reference: %w", err)
	}
	db.SetMaxOpenConns(rawPool)
	db.SetMaxIdleConns(rawPool)
	schema := []string{
		`CREATE SCHEMA IF NOT EXISTS rawref`,
		// n numbers the products for pgbench's scripts: 1 to 100, the hot one 101.
		`CREATE TABLE rawref.products (sku varchar(255) PRIMARY KEY, n integer UNIQUE NOT NULL, version integer NOT NULL DEFAULT 0)`,
		`CREATE TABLE rawref.allocations (id bigserial PRIMARY KEY, sku varchar(255) NOT NULL, orderid varchar(255) NOT NULL, qty integer NOT NULL)`,
		`CREATE TABLE rawref.events (id bigserial PRIMARY KEY, payload jsonb NOT NULL)`,
	}
	for _, stmt := range schema {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			db.Close()
			return nil, fmt.Errorf("create the raw SQL tables: %w", err)
		}
	}
	for i, sku := range skus {
		if _, err := db.ExecContext(ctx, `INSERT INTO rawref.products (sku, n) VALUES ($1, $2)`, sku, i+1); err != nil {
			db.Close()
			return nil, fmt.Errorf("insert raw product %s: %w", sku, err)
		}
	}
	return &rawSQL{db: db, url: dbURL}, nil
}

func (r *rawSQL) close() error { return r.db.Close() }

// allocate is one transaction: lock the product, record the line, bump the
// version, write the event.
func (r *rawSQL) allocate(ctx context.Context, sku, orderid string) error {
	tx, err := r.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var version int
	if err := tx.GetContext(ctx, &version, `SELECT version FROM rawref.products WHERE sku = $1 FOR UPDATE`, sku); err != nil {
		return fmt.Errorf("lock product %s: %w", sku, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO rawref.allocations (sku, orderid, qty) VALUES ($1, $2, 1)`, sku, orderid); err != nil {
		return fmt.Errorf("insert allocation: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE rawref.products SET version = version + 1 WHERE sku = $1`, sku); err != nil {
		return fmt.Errorf("bump version: %w", err)
	}
	payload := fmt.Sprintf(`{"orderid": %q, "sku": %q, "qty": 1, "version": %d}`, orderid, sku, version+1)
	if _, err := tx.ExecContext(ctx, `INSERT INTO rawref.events (payload) VALUES ($1)`, payload); err != nil {
		return fmt.Errorf("insert event: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// load measures raw transactions from clients goroutines over skus.
func (r *rawSQL) load(ctx context.Context, b *bench, skus []string, clients int, d time.Duration) summary {
	return runLoad(ctx, clients, d, func(ctx context.Context, rng *rand.Rand) error {
		return r.allocate(ctx, skus[rng.IntN(len(skus))], b.newOrder())
	})
}
