//go:build cgo

package usb

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
)

// TestTransferContextEndsWaitForReset: a Reset (or settings call) holds the
// Device while the device answers; Transfer and Control called meanwhile
// wait for it, but their context ending ends the wait at once, with
// nothing submitted and the error an ended context gives. Submit waits, as
// documented, and goes in once Reset returns; so does a Transfer whose
// context did not end. The Device's lock is not left held (a goroutine
// that waited for it lets it go; goleak checks it ended).
func TestTransferContextEndsWaitForReset(t *testing.T) {
	r, f, d := newAdv8Dev(t)
	in, err := d.Endpoint(0x81)
	require.NoError(t, err)

	reset := make(chan error, 1)
	go func() { reset <- d.Reset() }()
	rc := f.next(t)
	require.Equal(t, Setup{RequestType: 0xFF, Request: adv8Reset}, rc.setup)

	type result struct {
		n   int
		err error
	}
	run := func(ctx context.Context, control bool) chan result {
		ch := make(chan result, 1)
		go func() {
			var res result
			if control {
				res.n, res.err = d.Control(ctx, Setup{RequestType: RequestIn | RequestVendor | RecipientDevice, Request: 0x72}, make([]byte, 8))
			} else {
				res.n, res.err = in.Transfer(ctx, make([]byte, 512))
			}
			ch <- res
		}()
		return ch
	}
	ctxC, cancelC := context.WithCancel(context.Background())
	ctxT, cancelT := context.WithCancel(context.Background())
	ctxD, cancelD := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelD()
	ctl, xfer, dl := run(ctxC, true), run(ctxT, false), run(ctxD, false)
	waiter := run(context.Background(), false) // its context never ends

	submitted := make(chan error, 1)
	go func() {
		_, err := in.Submit(make([]byte, 512), Xfer{User: "submit"})
		submitted <- err
	}()

	waitInRlock(t, 4) // Control, Transfer, the waiter and Submit (the deadline's may have ended)
	cancelC()
	cancelT()
	for _, c := range []struct {
		what string
		ch   chan result
		want error
		ctx  error
	}{{"Control", ctl, ErrCanceled, context.Canceled}, {"Transfer", xfer, ErrCanceled, context.Canceled},
		{"Transfer with a deadline", dl, ErrTimeout, context.DeadlineExceeded}} {
		select {
		case res := <-c.ch:
			assert.ErrorIs(t, res.err, c.want, c.what)
			assert.ErrorIs(t, res.err, c.ctx, c.what)
			assert.Zero(t, res.n, c.what)
		case <-time.After(Patience):
			t.Fatalf("%s did not return when its context ended during a Reset", c.what)
		}
	}
	select {
	case res := <-waiter:
		t.Fatalf("a Transfer went in during Reset: %+v", res)
	case err := <-submitted:
		t.Fatalf("a Submit went in during Reset: %v", err)
	default:
	}
	assert.Zero(t, r.InFlight(), "nothing submitted while Reset holds the Device")

	// Reset returns: the waiting Transfer and Submit go in, and so does a
	// new Control (no lock was left held).
	adv4Answer(rc, fakeResult{})
	select {
	case err := <-reset:
		require.NoError(t, err)
	case <-time.After(Patience):
		t.Fatal("Reset did not return")
	}
	for range 2 { // one at a time on the endpoint
		c := f.next(t)
		assert.Equal(t, uint8(0x81), c.addr)
		adv4Answer(c, fakeResult{n: 3})
	}
	require.NoError(t, <-submitted)
	res := <-waiter
	require.NoError(t, res.err)
	assert.Equal(t, 3, res.n)
	comps := Reap(t, r, 1)
	assert.Equal(t, "submit", comps[0].User)

	done := make(chan result, 1)
	go func() {
		n, err := d.Control(context.Background(), Setup{RequestType: RequestIn | RequestVendor | RecipientDevice, Request: 0x73}, make([]byte, 4))
		done <- result{n, err}
	}()
	c := f.next(t)
	assert.Equal(t, uint8(0x73), c.setup.Request)
	adv4Answer(c, fakeResult{n: 4})
	res = <-done
	require.NoError(t, res.err)
	assert.Equal(t, 4, res.n)
	AssertNoMore(t, r)
	assert.Zero(t, f.overlaps.Load())
}

// TestTransferContextEndsWaitForSettings: the same for SetAltSetting, and
// an ended context still refuses before any wait.
func TestTransferContextEndsWaitForSettings(t *testing.T) {
	r, f, d := newAdv8Dev(t)
	out, err := d.Endpoint(0x02)
	require.NoError(t, err)
	set := make(chan error, 1)
	go func() { set <- d.SetAltSetting(0, 1) }()
	sc := f.next(t)
	require.Equal(t, uint8(adv8SetAlt), sc.setup.Request)

	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() {
		_, err := out.Transfer(ctx, []byte("data"))
		ch <- err
	}()
	waitInRlock(t, 1)
	cancel()
	select {
	case err := <-ch:
		assert.ErrorIs(t, err, ErrCanceled)
		assert.ErrorIs(t, err, context.Canceled)
		assert.False(t, errors.Is(err, ioring.ErrInvalid), "%v", err)
	case <-time.After(Patience):
		t.Fatal("Transfer did not return when its context ended during SetAltSetting")
	}
	_, err = out.Transfer(ctx, []byte("data"))
	assert.ErrorIs(t, err, ErrCanceled, "an ended context starts nothing")
	adv4Answer(sc, fakeResult{})
	require.NoError(t, <-set)
	AssertSettled(t, r) // the transfers that returned are counted out just after
	AssertNoMore(t, r)
}

// waitInRlock waits until n goroutines wait in Device.rlock for the
// Device's lock, so that what the test does next finds them waiting.
func waitInRlock(t *testing.T, n int) {
	t.Helper()
	buf := make([]byte, 1<<20)
	require.Eventually(t, func() bool {
		return strings.Count(string(buf[:runtime.Stack(buf, true)]), "usb.(*Device).rlock(") >= n
	}, Patience, time.Millisecond, "%d goroutines waiting for the Device's lock", n)
}
