package integration_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/pressly/goose/v3"

	"allocation/adapters/postgres"
	"allocation/adapters/sqlite"
	"allocation/servicelayer"
	"allocation/tests/testenv"
)

// oldDatabase opens an empty database of engine, not migrated, with the
// goose dialect and migrations folder of that engine.
func oldDatabase(t *testing.T, engine string) (testDB, goose.Dialect, string) {
	t.Helper()
	if engine == "sqlite" {
		return testDB{DB: openSQLite(t, filepath.Join(testenv.SQLiteDir(t), "old.db"))}, goose.DialectSQLite3, "../../adapters/sqlite/migrations"
	}
	url := testenv.FreshDatabase(t)
	db, err := postgres.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return testDB{DB: db, url: url}, goose.DialectPostgres, "../../adapters/postgres/migrations"
}

// A database written by the release before the history columns keeps its
// events through the migration, and they can be queried by order and batch
// from their payloads.
func TestEventsLoggedBeforeTheHistoryMigrationAreQueryable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// The last migration of the release before, per engine.
	for engine, before := range map[string]int64{"postgres": 6, "sqlite": 1} {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			db, dialect, dir := oldDatabase(t, engine)
			old, err := goose.NewProvider(dialect, db.DB.DB, os.DirFS(dir))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := old.UpTo(ctx, before); err != nil {
				t.Fatal(err)
			}
			db.MustExec(db.Rebind(`INSERT INTO event_log (message_id, aggregate, name, payload, occurred_at) VALUES
				(?, 'OLD', 'allocated', '{"orderid":"o1","sku":"OLD","qty":2,"batchref":"b1"}', ?),
				(?, 'OLD', 'deallocated', '{"orderid":"o1","sku":"OLD","qty":2}', ?),
				(?, 'OLD', 'out_of_stock', '{"sku":"OLD"}', ?)`),
				"00000000-0000-4000-8000-000000000001", "2026-01-01 00:00:00+00:00",
				"00000000-0000-4000-8000-000000000002", "2026-01-01 00:00:01+00:00",
				"00000000-0000-4000-8000-000000000003", "2026-01-01 00:00:02+00:00")

			var migrate func(context.Context) error
			if engine == "sqlite" {
				migrate = func(ctx context.Context) error { return sqlite.Migrate(ctx, db.DB) }
			} else {
				migrate = func(ctx context.Context) error { return postgres.Migrate(ctx, db.DB) }
			}
			if err := migrate(ctx); err != nil {
				t.Fatal(err)
			}
			db = reopen(t, db)
			for q, want := range map[servicelayer.EventQuery]int{
				{OrderID: "o1"}:  2,
				{BatchRef: "b1"}: 1,
				{SKU: "OLD"}:     3,
			} {
				found, err := db.store.Events(ctx, q)
				if err != nil || len(found) != want {
					t.Errorf("%+v: %d events (%v), want %d", q, len(found), err, want)
				}
			}
		})
	}
}
