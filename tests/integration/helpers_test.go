package integration_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/jmoiron/sqlx"

	"allocation/adapters/postgres"
	"allocation/adapters/sqlstore"
	"allocation/servicelayer"
	"allocation/tests/testenv"
)

// pg is a fresh, migrated database and the store on it.
type pg struct {
	*sqlx.DB
	url   string
	store *sqlstore.Store
}

// freshPG opens a new, migrated database that is dropped when the test ends.
func freshPG(t testing.TB) pg {
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
	store, err := postgres.NewStore(db, url, slog.Default())
	if err != nil {
		t.Fatalf("store: %v", err)
	}
	t.Cleanup(func() { store.Close() })
	return pg{DB: db, url: url, store: store}
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
func postgresBus(t testing.TB) (*servicelayer.Bus, pg) {
	t.Helper()
	db := freshPG(t)
	bus := servicelayer.NewBus(servicelayer.Dependencies{
		UoW:       db.store,
		Publisher: &recordingPublisher{},
		Notifier:  nopNotifier{},
	})
	return bus, db
}
