//go:build cgo && linux

package minidrv_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// gadgetReplugWithin bounds how soon a driver that follows the kernel's
// uevents is Idle again after the gadget is plugged back in: the host
// enumerates it (about half a second under TCG), the driver opens and
// probes it. Generous: the guest is emulated on a loaded machine.
const gadgetReplugWithin = 20 * time.Second

// TestGadgetHotplug: on the real USB stack, on each backend, the driver
// follows the kernel's uevents for the gadget scanner (minidrv.WatchUSB).
// Unplugged while Idle, only the removal event tells it: Removed.
// Unplugged mid-acquisition, its transfers fail with usb.ErrNoDevice, the
// acquisition with ErrOffline, and it is Removed. Plugged back in (a new
// enumeration at a new address, the same serial number), it is Idle
// again by itself, and the next acquisition is exact byte for byte.
func TestGadgetHotplug(t *testing.T) {
	for _, backend := range []string{"usbfs", "libusb"} {
		t.Run("backend="+backend, func(t *testing.T) {
			r := newGadgetRigOn(t, minidrv.Config{}, usbsim.Config{}, true, usb.WithBackend(backend))
			ctx := context.Background()
			replug := func() {
				t.Helper()
				require.NoError(t, r.sc.Replug())
				took := waitState(t, r.d, minidrv.Idle, gadgetReplugWithin)
				t.Logf("backend=%s: Idle %v after the replug", backend, took)
			}

			require.NoError(t, r.sc.Unplug())
			took := waitState(t, r.d, minidrv.Removed, gadgetReplugWithin)
			t.Logf("backend=%s: Removed %v after an unplug while Idle", backend, took)
			require.ErrorIs(t, r.d.Lock(ctx), minidrv.ErrOffline)
			replug()

			require.NoError(t, r.d.Lock(ctx))
			r.unplugMidAcquisition(ctx, 1000, 1000, 16384)
			require.ErrorIs(t, r.d.Lock(ctx), minidrv.ErrOffline)
			replug()

			require.NoError(t, r.d.Lock(ctx))
			r.sc.SetBandwidth(0)
			s, err := r.acquire(ctx, nil)
			require.NoError(t, err)
			r.expectImage(s)
			require.NoError(t, r.d.Unlock())
		})
	}
}
