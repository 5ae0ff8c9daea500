package usb_test

// Adversarial tests at the seams between the ring, the Pump and the
// simulated scanner: both ring backends, several devices on one ring, an
// unplug racing cancels, and the error identities each seam must keep.

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// adv2Dev is a scanner and a Device on ring r, closed with the test.
type adv2Dev struct {
	s             *usbsim.Scanner
	d             *Device
	in, out, intr *Endpoint
}

func adv2Open(t *testing.T, r *ioring.Ring, cfg usbsim.Config) *adv2Dev {
	t.Helper()
	s, err := usbsim.NewScanner(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	d, err := usbsim.Open(r, s)
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	ad := &adv2Dev{s: s, d: d}
	ad.in, err = d.Endpoint(usbsim.AddrBulkIn)
	require.NoError(t, err)
	ad.out, err = d.Endpoint(usbsim.AddrBulkOut)
	require.NoError(t, err)
	ad.intr, err = d.Endpoint(usbsim.AddrInterruptIn)
	require.NoError(t, err)
	return ad
}

// adv2Ring makes a ring on backend b, closed with the test; it skips only
// where the backend cannot run on this machine.
func adv2Ring(t *testing.T, b ioring.Backend, entries int) *ioring.Ring {
	t.Helper()
	r, err := ioring.New(ioring.Config{Entries: entries, Backend: b})
	if err != nil && errors.Is(err, ioring.ErrNotSupported) {
		t.Skipf("backend %v: %v", b, err)
	}
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// adv2Class names the outcome of a transfer by the sentinel errors it is.
func adv2Class(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrTimeout):
		if !errors.Is(err, ErrCanceled) {
			return "timeout-not-cancel"
		}
		return "timeout"
	case errors.Is(err, ErrCanceled):
		return "canceled"
	case errors.Is(err, ErrNoDevice):
		if !errors.Is(err, ioring.ErrNoDevice) {
			return "nodevice-not-ioring"
		}
		return "nodevice"
	case errors.Is(err, ErrStall):
		return "stall"
	}
	return "other: " + err.Error()
}

// adv2Wait waits for q's completion, generously.
func adv2Wait(t *testing.T, q ioring.Request) ioring.Completion {
	t.Helper()
	ctx, cancel := testContext()
	defer cancel()
	c, err := q.Wait(ctx)
	require.NoError(t, err)
	return c
}

// TestAdv2BackendsAgree runs one script of faults and cancels over the
// simulated scanner on a ring of each backend (io_uring, epoll) and checks
// that every step ends with the same, documented outcome on both: a
// deadline on bulk IN, bulk OUT and a control transfer of a hung device is
// ErrTimeout (and a cancel), a token or Request.Cancel is ErrCanceled and
// not ErrTimeout, a second cancel is ErrNotFound, a stall is ErrStall and
// an unplug ErrNoDevice (which is ioring.ErrNoDevice and no cancel), with
// Submit refusing afterwards.
func TestAdv2BackendsAgree(t *testing.T) {
	results := map[ioring.Backend][]string{}
	for _, b := range []ioring.Backend{ioring.BackendURing, ioring.BackendPoll} {
		t.Run(b.String(), func(t *testing.T) {
			CheckFDs(t)
			r := adv2Ring(t, b, 64)
			ad := adv2Open(t, r, usbsim.Config{MaxTransfer: 4096})
			var got []string
			step := func(name string, err error, want string) {
				t.Helper()
				c := adv2Class(err)
				assert.Equal(t, want, c, "%s on %v: %v", name, b, err)
				got = append(got, name+"="+c)
			}

			// A working echo first.
			q, err := ad.out.Start(usbsim.EchoCommand([]byte("hello")), Xfer{})
			require.NoError(t, err)
			step("echo out", adv2Wait(t, q).Err, "ok")
			buf := make([]byte, 4096)
			q, err = ad.in.Start(buf, Xfer{})
			require.NoError(t, err)
			c := adv2Wait(t, q)
			step("echo in", c.Err, "ok")
			assert.Equal(t, "hello", string(buf[:c.N]))

			ad.s.Hang()
			q, err = ad.in.Start(make([]byte, 4096), Xfer{Deadline: 30 * time.Millisecond})
			require.NoError(t, err)
			step("in deadline", adv2Wait(t, q).Err, "timeout")
			q, err = ad.out.Start(usbsim.EchoCommand([]byte("late")), Xfer{Deadline: 30 * time.Millisecond})
			require.NoError(t, err)
			step("out deadline", adv2Wait(t, q).Err, "timeout")
			q, err = ad.d.StartControl(statusRequest(), Xfer{Deadline: 30 * time.Millisecond})
			require.NoError(t, err)
			step("control deadline", adv2Wait(t, q).Err, "timeout")

			tok := r.NewToken()
			q, err = ad.in.Start(make([]byte, 4096), Xfer{Token: tok, Deadline: time.Hour})
			require.NoError(t, err)
			settle(t, r, 1)
			require.NoError(t, tok.Cancel())
			step("token", adv2Wait(t, q).Err, "canceled")

			q, err = ad.intr.Start(make([]byte, 64), Xfer{})
			require.NoError(t, err)
			settle(t, r, 1)
			require.NoError(t, q.Cancel())
			err = q.Cancel()
			if err != nil {
				assert.ErrorIs(t, err, ioring.ErrNotFound, "second cancel")
			}
			step("request cancel", adv2Wait(t, q).Err, "canceled")
			assert.ErrorIs(t, q.Cancel(), ioring.ErrNotFound, "cancel after the completion")

			var qs []ioring.Request
			for range 3 {
				q, err := ad.in.Start(make([]byte, 4096), Xfer{})
				require.NoError(t, err)
				qs = append(qs, q)
			}
			settle(t, r, 3)
			require.NoError(t, ad.d.CancelAll())
			for i, q := range qs {
				step(fmt.Sprintf("cancel all %d", i), adv2Wait(t, q).Err, "canceled")
			}
			AssertSettled(t, r)

			// Back to work: stale data (the echo the device took while
			// hung) flushed, then a stall and its clearing.
			ad.s.Resume()
			ad.advFlush(t)
			require.NoError(t, ad.s.Stall(usbsim.AddrBulkIn))
			q, err = ad.in.Start(make([]byte, 4096), Xfer{})
			require.NoError(t, err)
			step("stall", adv2Wait(t, q).Err, "stall")
			require.NoError(t, ad.d.ClearHalt(usbsim.AddrBulkIn))

			// Unplug under a pending transfer, then Submit.
			q, err = ad.in.Start(make([]byte, 4096), Xfer{Deadline: time.Hour})
			require.NoError(t, err)
			settle(t, r, 1)
			require.NoError(t, ad.s.Unplug())
			step("unplug", adv2Wait(t, q).Err, "nodevice")
			_, err = ad.in.Start(make([]byte, 4096), Xfer{})
			step("submit after unplug", err, "nodevice")
			AssertSettled(t, r)
			results[b] = got
		})
	}
	if len(results) == 2 {
		assert.Equal(t, results[ioring.BackendURing], results[ioring.BackendPoll], "outcomes per backend")
	}
}

// advFlush ends the data the device had queued on bulk IN: abort, then
// read until the zero-length marker.
func (ad *adv2Dev) advFlush(t *testing.T) {
	t.Helper()
	q, err := ad.out.Start(usbsim.AbortCommand(), Xfer{})
	require.NoError(t, err)
	require.NoError(t, adv2Wait(t, q).Err)
	buf := make([]byte, 4096)
	for i := 0; ; i++ {
		require.Less(t, i, 1000, "no zero-length marker on bulk IN")
		q, err := ad.in.Start(buf, Xfer{})
		require.NoError(t, err)
		c := adv2Wait(t, q)
		require.NoError(t, c.Err)
		if c.N == 0 {
			return
		}
	}
}

// TestAdv2DevicesShareRing: two Devices on one ring. CancelAll and Close
// of one touch none of the other's transfers (which stay pending and then
// complete with their data), a token that covers transfers of both
// cancels both, and the unplug of one leaves the other working; every
// transfer completes exactly once, through the shared completion queue.
func TestAdv2DevicesShareRing(t *testing.T) {
	CheckFDs(t)
	r := NewRing(t, 64)
	a := adv2Open(t, r, usbsim.Config{MaxTransfer: 4096})
	b := adv2Open(t, r, usbsim.Config{MaxTransfer: 4096})
	a.s.Hang()
	b.s.Hang()
	seen := map[string]int{}
	reap := func(n int) map[string]error {
		t.Helper()
		out := map[string]error{}
		for _, c := range Reap(t, r, n) {
			u := c.User.(string)
			seen[u]++
			out[u] = c.Err
		}
		return out
	}

	for i := range 2 {
		_, err := a.in.Submit(make([]byte, 4096), Xfer{User: fmt.Sprint("a", i)})
		require.NoError(t, err)
	}
	bufB := make([]byte, 4096)
	_, err := b.in.Submit(bufB, Xfer{User: "b0"})
	require.NoError(t, err)
	settle(t, r, 3)
	require.NoError(t, a.d.CancelAll())
	got := reap(2)
	for _, u := range []string{"a0", "a1"} {
		assert.ErrorIs(t, got[u], ErrCanceled, "transfer %s", u)
	}
	AssertNoMore(t, r) // b0 still pending

	// A token across both devices.
	tok := r.NewToken()
	_, err = a.intr.Submit(make([]byte, 64), Xfer{Token: tok, User: "a tok"})
	require.NoError(t, err)
	_, err = b.intr.Submit(make([]byte, 64), Xfer{Token: tok, User: "b tok"})
	require.NoError(t, err)
	settle(t, r, 3)
	require.NoError(t, tok.Cancel())
	got = reap(2)
	assert.ErrorIs(t, got["a tok"], ErrCanceled)
	assert.ErrorIs(t, got["b tok"], ErrCanceled)
	AssertNoMore(t, r)

	// Close a with a transfer pending: b's stays pending.
	_, err = a.in.Submit(make([]byte, 4096), Xfer{User: "a closed"})
	require.NoError(t, err)
	require.NoError(t, a.d.Close())
	got = reap(1)
	assert.ErrorIs(t, got["a closed"], ErrCanceled)
	AssertNoMore(t, r)

	// b wakes up: its pending read gets the echo it asks for.
	b.s.Resume()
	_, err = b.out.Submit(usbsim.EchoCommand([]byte("still here")), Xfer{User: "b echo"})
	require.NoError(t, err)
	got = reap(2)
	require.NoError(t, got["b echo"])
	require.NoError(t, got["b0"])
	assert.Equal(t, "still here", string(bufB[:len("still here")]))

	// Unplug b with a transfer pending; a's scanner, opened again, works.
	_, err = b.in.Submit(make([]byte, 4096), Xfer{User: "b gone"})
	require.NoError(t, err)
	settle(t, r, 1)
	require.NoError(t, b.s.Unplug())
	got = reap(1)
	assert.ErrorIs(t, got["b gone"], ErrNoDevice)
	a.s.Resume()
	a2, err := usbsim.Open(r, a.s)
	require.NoError(t, err)
	defer func() { assert.NoError(t, a2.Close()) }()
	in2, err := a2.Endpoint(usbsim.AddrBulkIn)
	require.NoError(t, err)
	out2, err := a2.Endpoint(usbsim.AddrBulkOut)
	require.NoError(t, err)
	ctx, cancel := testContext()
	defer cancel()
	// The device a had hung with reads outstanding: flush what it queued.
	_, err = out2.Transfer(ctx, usbsim.AbortCommand())
	require.NoError(t, err)
	buf := make([]byte, 4096)
	for i := 0; ; i++ {
		require.Less(t, i, 1000)
		n, err := in2.Transfer(ctx, buf)
		require.NoError(t, err)
		if n == 0 {
			break
		}
	}
	_, err = out2.Transfer(ctx, usbsim.EchoCommand([]byte("a again")))
	require.NoError(t, err)
	n, err := in2.Transfer(ctx, buf)
	require.NoError(t, err)
	assert.Equal(t, "a again", string(buf[:n]))

	AssertNoMore(t, r)
	for u, k := range seen {
		assert.Equal(t, 1, k, "completions of %s", u)
	}
	AssertSettled(t, r)
}

// TestAdv2UnplugRacesCancel: on a hung scanner with transfers pending on
// every endpoint (bulk IN, bulk OUT, interrupt IN, control), an unplug
// races Request.Cancel, a token's cancel, Device.CancelAll and
// Ring.CancelAll. Each transfer completes exactly once, as a cancel or as
// the device gone, never with a raw socket error; the Device then refuses
// or fails every transfer with ErrNoDevice, and Close drains.
func TestAdv2UnplugRacesCancel(t *testing.T) {
	CheckFDs(t)
	r := NewRing(t, 64)
	for round := range 20 {
		ad := adv2Open(t, r, usbsim.Config{MaxTransfer: 4096})
		ad.s.Hang()
		tok := r.NewToken()
		var qs []ioring.Request
		start := func(q ioring.Request, err error) {
			require.NoError(t, err, "round %d", round)
			qs = append(qs, q)
		}
		start(ad.in.Start(make([]byte, 4096), Xfer{Token: tok}))
		start(ad.in.Start(make([]byte, 100), Xfer{}))
		start(ad.out.Start(usbsim.EchoCommand([]byte("x")), Xfer{Token: tok}))
		start(ad.intr.Start(make([]byte, 64), Xfer{}))
		start(ad.d.StartControl(statusRequest(), Xfer{Token: tok}))
		time.Sleep(time.Duration(round%4) * time.Millisecond)
		var wg sync.WaitGroup
		ops := []func(){
			func() { assert.NoError(t, ad.s.Unplug()) },
			func() {
				for _, q := range qs {
					err := q.Cancel()
					assert.True(t, err == nil || errors.Is(err, ioring.ErrNotFound), "cancel: %v", err)
				}
			},
			func() { assert.NoError(t, tok.Cancel()) },
			func() { assert.NoError(t, ad.d.CancelAll()) },
			func() { assert.NoError(t, r.CancelAll()) },
		}
		for i := range ops {
			op := ops[(i+round)%len(ops)]
			wg.Go(op)
		}
		wg.Wait()
		for i, q := range qs {
			c := adv2Wait(t, q)
			cl := adv2Class(c.Err)
			assert.True(t, cl == "canceled" || cl == "nodevice", "round %d transfer %d: %v", round, i, c.Err)
		}
		// Gone for good: refused, or failing with ErrNoDevice.
		for i := range 3 {
			q, err := ad.in.Start(make([]byte, 4096), Xfer{})
			if err != nil {
				assert.ErrorIs(t, err, ErrNoDevice, "round %d submit %d after the unplug", round, i)
				continue
			}
			c := adv2Wait(t, q)
			assert.ErrorIs(t, c.Err, ErrNoDevice, "round %d transfer %d after the unplug", round, i)
		}
		require.NoError(t, ad.d.Close())
		AssertSettled(t, r)
	}
	AssertNoMore(t, r)
}

// TestAdv2CloseRacesDeadline: transfers whose deadlines fire just as
// Device.Close cancels them, with the ring's CancelAll in between. Each
// completes exactly once, as a timeout or a cancel, Close returns nil and
// drains (every completion is in the ring when it returns).
func TestAdv2CloseRacesDeadline(t *testing.T) {
	CheckFDs(t)
	r := NewRing(t, 64)
	for round := range 20 {
		ad := adv2Open(t, r, usbsim.Config{MaxTransfer: 4096})
		ad.s.Hang()
		const k = 4
		for i := range k {
			var err error
			x := Xfer{Deadline: time.Duration(1+round%5) * time.Millisecond, User: i}
			switch i {
			case 0, 1:
				_, err = ad.in.Submit(make([]byte, 4096), x)
			case 2:
				_, err = ad.out.Submit(usbsim.EchoCommand([]byte("d")), x)
			case 3:
				_, err = ad.d.SubmitControl(statusRequest(), x)
			}
			require.NoError(t, err)
		}
		time.Sleep(time.Duration(round%6) * time.Millisecond)
		if round%2 == 1 {
			require.NoError(t, r.CancelAll())
		}
		require.NoError(t, ad.d.Close())
		var cs [k + 1]ioring.Completion
		n, err := r.Reap(cs[:], 0)
		require.NoError(t, err)
		require.Equal(t, k, n, "round %d: completions in the ring when Close returned", round)
		seen := map[any]int{}
		for _, c := range cs[:n] {
			seen[c.User]++
			assert.ErrorIs(t, c.Err, ErrCanceled, "round %d transfer %v", round, c.User)
		}
		for i := range k {
			assert.Equal(t, 1, seen[i], "round %d: completions of transfer %d", round, i)
		}
		AssertSettled(t, r)
	}
}
