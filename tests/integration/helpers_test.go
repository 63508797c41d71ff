package integration_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/jmoiron/sqlx"

	"allocation/adapters/postgres"
	"allocation/servicelayer"
	"allocation/tests/testenv"
)

// freshDB opens a new, migrated database that is dropped when the test ends.
func freshDB(t testing.TB) *sqlx.DB {
	t.Helper()
	ctx := context.Background()
	db, err := postgres.Open(ctx, testenv.FreshDatabase(t))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	if err := postgres.Migrate(ctx, db); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return db
}

type recordingPublisher struct {
	mu   sync.Mutex
	sent []servicelayer.Envelope
}

func (p *recordingPublisher) Publish(_ context.Context, env servicelayer.Envelope) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent = append(p.sent, env)
	return nil
}

type nopNotifier struct{}

func (nopNotifier) Send(context.Context, string, string) error { return nil }

// postgresBus is the real bus on a fresh database.
func postgresBus(t testing.TB) (*servicelayer.Bus, *sqlx.DB) {
	t.Helper()
	db := freshDB(t)
	bus := servicelayer.NewBus(servicelayer.Dependencies{
		UoW:       postgres.NewUnitOfWork(db, slog.Default()),
		Publisher: &recordingPublisher{},
		Notifier:  nopNotifier{},
	})
	return bus, db
}

func newUoW(db *sqlx.DB) *postgres.UnitOfWork { return postgres.NewUnitOfWork(db, slog.Default()) }
