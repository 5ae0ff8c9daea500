//go:build cgo && linux

package usb_test

// Adversarial round 20: control transfers on the real stack (usbvm guest),
// where the package doc says the usbfs and libusb backends agree.
//
// TestAdv20GadgetControlShort: an IN data stage the device answers with
// fewer bytes than wLength is a success whose N is what the device sent
// (the configuration descriptor asked for with a wLength of 4096, the
// scanner's status asked for with 4096), on both backends the same; a
// standard IN request with wLength 0 (no data stage) is a success with
// N 0; a no-data vendor OUT request the device does not know ends with
// ErrStall and endpoint 0 answers the next request.
//
// TestAdv20GadgetHostHalt: a halt the host sets (SET_FEATURE(ENDPOINT_HALT)
// sent with Device.Control) fails the transfers pending on that endpoint
// and the next ones with ErrStall, each once and in order, on both
// backends; GET_STATUS says halted; ClearHalt is refused while one is
// pending and then clears it; the data the device had queued is neither
// lost nor duplicated.

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

const (
	adv20ReqSetFeature = 0x03
	adv20FeatHalt      = 0x00
	adv20DescConfig    = 0x02
)

func TestAdv20GadgetControlShort(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		gd := newGadgetDev(t, backend, usbsim.Config{MaxTransfer: 16 << 10})
		ctx, cancel := testContext()
		defer cancel()

		// wLength 0 on a standard IN request: no data stage, no data.
		n, err := gd.d.Control(ctx, Setup{RequestType: RequestIn, Request: reqGetDescriptor, Value: descDevice << 8}, nil)
		assert.NoError(t, err, "GET_DESCRIPTOR(DEVICE) with wLength 0")
		assert.Zero(t, n, "GET_DESCRIPTOR(DEVICE) with wLength 0")

		// The configuration descriptor: its header, then the whole of it
		// asked for with a far larger wLength: a short data stage.
		var head [9]byte
		n, err = gd.d.Control(ctx, Setup{RequestType: RequestIn, Request: reqGetDescriptor, Value: adv20DescConfig << 8}, head[:])
		require.NoError(t, err, "GET_DESCRIPTOR(CONFIG) header")
		require.Equal(t, 9, n)
		total := int(binary.LittleEndian.Uint16(head[2:]))
		require.Greater(t, total, 9, "wTotalLength")
		exact := make([]byte, total)
		n, err = gd.d.Control(ctx, Setup{RequestType: RequestIn, Request: reqGetDescriptor, Value: adv20DescConfig << 8}, exact)
		require.NoError(t, err)
		require.Equal(t, total, n)
		for _, wl := range []int{total + 1, 255, 4096} {
			if wl < total {
				continue
			}
			b := adv5Buf(wl)
			n, err = gd.d.Control(ctx, Setup{RequestType: RequestIn, Request: reqGetDescriptor, Value: adv20DescConfig << 8}, b)
			if assert.NoError(t, err, "GET_DESCRIPTOR(CONFIG) with wLength %d", wl) {
				assert.Equal(t, total, n, "GET_DESCRIPTOR(CONFIG) with wLength %d: N", wl)
				assert.Equal(t, exact, b[:min(n, len(b))], "GET_DESCRIPTOR(CONFIG) with wLength %d: bytes", wl)
				assert.Equal(t, -1, adv5Untouched(b, n), "GET_DESCRIPTOR(CONFIG) with wLength %d wrote past N", wl)
			}
		}

		// A vendor IN request answered short: the scanner's status, 24
		// bytes, into 4096.
		b := adv5Buf(4096)
		n, err = gd.d.Control(ctx, Setup{RequestType: RequestIn | RequestVendor | RecipientDevice, Request: usbsim.VendorStatus}, b)
		if assert.NoError(t, err, "VendorStatus with wLength 4096") {
			assert.Equal(t, usbsim.EventSize, n, "VendorStatus with wLength 4096: N")
			e, err := usbsim.ParseEvent(b[:n])
			if assert.NoError(t, err) {
				assert.Equal(t, usbsim.EventStatus, e.Kind)
			}
			assert.Equal(t, -1, adv5Untouched(b, n), "VendorStatus wrote past N")
		}

		// A no-data vendor OUT request the device does not know: a stall
		// (in the status stage), and endpoint 0 recovers at the next setup.
		for i := range 2 {
			n, err = gd.d.Control(ctx, Setup{RequestType: RequestOut | RequestVendor | RecipientDevice, Request: 0x77}, nil)
			assert.ErrorIs(t, err, ErrStall, "unknown no-data vendor OUT request %d (N=%d)", i, n)
			assert.Zero(t, n)
			dd := make([]byte, devDescLen)
			n, err = gd.d.Control(ctx, Setup{RequestType: RequestIn, Request: reqGetDescriptor, Value: descDevice << 8}, dd)
			require.NoError(t, err, "GET_DESCRIPTOR after the stall %d", i)
			assert.Equal(t, devDescLen, n)
		}
		gd.echo(t, "after the control requests")
		t.Logf("%s: stall errors of the gadget's ep0: %v", backend, gd.s.StallErrors())
	})
}

// adv20Halted is GET_STATUS's halt bit of the endpoint at addr.
func adv20Halted(t *testing.T, d *Device, addr uint8) bool {
	t.Helper()
	ctx, cancel := testContext()
	defer cancel()
	st, err := d.GetStatus(ctx, RecipientEndpoint, uint16(addr))
	require.NoError(t, err, "GET_STATUS of %#02x", addr)
	return st&1 != 0
}

// adv20SetHalt halts the endpoint at addr from the host:
// SET_FEATURE(ENDPOINT_HALT).
func adv20SetHalt(t *testing.T, d *Device, addr uint8) {
	t.Helper()
	ctx, cancel := testContext()
	defer cancel()
	n, err := d.Control(ctx, Setup{RequestType: RequestOut | RecipientEndpoint, Request: adv20ReqSetFeature, Value: adv20FeatHalt, Index: uint16(addr)}, nil)
	require.NoError(t, err, "SET_FEATURE(ENDPOINT_HALT) of %#02x", addr)
	require.Zero(t, n)
}

func TestAdv20GadgetHostHalt(t *testing.T) {
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
				require.False(t, adv20Halted(t, gd.d, inAddr), "bulk IN halted at the start")

				// Transfers waiting for data when the host halts the
				// endpoint: each ends once with ErrStall, in order.
				const k = 5
				for i := range k {
					_, err := gd.in.Submit(adv5Buf(m), Xfer{User: i})
					require.NoError(t, err)
				}
				settle(t, gd.r, k)
				adv20SetHalt(t, gd.d, inAddr)
				for i, c := range Reap(t, gd.r, k) {
					assert.Equal(t, i, c.User, "completion order")
					assert.ErrorIs(t, c.Err, ErrStall, "transfer %v pending when the host halted bulk IN", c.User)
					assert.Zero(t, c.N, "transfer %v", c.User)
				}
				AssertNoMore(t, gd.r)
				assert.True(t, adv20Halted(t, gd.d, inAddr), "GET_STATUS after SET_FEATURE(ENDPOINT_HALT)")

				// The device queues an echo meanwhile; the halted endpoint
				// keeps failing until ClearHalt, which a pending transfer
				// refuses.
				data := adv5Payload(300)
				gd.send(t, usbsim.EchoCommand(data))
				ctx, cancel := testContext()
				defer cancel()
				_, err := gd.in.Transfer(ctx, adv5Buf(m))
				assert.ErrorIs(t, err, ErrStall, "bulk IN on a halted endpoint")
				q, err := gd.in.Start(adv5Buf(m), Xfer{})
				require.NoError(t, err)
				c, err := q.Wait(ctx)
				require.NoError(t, err)
				assert.ErrorIs(t, c.Err, ErrStall)
				require.NoError(t, gd.d.ClearHalt(inAddr), "ClearHalt of a host-set halt")
				assert.False(t, adv20Halted(t, gd.d, inAddr), "GET_STATUS after ClearHalt")

				// What the device had queued arrives once, whole.
				got := adv5Drain(t, gd)
				assert.Equal(t, string(data), string(got), "bulk IN after the clear: the echo queued during the halt, once")

				// Bulk OUT too: a host-set halt fails the OUT, ClearHalt
				// recovers, nothing of the refused command arrives.
				outAddr := gd.out.Desc().Address
				adv20SetHalt(t, gd.d, outAddr)
				assert.True(t, adv20Halted(t, gd.d, outAddr), "GET_STATUS of bulk OUT after SET_FEATURE")
				n, err := gd.out.Transfer(ctx, usbsim.EchoCommand([]byte("refused by the halt")))
				assert.ErrorIs(t, err, ErrStall, "bulk OUT on a halted endpoint (N=%d)", n)
				require.NoError(t, gd.d.ClearHalt(outAddr))
				assert.False(t, adv20Halted(t, gd.d, outAddr))
				assert.Empty(t, adv5Drain(t, gd), "bulk IN after the refused OUT")
			})
		}
	})
}
