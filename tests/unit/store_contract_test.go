package unit_test

import (
	"testing"

	"allocation/adapters/memory"
	"allocation/adapters/storetest"
)

// The memory fake keeps the contract of the storage ports that the SQL
// stores keep (the integration tests run it on them), so that unit tests
// against it mean something. Memory has no caches: a second writer on its
// data is the same store.
func TestStoreContractOnMemory(t *testing.T) {
	storetest.Run(t, storetest.Setup{
		New:  func(*testing.T) storetest.Store { return memory.NewStore() },
		Twin: func(_ *testing.T, s storetest.Store) storetest.Store { return s },
	})
}
