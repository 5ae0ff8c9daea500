//go:build cgo && linux

package usb_test

// TestAdv20GadgetDeviceHaltPending: the device halts bulk IN while
// several transfers wait on it (usbfs with WithDepth(4): four URBs in the
// kernel, the fifth queued in the Device; libusb: one in libusb, the rest
// in the pump). ErrStall's doc: "Every transfer on the endpoint fails with
// it until the host clears the halt". Each completes once, with ErrStall,
// in submission order; an interrupt IN transfer pending meanwhile on the
// same interface is untouched and gets its event; ClearHalt is refused
// while one is pending and recovers once they are done; the endpoint then
// carries the device's next message, once.

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

func TestAdv20GadgetDeviceHaltPending(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		for _, depth := range []int{1, 4} {
			if depth > 1 && backend != "usbfs" {
				continue
			}
			t.Run(fmt.Sprintf("depth=%d", depth), func(t *testing.T) {
				var opts []Option
				if backend == "usbfs" {
					opts = append(opts, WithDepth(depth))
				}
				gd := newGadgetDev(t, backend, usbsim.Config{MaxTransfer: 16 << 10}, opts...)
				m := gd.maxTransfer
				inAddr := gd.in.Desc().Address
				ctx, cancel := testContext()
				defer cancel()

				ibuf := adv5Buf(gd.intr.Desc().MaxPacketSize)
				iq, err := gd.intr.Start(ibuf, Xfer{})
				require.NoError(t, err)
				const k = 5
				for i := range k {
					_, err := gd.in.Submit(adv5Buf(m), Xfer{User: i})
					require.NoError(t, err)
				}
				settle(t, gd.r, k+1)
				require.NoError(t, gd.s.Stall(usbsim.AddrBulkIn))
				for i, c := range Reap(t, gd.r, k) {
					assert.Equal(t, i, c.User, "completion order")
					assert.ErrorIs(t, c.Err, ErrStall, "transfer %v pending when the device halted bulk IN", c.User)
					assert.Zero(t, c.N, "transfer %v", c.User)
				}
				AssertNoMore(t, gd.r)
				assert.True(t, iq.Pending(), "interrupt IN after bulk IN's halt")

				// Still halted: a new transfer fails, and ClearHalt is
				// refused while one is pending.
				q, err := gd.in.Start(adv5Buf(m), Xfer{})
				require.NoError(t, err)
				cerr := gd.d.ClearHalt(inAddr)
				c, err := q.Wait(ctx)
				require.NoError(t, err)
				assert.ErrorIs(t, c.Err, ErrStall, "bulk IN still halted")
				if cerr != nil {
					assert.ErrorIs(t, cerr, ioring.ErrInvalid, "ClearHalt with a transfer pending")
					require.NoError(t, gd.d.ClearHalt(inAddr))
				}
				gd.echo(t, "after the clear")
				assert.Empty(t, adv5Drain(t, gd), "bulk IN after the clear")

				gd.s.PressButton(7)
				c, err = iq.Wait(ctx)
				require.NoError(t, err)
				require.NoError(t, c.Err, "interrupt IN pending through bulk IN's halt")
				e, err := usbsim.ParseEvent(ibuf[:c.N])
				require.NoError(t, err)
				assert.Equal(t, usbsim.EventButton, e.Kind)
				assert.Equal(t, uint8(7), e.Code)
			})
		}
	})
}
