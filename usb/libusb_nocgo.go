//go:build !cgo

package usb

import "github.com/cancelio/cancelio/ioring"

// haveLibusb says whether this build has the libusb backend (cgo).
const haveLibusb = false

func libusbList() ([]DeviceDesc, error) { return nil, errNoLibusbBuild }

func libusbOpen(*ioring.Ring, uint16, uint16, options) (*Device, error) {
	return nil, errNoLibusbBuild
}
