//go:build cgo && linux

package usb_test

// Shared pieces of the adv5 gadget tests (adv5_gadget_*_test.go): guarded
// buffers that show a write past len or after the completion, the drain
// that proves the bulk IN stream holds nothing stale, and the leak checks.
// The gadget itself is gadget_scanner_test.go's (newGadgetDev).

import (
	"bytes"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// adv5Fill is the byte IN buffers are filled with before a transfer.
const adv5Fill = 0xA5

// adv5Slack is how many bytes past len a guarded buffer has in its
// capacity: a transport that writes there writes past the caller's slice.
const adv5Slack = 64

// adv5Buf returns a buffer of n bytes filled with adv5Fill, whose capacity
// holds adv5Slack more bytes filled likewise.
func adv5Buf(n int) []byte {
	b := bytes.Repeat([]byte{adv5Fill}, n+adv5Slack)
	return b[:n]
}

// adv5Untouched reports the first byte of b[from:cap(b)] that is not
// adv5Fill, or -1.
func adv5Untouched(b []byte, from int) int {
	full := b[:cap(b)]
	for i := max(from, 0); i < len(full); i++ {
		if full[i] != adv5Fill {
			return i
		}
	}
	return -1
}

// adv5Seq makes echo payloads unique across the tests.
var adv5Seq atomic.Uint32

// adv5Payload returns a unique echo payload of n bytes (n >= 8).
func adv5Payload(n int) []byte {
	id := adv5Seq.Add(1)
	b := []byte(fmt.Sprintf("a5-%05d", id))
	for len(b) < n {
		b = append(b, byte('a'+(len(b)*7+int(id))%26))
	}
	return b[:n]
}

// adv5Drain proves what bulk IN still holds: it sends a one-byte nop (it
// ends a device transfer a cut nop left open) and a sentinel echo, then
// reads bulk IN until the sentinel and returns what came before it.
func adv5Drain(tb testing.TB, gd *gadgetDev) []byte {
	tb.Helper()
	gd.send(tb, []byte{usbsim.CmdNop})
	sentinel := adv5Payload(40)
	gd.send(tb, usbsim.EchoCommand(sentinel))
	var got []byte
	deadline := time.Now().Add(Patience)
	for time.Now().Before(deadline) {
		b := gd.read(tb, gd.maxTransfer)
		if bytes.Equal(b, sentinel) {
			return got
		}
		got = append(got, b...)
	}
	require.Failf(tb, "drain", "sentinel %q did not come back; got %q", sentinel, got)
	return nil
}

// adv5DrainEvents reads interrupt IN until it stays quiet for quiet and
// returns the status events among what came.
func adv5DrainEvents(tb testing.TB, gd *gadgetDev, quiet time.Duration) int {
	tb.Helper()
	status := 0
	for range 200 {
		buf := make([]byte, gd.intr.Desc().MaxPacketSize)
		q, err := gd.intr.Start(buf, Xfer{Deadline: quiet})
		require.NoError(tb, err)
		ctx, cancel := testContext()
		c, err := q.Wait(ctx)
		cancel()
		require.NoError(tb, err)
		if errors.Is(c.Err, ErrTimeout) {
			require.Zero(tb, c.N, "interrupt IN timed out with bytes")
			return status
		}
		require.NoError(tb, c.Err, "interrupt IN drain")
		e, err := usbsim.ParseEvent(buf[:c.N])
		if assert.NoError(tb, err, "interrupt IN event") && e.Kind == usbsim.EventStatus {
			status++
		}
	}
	require.Fail(tb, "interrupt IN never goes quiet")
	return status
}

// adv5Leaks registers the checks that nothing outlives the test:
// goroutines (on top of those running now), and mappings of usbfs nodes
// and io_uring rings. Call it before newGadgetDev, whose fd check then
// runs too; the cleanup runs after everything else closed.
func adv5Leaks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	usbMaps, uringMaps := countMaps(t)
	t.Cleanup(func() {
		goleak.VerifyNone(t, ignore)
		u, r := countMaps(t)
		assert.Equal(t, usbMaps, u, "mappings of usbfs nodes before and after")
		assert.Equal(t, uringMaps, r, "mappings of io_uring rings before and after")
	})
}

// adv5Settled checks that r has nothing in flight and that its counters
// agree: every request it accepted has completed.
func adv5Settled(t testing.TB, r *ioring.Ring, what string) {
	t.Helper()
	AssertSettled(t, r, "%s: requests in flight", what)
	st := r.Stats()
	assert.Equal(t, st.Submitted, st.Completed, "%s: Stats Submitted and Completed", what)
	assert.Zero(t, st.InFlight, "%s: Stats.InFlight", what)
}

// adv5NoMore checks, without waiting, that r has no completion left.
func adv5NoMore(t testing.TB, r *ioring.Ring, what string) {
	t.Helper()
	var cs [8]ioring.Completion
	n, err := r.Reap(cs[:], 0)
	require.NoError(t, err)
	assert.Zero(t, n, "%s: completions nobody expected: %+v", what, cs[:n])
}

// adv5Within runs f and fails the test when it takes longer than d.
func adv5Within(t testing.TB, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		require.Failf(t, "too slow", "%s did not return within %v", what, d)
	}
}
