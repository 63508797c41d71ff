package sqlstore

import (
	"context"
	"fmt"
	"io/fs"

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
