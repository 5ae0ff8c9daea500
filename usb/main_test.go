package usb

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/usb/usbsim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// patience bounds every wait for something that must happen: generous, so
// a loaded 2-core machine does not flake.
const patience = 10 * time.Second

// quiet is how long a test watches for something that must not happen
// (or lets a transfer settle into pending).
const quiet = 100 * time.Millisecond

// countFDs counts this process's open fds.
func countFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

// checkFDs makes the test fail if it leaks fds: it registers first, so its
// cleanup runs last.
func checkFDs(t *testing.T) {
	fds := countFDs(t)
	t.Cleanup(func() { assert.Equal(t, fds, countFDs(t), "open fds before and after the test") })
}

// newRing returns a ring closed with the test (CANCELIO_BACKEND picks the
// backend).
func newRing(t testing.TB, entries int) *ioring.Ring {
	t.Helper()
	r, err := ioring.New(ioring.Config{Entries: entries})
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// simDev is a scanner, a ring and the Device on them, all closed with the
// test, and the scanner's endpoints.
type simDev struct {
	r             *ioring.Ring
	s             *usbsim.Scanner
	d             *Device
	out, in, intr *Endpoint
}

func newSimDev(t *testing.T, cfg usbsim.Config) *simDev {
	t.Helper()
	checkFDs(t)
	r := newRing(t, 64)
	s, err := usbsim.NewScanner(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	d, err := OpenSim(r, s)
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	sd := &simDev{r: r, s: s, d: d}
	sd.out, err = d.Endpoint(usbsim.AddrBulkOut)
	require.NoError(t, err)
	sd.in, err = d.Endpoint(usbsim.AddrBulkIn)
	require.NoError(t, err)
	sd.intr, err = d.Endpoint(usbsim.AddrInterruptIn)
	require.NoError(t, err)
	return sd
}

// send is one bulk OUT transfer that must succeed.
func (sd *simDev) send(t testing.TB, payload []byte) {
	t.Helper()
	ctx, cancel := testContext()
	defer cancel()
	n, err := sd.out.Transfer(ctx, payload)
	require.NoError(t, err, "bulk OUT")
	require.Equal(t, len(payload), n, "bulk OUT bytes")
}

// read is one bulk IN transfer into buf that must succeed.
func (sd *simDev) read(t testing.TB, buf []byte) []byte {
	t.Helper()
	ctx, cancel := testContext()
	defer cancel()
	n, err := sd.in.Transfer(ctx, buf)
	require.NoError(t, err, "bulk IN")
	return buf[:n]
}

// reap waits for n completions, generously, and returns them.
func reap(t testing.TB, r *ioring.Ring, n int) []ioring.Completion {
	t.Helper()
	got := make([]ioring.Completion, 0, n)
	buf := make([]ioring.Completion, n)
	deadline := time.Now().Add(patience)
	for len(got) < n {
		left := time.Until(deadline)
		require.Positive(t, left, "got %d of %d completions within %v", len(got), n, patience)
		k, err := r.Reap(buf[:n-len(got)], left)
		require.NoError(t, err)
		got = append(got, buf[:k]...)
	}
	return got
}

// assertNoMore checks that no further completion shows up.
func assertNoMore(t testing.TB, r *ioring.Ring) {
	t.Helper()
	var c [4]ioring.Completion
	n, err := r.Reap(c[:], quiet)
	require.NoError(t, err)
	assert.Zero(t, n, "unexpected completions: %v", c[:n])
}

// pending waits until tok covers k pending requests and they stay pending
// for a while (the device is hung or idle).
func settle(t testing.TB, d *Device, k int) {
	t.Helper()
	require.Eventually(t, func() bool { return d.ring.InFlight() >= k }, patience, time.Millisecond)
	time.Sleep(quiet)
}
