package escl_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no goroutine outlives the tests: job goroutines,
// handlers, the driver's and the simulator's.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
