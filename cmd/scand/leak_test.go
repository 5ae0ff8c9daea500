package main

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that scand leaves no goroutine behind once it stopped.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
