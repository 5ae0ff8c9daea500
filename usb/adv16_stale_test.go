package usb_test

// Adversarial round 16: a Device of the simulated scanner's earlier
// plug-in (Unplug, then Replug) is a Device of a device that is gone:
// usbsim.Open's doc says its transfers fail with ErrNoDevice for good, and
// the Device's calls that would use the device (ClearHalt, the settings
// calls) say ErrNoDevice too. None of them may reach the new plug-in,
// which a Device opened after the Replug uses.

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

// adv16GetInterface returns interface 0's alternate setting as d's device
// reports it (GET_INTERFACE).
func adv16GetInterface(t *testing.T, d *Device) int {
	t.Helper()
	ctx, cancel := testContext()
	defer cancel()
	b := make([]byte, 1)
	n, err := d.Control(ctx, Setup{RequestType: RequestIn | RequestStandard | RecipientInterface, Request: 0x0a}, b)
	require.NoError(t, err, "GET_INTERFACE")
	require.Equal(t, 1, n)
	return int(b[0])
}

// adv16GetConfiguration returns the configuration d's device reports
// (GET_CONFIGURATION).
func adv16GetConfiguration(t *testing.T, d *Device) int {
	t.Helper()
	ctx, cancel := testContext()
	defer cancel()
	b := make([]byte, 1)
	n, err := d.Control(ctx, Setup{RequestType: RequestIn | RequestStandard | RecipientDevice, Request: 0x08}, b)
	require.NoError(t, err, "GET_CONFIGURATION")
	require.Equal(t, 1, n)
	return int(b[0])
}

// TestAdv16StaleDeviceAfterReplug: a Device opened before Unplug and
// Replug, which has made no transfer since, is asked to clear a halt and
// to change settings. Each must fail with ErrNoDevice and leave the new
// plug-in alone: its halt stays (the new Device's read still fails with
// ErrStall), its alternate setting and configuration stay (GET_INTERFACE,
// GET_CONFIGURATION on the new Device).
func TestAdv16StaleDeviceAfterReplug(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{})
	old := sd.d
	require.NoError(t, sd.s.Unplug())
	require.NoError(t, sd.s.Replug())
	d2, err := usbsim.Open(sd.r, sd.s)
	require.NoError(t, err)
	t.Cleanup(func() { _ = d2.Close() })
	in2, err := d2.Endpoint(usbsim.AddrBulkIn)
	require.NoError(t, err)

	// ClearHalt on the old Device must not clear the new plug-in's halt.
	require.NoError(t, sd.s.Stall(usbsim.AddrBulkIn))
	assert.ErrorIs(t, old.ClearHalt(usbsim.AddrBulkIn), ErrNoDevice, "ClearHalt on a Device of an earlier plug-in")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err = in2.Transfer(ctx, make([]byte, 64))
	cancel()
	assert.ErrorIs(t, err, ErrStall, "the new plug-in's halt was cleared by the old Device")
	require.NoError(t, d2.ClearHalt(usbsim.AddrBulkIn))

	// Settings calls on the old Device must not change the new plug-in.
	assert.ErrorIs(t, old.SetAltSetting(0, usbsim.AltEventsOnly), ErrNoDevice, "SetAltSetting on a Device of an earlier plug-in")
	assert.Equal(t, 0, adv16GetInterface(t, d2), "the new plug-in's alternate setting was changed by the old Device")
	assert.ErrorIs(t, old.ReleaseInterface(0), ErrNoDevice, "ReleaseInterface on a Device of an earlier plug-in")
	// The old Device's record still has interface 0 claimed (its release
	// failed), so SetConfiguration is refused before it reaches a device
	// (ErrInvalid); either refusal leaves the new plug-in alone.
	if err := old.SetConfiguration(0); !errors.Is(err, ioring.ErrInvalid) {
		assert.ErrorIs(t, err, ErrNoDevice, "SetConfiguration on a Device of an earlier plug-in")
	}
	assert.Equal(t, 1, adv16GetConfiguration(t, d2), "the new plug-in was unconfigured by the old Device")

	require.NoError(t, old.Close())
	require.NoError(t, d2.Close())
	AssertSettled(t, sd.r)
}
