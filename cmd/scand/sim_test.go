package main

// The tests' only contact with the simulated scanner.

import (
	"sync"
	"testing"

	"github.com/cancelio/cancelio/usb/usbsim"
)

// expectedImage returns the raw image the simulated scanner sends for the
// n-th scan (from 0) of scand's driver, of w x h pixels at dpi, in colour
// or gray.
func expectedImage(n, dpi, w, h int, color bool) []byte {
	f := usbsim.FormatGray8
	if color {
		f = usbsim.FormatRGB24
	}
	return usbsim.ExpectedImage(usbsim.ScanParams{DPI: uint16(dpi), Width: uint32(w), Height: uint32(h), Format: f, Seed: uint64(n)})
}

// gadgetScanner is the simulated scanner served as a USB gadget: what a
// test does to it.
type gadgetScanner interface {
	SetBandwidth(int64) // caps its data rate (bytes/s; 0: none)
	Unplug() error      // unbinds the gadget: the host sees it leave
	Replug() error      // binds it again: the host enumerates a new device
}

// serveGadget serves the simulated scanner through the USB gadget g (in
// the usbvm guest).
func serveGadget(t *testing.T, g usbsim.Gadget) gadgetScanner {
	t.Helper()
	sc, err := usbsim.ServeGadget(g, usbsim.Config{})
	if err != nil {
		t.Fatalf("serve the gadget: %v", err)
	}
	t.Cleanup(func() { sc.Close() })
	return sc
}

// watchScans shows the test the simulated scanner of the daemon it starts
// next (call it before start), and returns a function that reports
// whether that scanner has accepted a scan job: the driver's acquisition
// runs (it sent the device its start of scan), as seen from the device.
func watchScans(t *testing.T) (scanning func() bool) {
	t.Helper()
	var mu sync.Mutex
	var sc *usbsim.Scanner
	testSim = func(s *usbsim.Scanner) {
		mu.Lock()
		sc = s
		mu.Unlock()
	}
	t.Cleanup(func() { testSim = nil }) // after start's cleanup: the daemon ended
	return func() bool {
		mu.Lock()
		s := sc
		mu.Unlock()
		return s != nil && s.LastScan().Width != 0 // zero before the first scan
	}
}
