package postgres

import (
	"context"
	"database/sql/driver"
	"fmt"
)

// pruneLockKey is the advisory lock replicas take to prune history one at
// a time; any number no other advisory lock of the database uses.
const pruneLockKey = 0x616c6c6f63707275 // "allocpru"

// TryPruneLock implements sqlstore.PruneLocker with a session advisory
// lock, on a connection kept until release: should this process die, the
// connection closes and the lock is free again.
func (d *Dialect) TryPruneLock(ctx context.Context) (func(), bool, error) {
	conn, err := d.db.Connx(ctx)
	if err != nil {
		return nil, false, d.Classify(fmt.Errorf("take the pruning lock: %w", err))
	}
	var got bool
	if err := conn.GetContext(ctx, &got, `SELECT pg_try_advisory_lock($1)`, int64(pruneLockKey)); err != nil || !got {
		conn.Close()
		if err != nil {
			return nil, false, d.Classify(fmt.Errorf("take the pruning lock: %w", err))
		}
		return nil, false, nil
	}
	release := func() {
		if _, err := conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1)`, int64(pruneLockKey)); err != nil {
			// Back in the pool the connection would keep the lock:
			// closing it is what frees the lock now.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		conn.Close()
	}
	return release, true, nil
}

// EstimateRows implements sqlstore.RowEstimator with the live row count of
// the statistics collector, which follows commits within seconds.
func (d *Dialect) EstimateRows(ctx context.Context, table string) (int, error) {
	var n int
	// The function behind pg_stat_user_tables.n_live_tup: the view joins
	// the catalogs and takes tens of milliseconds.
	err := d.db.GetContext(ctx, &n, `SELECT coalesce(pg_stat_get_live_tuples(to_regclass($1)), 0)`, table)
	if err != nil {
		return 0, d.Classify(fmt.Errorf("estimate the rows of %s: %w", table, err))
	}
	return n, nil
}
