// Package minidrvtest holds helpers for tests of drivers built with package
// minidrv: openers of the simulated scanner (package usbsim) as the
// driver's device. Production code never imports it, so that the
// simulator stays out of a driver's build (as wireguard-go keeps its fake
// TUN devices in tun/tuntest).
package minidrvtest

import (
	"context"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// SimOpener returns a minidrv.Config.Open that opens the simulated scanner s
// on ring r (the scanner's current plug-in, each time it is called). The
// caller keeps owning s and r; the driver closes the devices it opened.
func SimOpener(r *ioring.Ring, s *usbsim.Scanner) func(context.Context) (*usb.Device, error) {
	return func(context.Context) (*usb.Device, error) { return usbsim.Open(r, s) }
}
