package usb

import (
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/usb/internal/usbfs"
)

// TestBackendSelection: WithBackend wins over CANCELIO_USB, which wins
// over the platform's default (usbfs on Linux).
func TestBackendSelection(t *testing.T) {
	t.Setenv(backendEnv, "")
	assert.Equal(t, defaultBackend, backendName(""))
	if runtime.GOOS == "linux" {
		assert.Equal(t, "usbfs", backendName(""), "the default on Linux")
	}
	t.Setenv(backendEnv, "libusb")
	assert.Equal(t, "libusb", backendName(""))
	assert.Equal(t, "usbfs", backendName("usbfs"), "the option wins")
	t.Setenv(backendEnv, "usbfs")
	assert.Equal(t, "usbfs", backendName(""))
	assert.Equal(t, "libusb", backendName("libusb"), "the option wins")
}

// TestBackendBuild: usbfs is in every build, libusb only with cgo; an
// unknown name is bad input.
func TestBackendBuild(t *testing.T) {
	require.NoError(t, checkBackend("usbfs"))
	if haveLibusb {
		require.NoError(t, checkBackend("libusb"))
	} else {
		require.ErrorIs(t, checkBackend("libusb"), ioring.ErrNotSupported)
	}
	for _, name := range []string{"floppy", "USBFS", " usbfs"} {
		assert.ErrorIs(t, checkBackend(name), ioring.ErrInvalid, "%q", name)
	}
}

// TestOpenBadInput: bad input is refused before any device is looked
// for, on every backend, whether it comes from an option or the
// environment.
func TestOpenBadInput(t *testing.T) {
	t.Setenv(backendEnv, "")
	r := NewRing(t, 8)
	for _, backend := range []string{"usbfs", "libusb"} {
		if checkBackend(backend) != nil {
			continue
		}
		_, err := Open(nil, 0x1209, 0x0001, WithBackend(backend))
		assert.ErrorIs(t, err, ioring.ErrInvalid, "%s: nil ring", backend)
		for i, opt := range []Option{WithInterface(-1), WithInterface(256), WithAltSetting(-1), WithConfig(300), WithBusAddr(-1, 0)} {
			_, err = Open(r, 0x1209, 0x0001, WithBackend(backend), opt)
			assert.ErrorIs(t, err, ioring.ErrInvalid, "%s: option %d", backend, i)
		}
	}
	_, err := Open(r, 0x1209, 0x0001, WithBackend("floppy"))
	assert.ErrorIs(t, err, ioring.ErrInvalid)
	t.Setenv(backendEnv, "floppy")
	_, err = Open(r, 0x1209, 0x0001)
	assert.ErrorIs(t, err, ioring.ErrInvalid, "CANCELIO_USB=floppy")
	_, err = List()
	assert.ErrorIs(t, err, ioring.ErrInvalid, "CANCELIO_USB=floppy")
	if !haveLibusb {
		t.Setenv(backendEnv, "libusb")
		_, err = Open(r, 0x1209, 0x0001)
		assert.ErrorIs(t, err, ioring.ErrNotSupported, "CANCELIO_USB=libusb without cgo")
		_, err = Open(r, 0x1209, 0x0001, WithBackend("libusb"))
		assert.ErrorIs(t, err, ioring.ErrNotSupported, "libusb without cgo")
	}
}

// TestOpenUsbfsNoUSB: on a machine without a USB subsystem the usbfs
// backend says so, chosen by default, option or environment.
func TestOpenUsbfsNoUSB(t *testing.T) {
	if haveUSB() == nil {
		t.Skip("this machine has /dev/bus/usb")
	}
	r := NewRing(t, 8)
	t.Setenv(backendEnv, "")
	_, err := Open(r, 0x1209, 0x0001, WithBackend("usbfs"))
	assert.ErrorIs(t, err, ErrNoUSB)
	_, err = usbfsOpen(r, 0x1209, 0x0001, options{})
	assert.ErrorIs(t, err, ErrNoUSB, "usbfs's own answer")
	_, err = usbfsList()
	assert.ErrorIs(t, err, ErrNoUSB, "usbfs's own answer")
	t.Setenv(backendEnv, "usbfs")
	_, err = Open(r, 0x1209, 0x0001)
	assert.ErrorIs(t, err, ErrNoUSB)
	_, err = List()
	assert.ErrorIs(t, err, ErrNoUSB)
}

// TestUsbfsErrors: usbfs's results are this package's errors themselves
// (one set of sentinels, package base), the same identities libusb's map
// to (see TestErrorMapsAgree), also wrapped in usbfs's OpError; statuses
// and errnos without a sentinel keep their identity.
func TestUsbfsErrors(t *testing.T) {
	enodev := fmt.Errorf("%w (%v)", usbfs.ErrNoDevice, syscall.ENODEV)
	for _, tc := range []struct {
		in, want error
	}{
		{ioring.ErrCanceled, ErrCanceled},
		{ioring.ErrTimeout, ErrTimeout},
		{usbfs.ErrStall, ErrStall},
		{&usbfs.OpError{Op: "control", Err: usbfs.ErrStall}, ErrStall},
		{usbfs.ErrBabble, ErrBabble},
		{usbfs.ErrNoDevice, ErrNoDevice},
		{&usbfs.OpError{Op: "clear halt 0x81", Err: enodev}, ErrNoDevice},
		{fmt.Errorf("usb: endpoint 0x81: %w", &usbfs.OpError{Op: "submit", Err: enodev}), ErrNoDevice},
		{usbfs.ErrClosed, ErrClosed},
		{usbfs.ErrNoUSB, ErrNoUSB},
	} {
		assert.ErrorIs(t, tc.in, tc.want, "%v", tc.in)
	}
	for _, s := range []error{usbfs.ErrStall, usbfs.ErrBabble, usbfs.ErrNoDevice, usbfs.ErrClosed, usbfs.ErrNoUSB} {
		assert.Contains(t, []error{ErrStall, ErrBabble, ErrNoDevice, ErrClosed, ErrNoUSB}, s, "the sentinel itself")
	}
	assert.ErrorIs(t, usbfs.ErrNoDevice, ioring.ErrNoDevice)
	assert.ErrorIs(t, ErrTimeout, ErrCanceled, "a timeout is a cancel")

	noUSB := openError(fmt.Errorf("%w (/dev/bus/usb is missing)", usbfs.ErrNoUSB))
	assert.ErrorIs(t, noUSB, ErrNoUSB)
	// A device that vanished between enumeration and open is not found.
	assert.ErrorIs(t, openError(&usbfs.OpError{Op: "read descriptors", Err: fs.ErrNotExist}), ErrNotFound)
	assert.ErrorIs(t, openError(&usbfs.OpError{Op: "open", Err: enodev}), ErrNoDevice)

	// A status without a sentinel keeps its errno.
	var proto error = &usbfs.StatusError{Errno: syscall.EPROTO}
	assert.ErrorIs(t, proto, syscall.EPROTO)
	var se *usbfs.StatusError
	assert.True(t, errors.As(proto, &se))
	for _, s := range []error{ErrStall, ErrNoDevice, ErrCanceled, ErrBabble} {
		assert.NotErrorIs(t, proto, s)
	}
	// So does a refused ioctl.
	assert.ErrorIs(t, openError(&usbfs.OpError{Op: "claim interface 0", Err: syscall.EBUSY}), syscall.EBUSY)
}

// TestUsbfsRefusesUpFront: transfers the usbfs transport cannot carry are
// refused at Submit, before anything reaches a device (this transport has
// none), and nothing completes.
func TestUsbfsRefusesUpFront(t *testing.T) {
	r := NewRing(t, 8)
	desc := DeviceDesc{Endpoints: []EndpointDesc{
		{Address: 0x81, Type: Isochronous, MaxPacketSize: 512},
		{Address: 0x82, Type: Bulk, MaxPacketSize: 512},
	}}
	d := NewDevice(desc, &usbfsTransport{eps: map[uint8]*usbfs.Endpoint{}})
	iso, err := d.Endpoint(0x81)
	require.NoError(t, err)
	_, err = iso.Submit(make([]byte, 8), Xfer{})
	assert.ErrorIs(t, err, ioring.ErrNotSupported, "isochronous")
	in, err := d.Endpoint(0x82)
	require.NoError(t, err)
	_, err = in.Submit(nil, Xfer{})
	assert.ErrorIs(t, err, ioring.ErrInvalid, "IN without a buffer")
	assert.ErrorIs(t, d.ClearHalt(0x81), ioring.ErrNotSupported, "clear halt of isochronous")
	assert.Zero(t, r.InFlight())
	require.NoError(t, d.Close())
	AssertNoMore(t, r)
}

// plainTransport is a Transport without Configurer: a backend outside
// this package that keeps the settings it was opened with.
type plainTransport struct{ Transport }

// TestSettingsNeedConfigurer: the settings calls of a Device whose
// backend cannot change them (no Configurer) or does not describe its
// configurations fail with ioring.ErrNotSupported, after bad numbers are
// refused; Desc reports what NewDevice was given.
func TestSettingsNeedConfigurer(t *testing.T) {
	configs := []ConfigDesc{{Value: 1, Interfaces: []InterfaceDesc{{Number: 0}}}}
	for _, c := range []struct {
		name string
		desc DeviceDesc
		tr   Transport
	}{
		{"no Configurer", DeviceDesc{Configs: configs, Config: 1}, plainTransport{&usbfsTransport{}}},
		{"no Configs", DeviceDesc{Config: 1, Interface: 2, AltSetting: 3}, &usbfsTransport{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := NewDevice(c.desc, c.tr)
			assert.ErrorIs(t, d.SetConfiguration(1), ioring.ErrNotSupported)
			assert.ErrorIs(t, d.ClaimInterface(0, true), ioring.ErrNotSupported)
			assert.ErrorIs(t, d.ReleaseInterface(0), ioring.ErrNotSupported)
			assert.ErrorIs(t, d.SetAltSetting(0, 1), ioring.ErrNotSupported)
			assert.ErrorIs(t, d.SetAltSetting(0, 300), ioring.ErrInvalid, "out of range first")
			assert.ErrorIs(t, d.ClaimInterface(-1, false), ioring.ErrInvalid)
			assert.Equal(t, 1, d.Configuration())
			if c.desc.Configs == nil {
				desc := d.Desc()
				assert.Equal(t, [3]int{1, 2, 3}, [3]int{desc.Config, desc.Interface, desc.AltSetting})
			}
		})
	}
}
