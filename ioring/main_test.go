package ioring

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(m.Run()) // a child process of a fallback test: no leak check
	}
	goleak.VerifyTestMain(m)
}

// childEnv marks a re-executed test binary (see the fallback tests).
const childEnv = "CANCELIO_TEST_CHILD"
