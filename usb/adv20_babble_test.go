//go:build cgo && linux

package usb_test

// TestAdv20GadgetBabbleCount: babble on bulk IN and interrupt IN with
// buffers that are not a multiple of wMaxPacketSize, on both backends:
// ErrBabble (ErrBabble's doc: "The bytes that fit are reported where the
// transport knows them"; both usbfs and libusb know them: the URB's actual
// length), so Completion.N is the whole buffer, which holds the first N
// bytes of the device's message, and both backends report the same N.
// Nothing is written past the buffer. The endpoint works on after a
// drain.

import (
	"testing"

	"github.com/stretchr/testify/assert"

	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

func TestAdv20GadgetBabbleCount(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		gd := newGadgetDev(t, backend, usbsim.Config{MaxTransfer: 16 << 10})
		ctx, cancel := testContext()
		defer cancel()
		for _, c := range []struct{ msg, buf int }{{200, 100}, {1000, 700}, {600, 513}, {40, 1}, {5000, 4999}} {
			data := pattern(c.msg)
			gd.send(t, usbsim.EchoCommand(data))
			b := adv5Buf(c.buf)
			n, err := gd.in.Read(ctx, b)
			assert.ErrorIs(t, err, ErrBabble, "echo of %d into %d bytes", c.msg, c.buf)
			if assert.Equal(t, c.buf, n, "%s: echo of %d into %d bytes: N of the babble", backend, c.msg, c.buf) {
				assert.Equal(t, data[:n], b[:n], "echo of %d into %d bytes: the bytes that fit", c.msg, c.buf)
			}
			assert.Equal(t, -1, adv5Untouched(b, c.buf), "echo of %d into %d bytes: written past len", c.msg, c.buf)
			rest := adv5Drain(t, gd)
			t.Logf("%s: echo of %d into %d: N=%d, %d bytes left after it", backend, c.msg, c.buf, n, len(rest))
		}
		gd.send(t, usbsim.StatusCommand())
		ib := adv5Buf(10)
		n, err := gd.intr.Read(ctx, ib)
		assert.ErrorIs(t, err, ErrBabble, "a %d-byte event into 10 bytes", usbsim.EventSize)
		assert.Equal(t, 10, n, "%s: N of an interrupt babble", backend)
		assert.Equal(t, -1, adv5Untouched(ib, 10))
		adv5DrainEvents(t, gd, 2*Quiet)
		gd.echo(t, "after the babbles")
	})
}
