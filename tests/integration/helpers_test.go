package integration_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"

	"github.com/jmoiron/sqlx"

	"allocation/adapters/postgres"
	"allocation/adapters/sqlite"
	"allocation/adapters/sqlstore"
	"allocation/bootstrap"
	"allocation/servicelayer"
	"allocation/tests/testenv"
)

// testDB is a fresh, migrated database and the store on it.
type testDB struct {
	*sqlx.DB
	url   string // PostgreSQL's; empty for SQLite
	store *sqlstore.Store
}

// opener makes a fresh, migrated database of one engine for a test.
type opener func(t testing.TB) testDB

// engines are the SQL databases the store runs on. The tests that are not
// about one of them run on each.
func engines() map[string]opener {
	return map[string]opener{"postgres": freshPG, "sqlite": freshSQLite}
}

// onEveryEngine runs test once per engine.
func onEveryEngine(t *testing.T, test func(t *testing.T, open opener)) {
	t.Helper()
	onEach(t, engines(), test)
}

// onEach runs test once per implementation, as parallel subtests named
// after it, in parallel with the other tests.
func onEach[T any](t *testing.T, impls map[string]T, test func(t *testing.T, impl T)) {
	t.Helper()
	t.Parallel()
	for name, impl := range impls {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			test(t, impl)
		})
	}
}

// freshPG opens a new, migrated database that is dropped when the test ends.
func freshPG(t testing.TB) testDB {
	t.Helper()
	ctx := context.Background()
	url := testenv.FreshDatabase(t)
	db, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	if err := postgres.Migrate(ctx, db); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	store, err := postgres.NewStore(db, url, bootstrap.StoreOptions(slog.Default()))
	if err != nil {
		t.Fatalf("store: %v", err)
	}
	t.Cleanup(func() { store.Close() })
	return remember(testDB{DB: db, url: url, store: store})
}

// freshSQLite opens a new, migrated database file in the test's temporary
// directory.
func freshSQLite(t testing.TB) testDB {
	t.Helper()
	db := openSQLite(t, filepath.Join(testenv.SQLiteDir(t), "allocation.db"))
	if err := sqlite.Migrate(context.Background(), db); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	store := sqlite.NewStore(db, bootstrap.StoreOptions(slog.Default()))
	t.Cleanup(func() { store.Close() })
	return remember(testDB{DB: db, store: store})
}

// openSQLite opens the database file at path, closed when the test ends.
func openSQLite(t testing.TB, path string) *sqlx.DB {
	t.Helper()
	db, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

type recordingPublisher struct {
	mu    sync.Mutex
	sent  []servicelayer.Envelope
	calls int // Publish and PublishBatch calls
}

func (p *recordingPublisher) Publish(_ context.Context, env servicelayer.Envelope) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent = append(p.sent, env)
	p.calls++
	return nil
}

func (p *recordingPublisher) PublishBatch(_ context.Context, envs []servicelayer.Envelope) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent = append(p.sent, envs...)
	p.calls++
	return nil
}

type nopNotifier struct{}

func (nopNotifier) Send(context.Context, string, string) error { return nil }

// busOn is the real bus on a fresh database of one engine.
func busOn(t testing.TB, open opener) (*servicelayer.Bus, testDB) {
	t.Helper()
	db := open(t)
	bus := servicelayer.NewBus(servicelayer.Dependencies{
		UoW:       db.store,
		Publisher: &recordingPublisher{},
		Notifier:  nopNotifier{},
	})
	return bus, db
}

// postgresBus is the real bus on a fresh PostgreSQL database.
func postgresBus(t testing.TB) (*servicelayer.Bus, testDB) {
	t.Helper()
	return busOn(t, freshPG)
}

// opened maps each store the helpers opened to its database, for tests that
// open a second store on it.
var opened sync.Map

func remember(db testDB) testDB {
	opened.Store(db.store, db)
	return db
}

// openedOn returns the database the helpers opened store on.
func openedOn(t *testing.T, store any) testDB {
	t.Helper()
	db, ok := opened.Load(store)
	if !ok {
		t.Fatalf("%T was not opened by freshPG or freshSQLite", store)
	}
	return db.(testDB)
}
