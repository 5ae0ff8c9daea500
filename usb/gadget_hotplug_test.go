//go:build cgo && linux

package usb_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// TestGadgetHotplug: the gadget's arrival and removal come from the
// kernel's uevents, through the ring, with the address the host gave the
// device and its serial number; the device announced opens with the
// backend and works, and after an unplug and a replug so does the new
// arrival, at its new address.
func TestGadgetHotplug(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		r := NewRing(t, 8)
		h, err := WatchHotplug(r, HotplugFilter{VendorID: 0x1209, ProductID: 0x0001})
		require.NoError(t, err)
		t.Cleanup(func() { _ = h.Close() })
		ctx, cancel := testContext()
		defer cancel()
		next := func(kind HotplugKind) HotplugEvent {
			t.Helper()
			e, err := h.Next(ctx)
			require.NoError(t, err, "waiting for %v", kind)
			require.Equal(t, kind, e.Kind, "%v", e)
			return e
		}

		gd := newGadgetDev(t, backend, usbsim.Config{MaxTransfer: 16 << 10})
		serial := gd.s.Info().Serial
		in := next(Arrived)
		assert.Equal(t, gd.host.Bus, in.Bus)
		assert.Equal(t, gd.host.Dev, in.Address)
		assert.Equal(t, serial, in.Serial)
		assert.Equal(t, filepath.Base(gd.host.SysfsPath), filepath.Base(in.DevPath))
		gd.echo(t, "arrived")

		require.NoError(t, gd.s.Unplug())
		out := next(Left)
		assert.Equal(t, in.Bus, out.Bus)
		assert.Equal(t, in.Address, out.Address)
		assert.Equal(t, serial, out.Serial, "remembered from the arrival")
		assert.Equal(t, in.DevPath, out.DevPath)

		gd.replug(t)
		again := next(Arrived)
		assert.Equal(t, gd.host.Bus, again.Bus)
		assert.Equal(t, gd.host.Dev, again.Address, "the new address")
		assert.NotEqual(t, in.Address, again.Address, "a new enumeration")
		assert.Equal(t, serial, again.Serial)
		gd.echo(t, "arrived again")
	})
}
