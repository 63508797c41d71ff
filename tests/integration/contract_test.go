package integration_test

import (
	"log/slog"
	"testing"

	"allocation/adapters/postgres"
	"allocation/adapters/sqlite"
	"allocation/adapters/storetest"
	"allocation/bootstrap"
)

// The contract of the storage ports, on both databases; the memory fake
// runs it in the unit tests. A twin is a second store on the same database,
// as another replica would open it.
func TestStoreContractOnPostgres(t *testing.T) {
	storetest.Run(t, storetest.Setup{
		New: func(t *testing.T) storetest.Store { return freshPG(t).store },
		Twin: func(t *testing.T, s storetest.Store) storetest.Store {
			db := openedOn(t, s)
			twin, err := postgres.NewStore(db.DB, db.url, bootstrap.StoreOptions(slog.Default()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { twin.Close() })
			return twin
		},
	})
}

func TestStoreContractOnSQLite(t *testing.T) {
	storetest.Run(t, storetest.Setup{
		New: func(t *testing.T) storetest.Store { return freshSQLite(t).store },
		Twin: func(t *testing.T, s storetest.Store) storetest.Store {
			twin := sqlite.NewStore(openedOn(t, s).DB, bootstrap.StoreOptions(slog.Default()))
			t.Cleanup(func() { twin.Close() })
			return twin
		},
	})
}
