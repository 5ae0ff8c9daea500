package main

// This file is scand's only contact with the simulated scanner: when the
// simulator's constructor moves, only it changes.

import (
	"context"
	"fmt"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// testSim, set by tests only (nil otherwise, and not changed while a
// daemon runs), is called with each simulated scanner simScanner makes,
// before the driver opens it: a test watches the device's side of a scan
// (usbsim.Scanner.LastScan) to know when one runs.
var testSim func(*usbsim.Scanner)

// simScanner starts a simulated scanner with the faults of o.
func simScanner(ring *ioring.Ring, o *options) (*scanner, error) {
	sc, err := usbsim.NewScanner(usbsim.Config{Bandwidth: o.bandwidth})
	if err != nil {
		return nil, fmt.Errorf("simulated scanner: %w", err)
	}
	if testSim != nil {
		testSim(sc)
	}
	if o.hangAfter > 0 {
		sc.HangAfter(o.hangAfter)
	}
	return &scanner{
		name:  "cancelio simulated scanner",
		open:  func(context.Context) (*usb.Device, error) { return usbsim.Open(ring, sc) },
		calm:  sc.Resume, // a hung device would hold up the last Uninitialize
		close: func() { sc.Close() },
	}, nil
}
