//go:build !cgo

package usb

import (
	"fmt"

	"github.com/cancelio/cancelio/ioring"
)

// List returns the USB devices attached to the system. This build has no
// cgo, hence no libusb: it returns an error wrapping
// ioring.ErrNotSupported, and also ErrNoUSB where there is no USB
// subsystem.
func List() ([]DeviceDesc, error) {
	return nil, noLibusb("list")
}

// Open opens a USB device. This build has no cgo, hence no libusb: it
// returns an error wrapping ioring.ErrNotSupported, and also ErrNoUSB
// where there is no USB subsystem. OpenSim works in every build.
func Open(ring *ioring.Ring, vid, pid uint16, opts ...Option) (*Device, error) {
	switch o := collect(opts); o.backend {
	case "", "libusb", "usbfs":
	default:
		return nil, fmt.Errorf("usb: open %04x:%04x: %w: unknown backend %q (want libusb)", vid, pid, ioring.ErrInvalid, o.backend)
	}
	return nil, noLibusb(fmt.Sprintf("open %04x:%04x", vid, pid))
}

func noLibusb(what string) error {
	if err := haveUSB(); err != nil {
		return fmt.Errorf("usb: %s: %w: built without cgo (libusb); %w", what, ioring.ErrNotSupported, err)
	}
	return fmt.Errorf("usb: %s: %w: built without cgo (libusb)", what, ioring.ErrNotSupported)
}
