package usb

import (
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cancelio/cancelio/internal/fdcheck"
	"github.com/cancelio/cancelio/ioring"
)

// The helpers of this file serve this package's tests and, through a dot
// import, its external tests (package usb_test: those that use package
// usbsim, which imports this one): hence their exported names.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Patience bounds every wait for something that must happen: generous, so
// a loaded 2-core machine does not flake.
const Patience = 10 * time.Second

// Quiet is how long a test watches for something that must not happen
// (or lets a transfer settle into pending).
const Quiet = 100 * time.Millisecond

// AssertSettled checks that r's in-flight count reaches 0. The goroutine
// that takes a completion in counts it out just after making it available
// (ioring.Ring.InFlight): a transport's or a reaper's goroutine, a moment
// after another goroutine's Reap or Wait has returned it.
func AssertSettled(t testing.TB, r *ioring.Ring, msgAndArgs ...any) {
	t.Helper()
	if !assert.Eventually(t, func() bool { return r.InFlight() == 0 }, Patience, time.Millisecond, msgAndArgs...) {
		t.Logf("InFlight: %d", r.InFlight())
	}
}

// CheckFDs makes the test fail if it leaks fds (fdcheck.Check): it
// registers first, so its cleanup runs last.
func CheckFDs(t *testing.T) { fdcheck.Check(t) }

// NewRing returns a ring closed with the test (CANCELIO_BACKEND picks the
// backend).
func NewRing(t testing.TB, entries int) *ioring.Ring {
	t.Helper()
	r, err := ioring.New(ioring.Config{Entries: entries})
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// Reap waits for n completions, generously, and returns them.
func Reap(t testing.TB, r *ioring.Ring, n int) []ioring.Completion {
	t.Helper()
	got := make([]ioring.Completion, 0, n)
	buf := make([]ioring.Completion, n)
	deadline := time.Now().Add(Patience)
	for len(got) < n {
		left := time.Until(deadline)
		require.Positive(t, left, "got %d of %d completions within %v", len(got), n, Patience)
		k, err := r.Reap(buf[:n-len(got)], left)
		require.NoError(t, err)
		got = append(got, buf[:k]...)
	}
	return got
}

// AssertNoMore checks that no further completion shows up.
func AssertNoMore(t testing.TB, r *ioring.Ring) {
	t.Helper()
	var c [4]ioring.Completion
	n, err := r.Reap(c[:], Quiet)
	require.NoError(t, err)
	assert.Zero(t, n, "unexpected completions: %v", c[:n])
}

// RandSeed returns CANCELIO_SEED's seed, or a new one: the seed of a
// randomized test, which logs it so that a failure can be repeated.
func RandSeed(t testing.TB) uint64 {
	if s := os.Getenv("CANCELIO_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 0, 64)
		require.NoError(t, err, "CANCELIO_SEED")
		return v
	}
	return rand.Uint64()
}
