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

// simScanner starts a simulated scanner with the faults of o.
func simScanner(ring *ioring.Ring, o *options) (*scanner, error) {
	sc, err := usbsim.NewScanner(usbsim.Config{Bandwidth: o.bandwidth})
	if err != nil {
		return nil, fmt.Errorf("simulated scanner: %w", err)
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
