//go:build cgo && linux

package usb_test

// Interfaces and alternate settings against usbsim's scanner served as a
// FunctionFS gadget in the usbvm guest, each backend in a subtest: what
// the kernel does with a claim, a release and a SET_INTERFACE, seen from
// sysfs, from a second Device and on the wire.

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// interfaceDriver returns the name of the kernel driver bound to
// interface 0 of the gadget on the host side ("" for none).
func (gd *gadgetDev) interfaceDriver(tb testing.TB) string {
	tb.Helper()
	link, err := os.Readlink(filepath.Join(gd.host.SysfsPath, filepath.Base(gd.host.SysfsPath)+":1.0", "driver"))
	if os.IsNotExist(err) {
		return ""
	}
	require.NoError(tb, err)
	return filepath.Base(link)
}

// openSecond opens the gadget a second time with the same backend.
func (gd *gadgetDev) openSecond() (*Device, error) {
	return Open(gd.r, gd.g.Config.VendorID, gd.g.Config.ProductID,
		WithBackend(gd.backend), WithBusAddr(gd.host.Bus, gd.host.Dev), WithZeroPacket())
}

// TestGadgetInterfaceClaimRelease: a claimed interface is usbfs's in the
// kernel (sysfs names the driver), and a second Device cannot claim it;
// released (the kernel's drivers asked back: none wants a vendor-class
// interface), it has no driver and the second Device claims it and
// transfers; released by that one, the first claims it again, without
// detaching, and transfers on the same endpoints.
func TestGadgetInterfaceClaimRelease(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		gd := newGadgetDev(t, backend, usbsim.Config{MaxTransfer: 16 << 10})
		inAddr, outAddr := gd.in.Desc().Address, gd.out.Desc().Address
		assert.Equal(t, "usbfs", gd.interfaceDriver(t), "a claimed interface")
		_, err := gd.openSecond()
		require.Error(t, err, "a second claim of a claimed interface")
		assert.Contains(t, err.Error(), "busy")

		require.NoError(t, gd.d.ReleaseInterface(0))
		assert.Equal(t, "", gd.interfaceDriver(t), "a released interface")
		d2, err := gd.openSecond()
		require.NoError(t, err, "a claim after the release")
		t.Cleanup(func() { _ = d2.Close() })
		first := gd.d
		gd.d = d2
		gd.in, err = d2.Endpoint(inAddr)
		require.NoError(t, err)
		gd.out, err = d2.Endpoint(outAddr)
		require.NoError(t, err)
		gd.echo(t, "through the second Device")
		require.NoError(t, d2.ReleaseInterface(0))
		require.NoError(t, d2.Close())

		gd.d = first
		_, err = first.Endpoint(inAddr)
		assert.ErrorIs(t, err, ErrNotFound, "no endpoint of a released interface")
		require.NoError(t, first.ClaimInterface(0, false))
		gd.in, err = first.Endpoint(inAddr)
		require.NoError(t, err)
		gd.out, err = first.Endpoint(outAddr)
		require.NoError(t, err)
		assert.Equal(t, "usbfs", gd.interfaceDriver(t))
		gd.echo(t, "claimed again")
	})
}

// TestGadgetInterfaceAltSetting: SET_INTERFACE on the gadget. A halted
// bulk IN endpoint is reset by selecting alternate setting 0 again on
// usbfs (the host resets its endpoint state and FunctionFS disables and
// enables the function's endpoints, which clears the halt in the
// controller); libusb through gousb sends no SET_INTERFACE for an
// interface with one setting (it releases and claims it), so there the
// halt stays until ClearHalt. A second setting the descriptors do not
// have is refused before any I/O; the endpoints of the setting work in
// their own direction only, on the typed and generic paths.
func TestGadgetInterfaceAltSetting(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		gd := newGadgetDev(t, backend, usbsim.Config{MaxTransfer: 16 << 10})
		ctx, cancel := testContext()
		defer cancel()
		require.NoError(t, gd.s.Stall(usbsim.AddrBulkIn))
		_, err := gd.in.Transfer(ctx, make([]byte, gd.maxTransfer))
		require.ErrorIs(t, err, ErrStall)
		require.NoError(t, gd.d.SetAltSetting(0, 0))
		gd.send(t, usbsim.EchoCommand([]byte("after SET_INTERFACE")))
		_, err = gd.in.Transfer(ctx, make([]byte, gd.maxTransfer))
		if backend == "usbfs" {
			require.NoError(t, err, "SET_INTERFACE cleared the halt")
		} else {
			require.ErrorIs(t, err, ErrStall, "no SET_INTERFACE went out")
			require.NoError(t, gd.d.ClearHalt(gd.in.Desc().Address))
			assert.Equal(t, "after SET_INTERFACE", string(gd.read(t, gd.maxTransfer)))
		}

		assert.ErrorIs(t, gd.d.SetAltSetting(0, usbsim.AltEventsOnly), ErrNotFound, "one setting on FunctionFS")
		alt, err := gd.d.AltSetting(0)
		require.NoError(t, err)
		assert.Zero(t, alt)

		in, err := gd.d.InEndpoint(gd.in.Desc().Address)
		require.NoError(t, err)
		out, err := gd.d.OutEndpoint(gd.out.Desc().Address)
		require.NoError(t, err)
		_, err = gd.d.OutEndpoint(gd.intr.Desc().Address)
		assert.ErrorIs(t, err, ioring.ErrInvalid, "interrupt IN as an OUT endpoint")
		_, err = gd.out.Read(ctx, make([]byte, 16))
		assert.ErrorIs(t, err, ioring.ErrInvalid, "a read of bulk OUT")
		_, err = gd.intr.Write(ctx, []byte("wrong way"))
		assert.ErrorIs(t, err, ioring.ErrInvalid, "a write of interrupt IN")
		_, err = out.Write(ctx, usbsim.EchoCommand([]byte("typed")))
		require.NoError(t, err)
		buf := make([]byte, gd.maxTransfer)
		n, err := in.Read(ctx, buf)
		require.NoError(t, err)
		assert.Equal(t, "typed", string(buf[:n]), "the refused transfers reached nothing")
	})
}
