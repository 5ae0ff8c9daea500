package usb_test

// Adversarial round 19: the simulated scanner's settings calls and the
// endpoint halts they are documented to reset.
//
// Device.SetAltSetting: "Selecting the current setting again resets the
// interface's endpoints (their halts and data toggles) on both sides,
// where the backend sends the request" (the simulator's interface has two
// settings, and its Configurer runs the SET_INTERFACE; only libusb's
// interface of one setting is excused). Device.SetConfiguration:
// "Selecting the active configuration again resets the device's
// configuration state". USB 2.0 §9.4.5: "The Halt feature is reset to zero
// after either a SetConfiguration() or SetInterface() request even if the
// requested configuration or interface is the same as the current
// configuration or interface." On usbfs over the gadget rig
// (TestGadgetInterfaceAltSetting) SET_INTERFACE does clear the halt.

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// adv19Halted reports the halt bit of endpoint addr as the device reports
// it (GET_STATUS).
func adv19Halted(t *testing.T, d *Device, addr uint8) bool {
	t.Helper()
	ctx, cancel := testContext()
	defer cancel()
	st, err := d.GetStatus(ctx, RecipientEndpoint, uint16(addr))
	require.NoError(t, err, "GET_STATUS of %#02x", addr)
	return st&1 != 0
}

// adv19StallBoth halts bulk OUT and bulk IN and checks that both fail
// with ErrStall and that the device says so.
func adv19StallBoth(t *testing.T, sd *simDev) {
	t.Helper()
	require.NoError(t, sd.s.Stall(usbsim.AddrBulkIn))
	require.NoError(t, sd.s.Stall(usbsim.AddrBulkOut))
	ctx, cancel := testContext()
	defer cancel()
	_, err := sd.in.Transfer(ctx, make([]byte, 4096))
	require.ErrorIs(t, err, ErrStall, "bulk IN halted")
	_, err = sd.out.Transfer(ctx, usbsim.EchoCommand([]byte("refused")))
	require.ErrorIs(t, err, ErrStall, "bulk OUT halted")
	require.True(t, adv19Halted(t, sd.d, usbsim.AddrBulkIn))
	require.True(t, adv19Halted(t, sd.d, usbsim.AddrBulkOut))
}

// adv19AssertReset checks that neither bulk endpoint is halted any more
// after the settings call named what: GET_STATUS says so, an echo goes out
// on bulk OUT and comes back on bulk IN. Whatever the outcome, the halts
// are cleared afterwards so that the test ends cleanly.
func adv19AssertReset(t *testing.T, sd *simDev, what string) {
	t.Helper()
	defer func() {
		_ = sd.d.ClearHalt(usbsim.AddrBulkIn)
		_ = sd.d.ClearHalt(usbsim.AddrBulkOut)
	}()
	assert.False(t, adv19Halted(t, sd.d, usbsim.AddrBulkIn), "bulk IN still halted after %s (USB 2.0 §9.4.5)", what)
	assert.False(t, adv19Halted(t, sd.d, usbsim.AddrBulkOut), "bulk OUT still halted after %s (USB 2.0 §9.4.5)", what)
	ctx, cancel := testContext()
	defer cancel()
	_, err := sd.out.Transfer(ctx, usbsim.EchoCommand([]byte("after "+what)))
	if !assert.NoError(t, err, "bulk OUT after %s", what) {
		return
	}
	buf := make([]byte, 4096)
	n, err := sd.in.Transfer(ctx, buf)
	if assert.NoError(t, err, "bulk IN after %s", what) {
		assert.Equal(t, "after "+what, string(buf[:n]))
	}
}

// TestAdv19SimSetInterfaceClearsHalts: halted bulk endpoints, then
// SetAltSetting of the current setting (0) again: the Device's doc says it
// resets the interface's endpoints, their halts among them, where the
// backend sends the request (the simulator's interface has two settings,
// so no libusb-style excuse applies). Also through AltEventsOnly and back.
func TestAdv19SimSetInterfaceClearsHalts(t *testing.T) {
	t.Run("current", func(t *testing.T) {
		sd := newSimDev(t, usbsim.Config{MaxTransfer: 4096})
		adv19StallBoth(t, sd)
		require.NoError(t, sd.d.SetAltSetting(0, 0))
		adv19AssertReset(t, sd, "SetAltSetting(0, 0)")
	})
	t.Run("other and back", func(t *testing.T) {
		sd := newSimDev(t, usbsim.Config{MaxTransfer: 4096})
		adv19StallBoth(t, sd)
		require.NoError(t, sd.d.SetAltSetting(0, usbsim.AltEventsOnly))
		require.NoError(t, sd.d.SetAltSetting(0, 0))
		adv19AssertReset(t, sd, "SetAltSetting(0, AltEventsOnly) and back to 0")
	})
	t.Run("request on endpoint 0", func(t *testing.T) {
		// The same request sent by the caller itself, as a standard
		// control transfer: the device resets its halts before the
		// status stage.
		sd := newSimDev(t, usbsim.Config{MaxTransfer: 4096})
		adv19StallBoth(t, sd)
		ctx, cancel := testContext()
		defer cancel()
		const reqSetInterface = 0x0b
		_, err := sd.d.Control(ctx, Setup{RequestType: RequestOut | RequestStandard | RecipientInterface, Request: reqSetInterface}, nil)
		require.NoError(t, err)
		adv19AssertReset(t, sd, "SET_INTERFACE on endpoint 0")
	})
}

// TestAdv19SimSetConfigurationClearsHalts: halted bulk endpoints, the
// interface released, the active configuration selected again ("resets
// the device's configuration state"), the interface claimed again: no
// endpoint is halted any more (USB 2.0 §9.4.5), as usbfs's
// USBDEVFS_SETCONFIGURATION of the active configuration (a
// usb_reset_configuration) leaves it.
func TestAdv19SimSetConfigurationClearsHalts(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{MaxTransfer: 4096})
	adv19StallBoth(t, sd)
	require.NoError(t, sd.d.ReleaseInterface(0))
	require.NoError(t, sd.d.SetConfiguration(1))
	require.NoError(t, sd.d.ClaimInterface(0, false))
	adv19AssertReset(t, sd, "SetConfiguration(1)")
}
