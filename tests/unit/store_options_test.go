package unit_test

import (
	"log/slog"
	"testing"
	"time"

	"allocation/adapters/sqlite"
	"allocation/adapters/sqlstore"
	"allocation/bootstrap"
)

// A store built without the handlers' routes would queue no delivery and
// so lose every event; without a lease, dispatchers would take each other's
// deliveries. It refuses to be built so, rather than run so.
func TestAStoreRefusesOptionsThatWouldLoseEvents(t *testing.T) {
	t.Parallel()
	full := bootstrap.StoreOptions(slog.Default())
	for name, opts := range map[string]sqlstore.Options{
		"no options":  {},
		"no routes":   {ClaimLease: time.Second},
		"no lease":    {Routes: full.Routes},
		"lease below": {Routes: full.Routes, ClaimLease: -time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatalf("a store was built with %+v", opts)
				}
			}()
			sqlite.NewStore(nil, opts)
		})
	}
	if len(full.Routes["allocated"]) == 0 || full.ClaimLease <= 0 {
		t.Fatalf("bootstrap's options %+v route no allocated event or have no lease", full)
	}
}
