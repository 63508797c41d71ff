package sqlstore

import (
	"cmp"
	"context"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/pressly/goose/v3"
)

// Migrate applies the migrations in the migrations folder of files that
// db has not seen yet, with goose's dialect for the database.
func Migrate(ctx context.Context, db *sqlx.DB, dialect goose.Dialect, files fs.FS, opts ...goose.ProviderOption) error {
	dir, err := fs.Sub(files, "migrations")
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	provider, err := goose.NewProvider(dialect, db.DB, dir, opts...)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	if _, err := provider.Up(ctx); err != nil {
		return fmt.Errorf("apply migrations: %w", err)
	}
	return nil
}

// MigrationState is one migration of the migrations folder and when the
// database applied it.
type MigrationState struct {
	Version   int64
	Name      string    // the file's name, 00001_schema.sql say
	AppliedAt time.Time // zero while pending
}

// Applied says whether the database has applied the migration.
func (m MigrationState) Applied() bool { return !m.AppliedAt.IsZero() }

// MigrationStatus lists the migrations of the migrations folder of files,
// oldest first, with when db applied each. It takes no lock: it waits for
// no migration in progress, and it changes nothing but creating goose's
// version table when it is missing. A nil db is a database that does not
// exist yet: every migration is pending.
func MigrationStatus(ctx context.Context, db *sqlx.DB, dialect goose.Dialect, files fs.FS) ([]MigrationState, error) {
	dir, err := fs.Sub(files, "migrations")
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	if db == nil {
		names, err := fs.Glob(dir, "*.sql")
		if err != nil {
			return nil, fmt.Errorf("migrations: %w", err)
		}
		states := make([]MigrationState, 0, len(names))
		for _, name := range names {
			version, err := goose.NumericComponent(name)
			if err != nil {
				return nil, fmt.Errorf("migrations: %w", err)
			}
			states = append(states, MigrationState{Version: version, Name: name})
		}
		slices.SortFunc(states, func(a, b MigrationState) int { return cmp.Compare(a.Version, b.Version) })
		return states, nil
	}
	provider, err := goose.NewProvider(dialect, db.DB, dir)
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	statuses, err := provider.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("migration status: %w", err)
	}
	states := make([]MigrationState, len(statuses))
	for i, s := range statuses {
		states[i] = MigrationState{Version: s.Source.Version, Name: path.Base(s.Source.Path)}
		if s.State == goose.StateApplied {
			states[i].AppliedAt = s.AppliedAt.UTC()
		}
	}
	return states, nil
}
