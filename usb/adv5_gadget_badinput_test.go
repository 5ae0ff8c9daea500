//go:build cgo && linux

package usb_test

// TestAdv5GadgetBadInput: bad input against a real device, on each
// backend. What the API refuses it refuses at the call, with the
// documented error, without reaching the device (nothing in flight
// afterwards, the device answers as before); what it takes (a
// zero-length OUT, odd lengths) behaves; babble is ErrBabble on both
// backends and writes nothing past the buffer; the settings calls refuse
// while a transfer is pending and an Endpoint of a released interface
// fails with ErrNotFound until it is claimed again; control buffers too
// short for their wLength and data stages wLength cannot say are refused,
// a wLength far larger than the answer is a short transfer; a closed
// Device refuses control transfers with ErrClosed.

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

func TestAdv5GadgetBadInput(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		adv5Leaks(t)
		gd := newGadgetDev(t, backend, usbsim.Config{MaxTransfer: 16 << 10})
		ctx, cancel := testContext()
		defer cancel()
		base := 0
		if backend == "usbfs" {
			base = 1 // the reaper's poll request
		}
		idle := func(what string) {
			t.Helper()
			assert.Eventually(t, func() bool { return gd.r.InFlight() <= base }, Patience, time.Millisecond, "%s: in flight", what)
		}
		inAddr, outAddr, intrAddr := gd.in.Desc().Address, gd.out.Desc().Address, gd.intr.Desc().Address

		// Empty IN buffers.
		for _, ep := range []*Endpoint{gd.in, gd.intr} {
			for _, b := range [][]byte{nil, {}, make([]byte, 0, 64)} {
				_, err := ep.Submit(b, Xfer{})
				assert.ErrorIs(t, err, ioring.ErrInvalid, "%v: empty IN buffer (cap %d)", ep.Desc(), cap(b))
				_, err = ep.Read(ctx, b)
				assert.ErrorIs(t, err, ioring.ErrInvalid, "%v: Read into an empty buffer", ep.Desc())
			}
		}
		var nilCtx context.Context // a nil context, on purpose
		_, err := gd.in.Transfer(nilCtx, make([]byte, 8))
		assert.ErrorIs(t, err, ioring.ErrInvalid, "a nil context")
		idle("after the refusals")
		gd.echo(t, "after empty buffers")

		// A zero-length OUT transfer is a zero-length packet: taken.
		n, err := gd.out.Write(ctx, nil)
		assert.NoError(t, err, "zero-length OUT")
		assert.Zero(t, n)
		gd.echo(t, "after a zero-length OUT")

		// Odd lengths.
		for _, c := range []struct{ msg, buf int }{{1, 1}, {700, 777}, {511, 511}, {513, 1023}, {100, 100}} {
			data := pattern(c.msg)
			gd.send(t, usbsim.EchoCommand(data))
			b := adv5Buf(c.buf)
			n, err := gd.in.Read(ctx, b)
			require.NoError(t, err, "echo of %d into %d bytes", c.msg, c.buf)
			assert.Equal(t, data, b[:n], "echo of %d into %d bytes", c.msg, c.buf)
			assert.Equal(t, -1, adv5Untouched(b, n), "echo of %d into %d bytes: written past N", c.msg, c.buf)
		}

		// Babble: a packet larger than the buffer's room.
		for _, c := range []struct{ msg, buf int }{{200, 100}, {600, 513}, {40, 1}} {
			gd.send(t, usbsim.EchoCommand(pattern(c.msg)))
			b := adv5Buf(c.buf)
			n, err := gd.in.Read(ctx, b)
			assert.ErrorIs(t, err, ErrBabble, "echo of %d into %d bytes", c.msg, c.buf)
			assert.True(t, n >= 0 && n <= c.buf, "babble: N=%d of %d", n, c.buf)
			assert.Equal(t, -1, adv5Untouched(b, c.buf), "babble of %d into %d bytes wrote past len", c.msg, c.buf)
			if c.msg > 512 && c.buf > 512 { // the first packet fit: its bytes are the echo's
				assert.Equal(t, pattern(c.msg)[:min(n, 512)], b[:min(n, 512)], "babble: the bytes that fit")
			}
			// What is left of the message (if anything) is not an echo's
			// sentinel: drain to it.
			adv5Drain(t, gd)
		}
		gd.send(t, usbsim.StatusCommand())
		ib := adv5Buf(10)
		n, err = gd.intr.Read(ctx, ib)
		assert.ErrorIs(t, err, ErrBabble, "a 24-byte event into 10 bytes (N=%d)", n)
		assert.Equal(t, -1, adv5Untouched(ib, 10), "interrupt babble wrote past len")
		adv5DrainEvents(t, gd, 200*time.Millisecond)
		gd.echo(t, "after babble")

		// Wrong direction, wrong address.
		_, err = gd.out.Read(ctx, make([]byte, 16))
		assert.ErrorIs(t, err, ioring.ErrInvalid, "Read of bulk OUT")
		_, err = gd.in.Write(ctx, []byte("wrong way"))
		assert.ErrorIs(t, err, ioring.ErrInvalid, "Write to bulk IN")
		_, err = gd.intr.Write(ctx, []byte("wrong way"))
		assert.ErrorIs(t, err, ioring.ErrInvalid, "Write to interrupt IN")
		_, err = gd.d.InEndpoint(outAddr)
		assert.ErrorIs(t, err, ioring.ErrInvalid, "InEndpoint of bulk OUT")
		_, err = gd.d.OutEndpoint(inAddr)
		assert.ErrorIs(t, err, ioring.ErrInvalid, "OutEndpoint of bulk IN")
		for _, a := range []uint8{0x00, 0x80, outAddr | 0x80, inAddr &^ 0x80, intrAddr &^ 0x80, 0x0f, 0x8f} {
			if a == inAddr || a == outAddr || a == intrAddr {
				continue
			}
			_, err = gd.d.Endpoint(a)
			assert.ErrorIs(t, err, ErrNotFound, "Endpoint(%#02x)", a)
			assert.ErrorIs(t, gd.d.ClearHalt(a), ErrNotFound, "ClearHalt(%#02x)", a)
		}
		other := NewRing(t, 8)
		_, err = gd.in.Submit(make([]byte, 8), Xfer{Token: other.NewToken()})
		assert.ErrorIs(t, err, ioring.ErrInvalid, "a token of another ring")
		_, err = gd.d.SubmitControl(statusRequest(), Xfer{Token: other.NewToken()})
		assert.ErrorIs(t, err, ioring.ErrInvalid, "a control transfer with a token of another ring")
		if backend == "usbfs" {
			_, err = gd.intr.Submit(make([]byte, 8<<20+1), Xfer{})
			assert.ErrorIs(t, err, ioring.ErrInvalid, "an interrupt transfer larger than one URB")
			_, err = gd.in.Submit(make([]byte, 16<<20+512), Xfer{})
			assert.Error(t, err, "a bulk transfer larger than the usbfs budget")
		}
		idle("after wrong addresses")
		gd.echo(t, "after wrong directions")

		// Settings calls refuse while a transfer is pending; it goes on.
		pend := adv5Buf(512)
		q, err := gd.in.Start(pend, Xfer{})
		require.NoError(t, err)
		time.Sleep(Quiet)
		assert.ErrorIs(t, gd.d.ReleaseInterface(0), ioring.ErrInvalid, "ReleaseInterface with a transfer pending")
		assert.ErrorIs(t, gd.d.SetAltSetting(0, 0), ioring.ErrInvalid, "SetAltSetting with a transfer pending")
		assert.ErrorIs(t, gd.d.ClearHalt(inAddr), ioring.ErrInvalid, "ClearHalt with a transfer pending")
		assert.True(t, q.Pending(), "the pending transfer after the refusals")
		data := adv5Payload(50)
		gd.send(t, usbsim.EchoCommand(data))
		c, err := q.Wait(ctx)
		require.NoError(t, err)
		require.NoError(t, c.Err, "the transfer pending through the refusals")
		assert.Equal(t, string(data), string(pend[:c.N]))

		for _, a := range [][2]int{{0, 1}, {0, usbsim.AltEventsOnly}} {
			assert.ErrorIs(t, gd.d.SetAltSetting(a[0], a[1]), ErrNotFound, "SetAltSetting%v: no such setting", a)
		}
		// An interface the configuration does not have: not claimed
		// (ErrInvalid, as the doc lists it) or no such setting (ErrNotFound,
		// what both backends say): either is a refusal before any I/O.
		err = gd.d.SetAltSetting(1, 0)
		assert.True(t, errors.Is(err, ErrNotFound) || errors.Is(err, ioring.ErrInvalid), "SetAltSetting(1, 0): %v", err)
		for _, a := range [][2]int{{0, -1}, {0, 256}, {-1, 0}, {256, 0}} {
			assert.ErrorIs(t, gd.d.SetAltSetting(a[0], a[1]), ioring.ErrInvalid, "SetAltSetting%v", a)
		}
		require.NoError(t, gd.d.SetAltSetting(0, 0))
		e, err := gd.d.Endpoint(inAddr)
		require.NoError(t, err)
		assert.Same(t, gd.in, e, "the same Endpoint after SET_INTERFACE to the same setting")
		gd.echo(t, "after SetAltSetting(0, 0)")

		// A released interface: its Endpoints fail with ErrNotFound before
		// any I/O; claimed again, the same Endpoints carry on.
		require.NoError(t, gd.d.ReleaseInterface(0))
		for _, ep := range []*Endpoint{gd.in, gd.intr} {
			_, err = ep.Submit(make([]byte, 64), Xfer{})
			assert.ErrorIs(t, err, ErrNotFound, "%v of a released interface", ep.Desc())
		}
		_, err = gd.out.Write(ctx, usbsim.EchoCommand([]byte("released")))
		assert.ErrorIs(t, err, ErrNotFound, "bulk OUT of a released interface")
		_, err = gd.d.Endpoint(inAddr)
		assert.ErrorIs(t, err, ErrNotFound)
		assert.ErrorIs(t, gd.d.ClearHalt(inAddr), ErrNotFound)
		assert.ErrorIs(t, gd.d.ReleaseInterface(0), ErrNotFound, "a second release")
		assert.ErrorIs(t, gd.d.SetAltSetting(0, 0), ioring.ErrInvalid, "SetAltSetting of a released interface")
		// Control transfers need no interface.
		st, err := gd.d.GetStatus(ctx, RecipientDevice, 0)
		assert.NoError(t, err, "GET_STATUS with no interface claimed")
		_ = st
		idle("with the interface released")
		require.NoError(t, gd.d.ClaimInterface(0, false))
		e, err = gd.d.Endpoint(inAddr)
		require.NoError(t, err)
		assert.Same(t, gd.in, e, "the same Endpoint after the claim")
		gd.echo(t, "claimed again") // nothing of the refused OUT arrived

		// Control transfers: buffers too short, wLength too large.
		setup := func(s Setup, n int) []byte {
			b := adv5Buf(n)
			if n >= SetupSize {
				s.Put(b)
			}
			return b
		}
		gs := Setup{RequestType: RequestIn, Request: 0x06, Value: 0x01 << 8, Length: 18}
		for _, n := range []int{0, 1, SetupSize - 1, SetupSize, SetupSize + 17} {
			_, err = gd.d.SubmitControl(setup(gs, n), Xfer{})
			assert.ErrorIs(t, err, ioring.ErrInvalid, "SubmitControl of %d bytes for wLength 18", n)
		}
		_, err = gd.d.SubmitControl(nil, Xfer{})
		assert.ErrorIs(t, err, ioring.ErrInvalid, "SubmitControl(nil)")
		_, err = gd.d.Control(ctx, gs, make([]byte, 0x10000))
		assert.ErrorIs(t, err, ioring.ErrInvalid, "a data stage of 65536 bytes")
		_, err = gd.d.Control(nilCtx, gs, make([]byte, 18))
		assert.ErrorIs(t, err, ioring.ErrInvalid, "Control with a nil context")
		idle("after the control refusals")
		// wLength far beyond the answer: a short transfer of the 18 bytes,
		// or (a backend that cannot carry it) refused at the call with
		// ErrInvalid or ErrNotSupported, as bad input is; never a
		// transport error at completion. libusb's Linux backend refuses a
		// control data stage over 4096 bytes (MAX_CTRL_BUFFER_LENGTH) with
		// LIBUSB_ERROR_INVALID_PARAM.
		for _, wl := range []uint16{4096, 4097, 0xffff} {
			gs.Length = wl
			b := setup(gs, SetupSize+int(wl))
			q, err := gd.d.StartControl(b, Xfer{})
			if err != nil {
				assert.True(t, errors.Is(err, ioring.ErrInvalid) || errors.Is(err, ioring.ErrNotSupported), "GET_DESCRIPTOR with wLength %d refused with %v", wl, err)
				continue
			}
			c, err := q.Wait(ctx)
			require.NoError(t, err)
			if !assert.NoError(t, c.Err, "GET_DESCRIPTOR with wLength %d: accepted, then failed (N=%d)", wl, c.N) {
				continue
			}
			assert.Equal(t, 18, c.N, "the device descriptor, wLength %d", wl)
			assert.Equal(t, byte(18), b[SetupSize], "bLength")
			assert.Equal(t, -1, adv5Untouched(b, SetupSize+c.N), "GET_DESCRIPTOR wrote past N")
		}
		// A data stage larger than the scanner takes: refused by the
		// device (a stall), refused up front by a backend that cannot
		// carry it (as above), or taken whole; never a broken endpoint 0.
		big := usbsim.EchoCommand(pattern(usbsim.ControlMaxData + 100))
		n, err = gd.d.Control(ctx, Setup{RequestType: RequestOut | RequestVendor, Request: usbsim.VendorCommand}, big)
		t.Logf("%s: VendorCommand of %d bytes: N=%d err=%v", backend, len(big), n, err)
		switch {
		case err == nil:
			assert.Equal(t, len(big), n)
			adv5Drain(t, gd)
		case errors.Is(err, ioring.ErrNotSupported):
			assert.ErrorIs(t, err, ioring.ErrInvalid, "refused up front")
			assert.Zero(t, n)
		default:
			assert.ErrorIs(t, err, ErrStall, "a data stage longer than the device takes")
		}
		gd.vendorOut(t, RecipientDevice, usbsim.EchoCommand([]byte("endpoint 0 works")))
		assert.Equal(t, "endpoint 0 works", string(gd.read(t, gd.maxTransfer)))
		idle("after the control transfers")

		// A closed Device.
		require.NoError(t, gd.d.Close())
		_, err = gd.d.Control(ctx, Setup{RequestType: RequestIn | RequestVendor, Request: usbsim.VendorStatus}, make([]byte, usbsim.EventSize))
		assert.ErrorIs(t, err, ErrClosed, "Control on a closed Device")
		_, err = gd.d.SubmitControl(statusRequest(), Xfer{})
		assert.ErrorIs(t, err, ErrClosed, "SubmitControl on a closed Device")
		_, err = gd.d.StartControl(statusRequest(), Xfer{})
		assert.ErrorIs(t, err, ErrClosed, "StartControl on a closed Device")
		_, err = gd.d.GetStatus(ctx, RecipientDevice, 0)
		assert.ErrorIs(t, err, ErrClosed, "GetStatus on a closed Device")
		_, err = gd.d.StringDescriptor(ctx, 1)
		assert.ErrorIs(t, err, ErrClosed, "StringDescriptor on a closed Device")
		// Bad input on a closed Device: refused either way, no panic.
		_, err = gd.d.SubmitControl(make([]byte, 3), Xfer{})
		assert.True(t, errors.Is(err, ioring.ErrInvalid) || errors.Is(err, ErrClosed), "a short control buffer on a closed Device: %v", err)
		_, err = gd.in.Submit(nil, Xfer{})
		assert.True(t, errors.Is(err, ioring.ErrInvalid) || errors.Is(err, ErrClosed), "an empty IN buffer on a closed Device: %v", err)
		cctx, ccancel := context.WithCancel(context.Background())
		ccancel()
		_, err = gd.d.Control(cctx, Setup{RequestType: RequestIn | RequestVendor, Request: usbsim.VendorStatus}, make([]byte, 8))
		assert.Error(t, err, "Control with an ended context on a closed Device")
		adv5Settled(t, gd.r, "after Close")
	})
}
