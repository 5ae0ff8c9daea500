package usb

import (
	"fmt"
	"os"
)

// usbfsRoot is where Linux exposes USB devices to user space (usbfs nodes,
// devtmpfs). libusb needs it; without it no USB device can be opened.
var usbfsRoot = "/dev/bus/usb"

// haveUSB returns nil where the system has a USB subsystem, and an error
// wrapping ErrNoUSB otherwise. It is checked before libusb is initialized,
// which fails (or panics, in gousb) without one.
func haveUSB() error {
	if _, err := os.Stat(usbfsRoot); err != nil {
		return fmt.Errorf("%w: %v", ErrNoUSB, err)
	}
	return nil
}
