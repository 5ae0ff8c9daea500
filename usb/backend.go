package usb

import (
	"fmt"
	"os"

	"github.com/cancelio/cancelio/ioring"
)

// The transports of Open and List.
const (
	backendUsbfs  = "usbfs"
	backendLibusb = "libusb"
)

// backendEnv is the environment variable that names the backend when
// WithBackend is not given.
const backendEnv = "CANCELIO_USB"

// backendName returns the backend Open and List use: the option, else the
// environment's, else the platform's default.
func backendName(opt string) string {
	if opt != "" {
		return opt
	}
	if env := os.Getenv(backendEnv); env != "" {
		return env
	}
	return defaultBackend
}

// checkBackend refuses a backend that is unknown (ioring.ErrInvalid) or
// missing from this build (ioring.ErrNotSupported).
func checkBackend(name string) error {
	switch name {
	case backendUsbfs:
		return nil
	case backendLibusb:
		if !haveLibusb {
			return errNoLibusbBuild
		}
		return nil
	}
	return fmt.Errorf("%w: unknown backend %q (want usbfs or libusb)", ioring.ErrInvalid, name)
}

// errNoLibusbBuild is checkBackend's answer for libusb without cgo.
var errNoLibusbBuild = fmt.Errorf("backend libusb: %w: built without cgo", ioring.ErrNotSupported)

// List returns the USB devices attached to the system, root hubs included,
// with the endpoints of their first configuration (alternate setting 0 of
// every interface). It enumerates through the default backend
// (CANCELIO_USB, else usbfs on Linux: sysfs and the usbfs nodes, no cgo).
// It returns an error wrapping ErrNoUSB where there is no USB subsystem
// (no /dev/bus/usb).
func List() ([]DeviceDesc, error) {
	name := backendName("")
	if err := checkBackend(name); err != nil {
		return nil, errorf("usb: list: %w", err)
	}
	if err := haveUSB(); err != nil {
		return nil, errorf("usb: list: %w", err)
	}
	if name == backendLibusb {
		return libusbList()
	}
	return usbfsList()
}

// Open opens the first USB device with vendor ID vid and product ID pid
// (WithBusAddr picks one of several) through the backend WithBackend,
// CANCELIO_USB or the platform names (usbfs on Linux), claims its interface
// (WithInterface, WithAltSetting; 0 by default) in its active configuration
// (WithConfig), detaching a kernel driver bound to it, and returns a Device
// whose transfers complete through ring. Both backends give the same
// results (see the package doc) and the same errors.Is identities.
//
// It returns an error wrapping ioring.ErrInvalid for a nil ring or an
// unknown backend (before touching any device), ioring.ErrNotSupported for
// a backend this build lacks (libusb without cgo), ErrNoUSB where there is
// no USB subsystem, ErrNotFound when no device matches, and the backend's
// errors otherwise (permissions: EACCES on usbfs, gousb.ErrorAccess on
// libusb).
//
// Transfers run in order per endpoint, one at a time (usbfs: WithDepth at
// a time): queued transfers wait in the Device, each cancelable at once.
func Open(ring *ioring.Ring, vid, pid uint16, opts ...Option) (*Device, error) {
	o := collect(opts)
	name := backendName(o.backend)
	if err := checkBackend(name); err != nil {
		return nil, errorf("usb: open %04x:%04x: %w", vid, pid, err)
	}
	if ring == nil {
		return nil, errorf("usb: open %04x:%04x: %w: nil ring", vid, pid, ioring.ErrInvalid)
	}
	if o.config < 0 || o.config > 255 || o.iface < 0 || o.iface > 255 || o.alt < 0 || o.alt > 255 || o.bus < 0 || o.addr < 0 {
		return nil, errorf("usb: open %04x:%04x: %w: configuration %d, interface %d, alternate setting %d, bus %d, address %d out of range",
			vid, pid, ioring.ErrInvalid, o.config, o.iface, o.alt, o.bus, o.addr)
	}
	if name == backendLibusb {
		return libusbOpen(ring, vid, pid, o)
	}
	if err := haveUSB(); err != nil {
		return nil, errorf("usb: open %04x:%04x: %w", vid, pid, err)
	}
	return usbfsOpen(ring, vid, pid, o)
}
