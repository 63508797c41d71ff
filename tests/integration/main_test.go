package integration_test

import (
	"testing"

	"allocation/tests/testenv"
)

// TestMain fails the run when a test left keys on the shared Redis under
// the prefixes it was given.
func TestMain(m *testing.M) { testenv.ExitUnlessClean(m.Run()) }
