package usb_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// adv14GetConfiguration asks the device for its configuration
// (GET_CONFIGURATION).
func adv14GetConfiguration(t *testing.T, d *Device) int {
	t.Helper()
	ctx, cancel := testContext()
	defer cancel()
	var b [1]byte
	n, err := d.Control(ctx, Setup{RequestType: RequestIn | RequestStandard | RecipientDevice, Request: 0x08}, b[:])
	require.NoError(t, err, "GET_CONFIGURATION")
	require.Equal(t, 1, n)
	return int(b[0])
}

// adv14GetInterface asks the device for interface 0's alternate setting
// (GET_INTERFACE).
func adv14GetInterface(t *testing.T, d *Device) (int, error) {
	t.Helper()
	ctx, cancel := testContext()
	defer cancel()
	var b [1]byte
	n, err := d.Control(ctx, Setup{RequestType: RequestIn | RequestStandard | RecipientInterface, Request: 0x0a}, b[:])
	if err != nil {
		return 0, err
	}
	require.Equal(t, 1, n)
	return int(b[0]), nil
}

// TestAdv14SimOpenAfterUnconfigure: a Device opened on a scanner that an
// earlier Device (closed since) left unconfigured must be in the state its
// Desc describes, as usbfs's Open makes it (an unconfigured device gets
// configuration 1): configuration 1, interface 0 claimed at setting 0, so
// that the settings calls work on it. In particular it must be able to
// release the interface it reports claimed.
func TestAdv14SimOpenAfterUnconfigure(t *testing.T) {
	CheckFDs(t)
	r := NewRing(t, 64)
	s, err := usbsim.NewScanner(usbsim.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })

	a, err := usbsim.Open(r, s)
	require.NoError(t, err)
	require.NoError(t, a.ReleaseInterface(0))
	require.NoError(t, a.SetConfiguration(0))
	require.NoError(t, a.Close())

	b, err := usbsim.Open(r, s)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	desc := b.Desc()
	require.Equal(t, 1, desc.Config, "Open reports configuration 1")
	require.Equal(t, 0, desc.Interface, "Open reports interface 0 claimed")

	assert.Equal(t, desc.Config, adv14GetConfiguration(t, b), "the device's configuration is the one Desc reports")
	assert.NoError(t, b.SetAltSetting(0, usbsim.AltEventsOnly), "an alternate setting of the interface Desc says is claimed")
	assert.NoError(t, b.ReleaseInterface(0), "releasing the interface Desc says is claimed")
}

// TestAdv14SimOpenAfterAltSetting: a Device opened on a scanner that an
// earlier Device left at AltEventsOnly reports setting 0 (all three
// endpoints); the device must then be at setting 0 too, as a real host's
// release of the interface puts it back there (usb_unbind_interface) and
// Open's claim starts from.
func TestAdv14SimOpenAfterAltSetting(t *testing.T) {
	CheckFDs(t)
	r := NewRing(t, 64)
	s, err := usbsim.NewScanner(usbsim.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })

	a, err := usbsim.Open(r, s)
	require.NoError(t, err)
	require.NoError(t, a.SetAltSetting(0, usbsim.AltEventsOnly))
	require.NoError(t, a.Close())

	b, err := usbsim.Open(r, s)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	require.Equal(t, 0, b.Desc().AltSetting)
	require.Len(t, b.Desc().Endpoints, 3)
	alt, err := adv14GetInterface(t, b)
	require.NoError(t, err)
	assert.Equal(t, 0, alt, "the device's alternate setting is the one Desc reports")
}

// TestAdv14SettingsBadNumbers: every settings call refuses numbers out of
// range, unknown interfaces and settings, before any I/O and without
// changing the record; a zero Device refuses them all; the device keeps
// working.
func TestAdv14SettingsBadNumbers(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{})
	for _, n := range []int{-1 << 31, -256, -1, 256, 1 << 20} {
		assert.ErrorIs(t, sd.d.SetConfiguration(n), ioring.ErrInvalid, "SetConfiguration(%d)", n)
		assert.ErrorIs(t, sd.d.ClaimInterface(n, true), ioring.ErrInvalid, "ClaimInterface(%d)", n)
		assert.ErrorIs(t, sd.d.ReleaseInterface(n), ioring.ErrInvalid, "ReleaseInterface(%d)", n)
		assert.ErrorIs(t, sd.d.SetAltSetting(0, n), ioring.ErrInvalid, "SetAltSetting(0, %d)", n)
		assert.ErrorIs(t, sd.d.SetAltSetting(n, 0), ioring.ErrInvalid, "SetAltSetting(%d, 0)", n)
		_, err := sd.d.AltSetting(n)
		assert.ErrorIs(t, err, ErrNotFound, "AltSetting(%d)", n)
	}
	assert.ErrorIs(t, sd.d.SetAltSetting(0, 2), ErrNotFound)
	assert.ErrorIs(t, sd.d.SetAltSetting(1, 0), ErrNotFound)
	assert.Equal(t, 1, sd.d.Configuration())
	alt, err := sd.d.AltSetting(0)
	require.NoError(t, err)
	assert.Zero(t, alt)

	var zero Device
	assert.ErrorIs(t, zero.SetConfiguration(1), ioring.ErrInvalid)
	assert.ErrorIs(t, zero.ClaimInterface(0, false), ioring.ErrInvalid)
	assert.ErrorIs(t, zero.ReleaseInterface(0), ioring.ErrInvalid)
	assert.ErrorIs(t, zero.SetAltSetting(0, 0), ioring.ErrInvalid)
	_, err = zero.AltSetting(0)
	assert.ErrorIs(t, err, ioring.ErrInvalid)
	assert.Zero(t, zero.Configuration())

	ctx, cancel := context.WithTimeout(context.Background(), Patience)
	defer cancel()
	sd.send(t, usbsim.EchoCommand([]byte("still fine")))
	buf := make([]byte, sd.in.Desc().MaxTransfer)
	n, err := sd.in.Transfer(ctx, buf)
	require.NoError(t, err)
	assert.Equal(t, "still fine", string(buf[:n]))
}
