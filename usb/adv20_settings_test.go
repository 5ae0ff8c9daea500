//go:build cgo && linux

package usb_test

// TestAdv20GadgetSettingsControlPending: the settings calls and Reset
// "refuse while any [transfer] is pending on the device" (package doc,
// Device.Reset): a control transfer counts. With a VendorStatus request
// withheld by a hung device, SetAltSetting, ReleaseInterface,
// SetConfiguration and Reset refuse with ioring.ErrInvalid at once (not
// waiting for it), on both backends, and the control transfer is still
// pending afterwards; canceled, it completes once with ErrCanceled, and
// the device (resumed) answers as before, its interface still claimed.

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

func TestAdv20GadgetSettingsControlPending(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		gd := newGadgetDev(t, backend, usbsim.Config{MaxTransfer: 16 << 10})
		gd.s.Hang()
		q, err := gd.d.SubmitControl(statusRequest(), Xfer{User: "withheld"})
		require.NoError(t, err)
		time.Sleep(Quiet)
		require.True(t, q.Pending(), "a control request to a hung device")
		for name, f := range map[string]func() error{
			"SetAltSetting(0, 0)": func() error { return gd.d.SetAltSetting(0, 0) },
			"ReleaseInterface(0)": func() error { return gd.d.ReleaseInterface(0) },
			"SetConfiguration(1)": func() error { return gd.d.SetConfiguration(1) },
			"Reset":               func() error { return gd.d.Reset() },
		} {
			var err error
			adv5Within(t, 3*time.Second, name, func() { err = f() })
			assert.ErrorIs(t, err, ioring.ErrInvalid, "%s with a control transfer pending", name)
			assert.True(t, q.Pending(), "the control transfer after %s", name)
		}
		require.NoError(t, q.Cancel())
		c := Reap(t, gd.r, 1)[0]
		assert.Equal(t, "withheld", c.User)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		AssertNoMore(t, gd.r)
		gd.s.Resume()
		alt, err := gd.d.AltSetting(0)
		assert.NoError(t, err, "interface 0 still claimed")
		assert.Zero(t, alt)
		gd.echo(t, "after the refusals")
	})
}
