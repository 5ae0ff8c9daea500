package main

// This file is wiascan's only use of the simulated scanner and of
// minidrv's hooks for it: the rest of the command sees a Config.Open.

import (
	"context"
	"fmt"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// simOpener starts the simulated scanner with o's faults (--bandwidth,
// --hang-after) and returns a minidrv.Config.Open for it on ring, and a
// release to call after the driver's Uninitialize.
func simOpener(ring *ioring.Ring, o *options) (open func(context.Context) (*usb.Device, error), release func(), err error) {
	sc, err := usbsim.NewScanner(usbsim.Config{Bandwidth: o.bandwidth})
	if err != nil {
		return nil, nil, fmt.Errorf("simulated scanner: %w", err)
	}
	if o.hangAfter > 0 {
		sc.HangAfter(o.hangAfter)
	}
	release = func() {
		sc.Resume() // a hung scanner must not hold up its own Close
		sc.Close()
	}
	return func(context.Context) (*usb.Device, error) { return usbsim.Open(ring, sc) }, release, nil
}
