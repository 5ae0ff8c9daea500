// Package minidrvtest holds helpers for tests of drivers built with package
// minidrv: openers of the simulated scanner (package usbsim) as the
// driver's device. Production code never imports it, so that the
// simulator stays out of a driver's build (as wireguard-go keeps its fake
// TUN devices in tun/tuntest).
package minidrvtest

import (
	"context"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// SimOpener returns a minidrv.Config.Open that opens the simulated scanner s
// on ring r (the scanner's current plug-in, each time it is called). The
// caller keeps owning s and r; the driver closes the devices it opened.
func SimOpener(r *ioring.Ring, s *usbsim.Scanner) func(context.Context) (*usb.Device, error) {
	return func(context.Context) (*usb.Device, error) { return usbsim.Open(r, s) }
}

// SimHotplug returns a minidrv.Config.Hotplug that watches the simulated
// scanner s (usbsim.Scanner.WatchHotplug): its Unplug and Replug reach the
// driver as the kernel's uevents reach it for a real device, through the
// same watch and the same NotifyPnpEvent path.
func SimHotplug(s *usbsim.Scanner) func() (minidrv.HotplugWatcher, error) {
	return func() (minidrv.HotplugWatcher, error) {
		h, err := s.WatchHotplug()
		if err != nil {
			return nil, err
		}
		return h, nil
	}
}
