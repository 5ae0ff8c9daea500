package escl_test

// This file is the tests' only contact with the simulated scanner (usbsim,
// minidrvtest.SimOpener, Scanner.LastScan): when they move, only it changes.

import (
	"context"
	"testing"
	"time"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/minidrv/minidrvtest"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// simDevice is a simulated scanner behind an initialized driver.
type simDevice struct {
	d  *minidrv.Driver
	sc *usbsim.Scanner
}

// simAbortTimeout is the driver's AbortTimeout for the tests' scanner. It
// bounds each probe of the device (Initialize, a Lock after a failed
// recovery) and each step of the recovery after a cancel: a healthy
// simulated device must answer within it on a loaded 2-core machine under
// the race detector, so it is generous. No test waits for it to run out:
// a cancel never waits for the device, and the hung devices of the tests
// answer again once resumed.
const simAbortTimeout = 5 * time.Second

// newSimDevice returns an initialized driver for a new simulated scanner;
// cleanup undoes it all.
func newSimDevice(tb testing.TB, abortTimeout time.Duration) *simDevice {
	tb.Helper()
	ring, err := ioring.New(ioring.Config{Entries: 256})
	if err != nil {
		tb.Fatalf("ioring.New: %v", err)
	}
	sc, err := usbsim.NewScanner(usbsim.Config{})
	if err != nil {
		ring.Close()
		tb.Fatalf("usbsim.NewScanner: %v", err)
	}
	d, err := minidrv.New(minidrv.Config{Ring: ring, Open: minidrvtest.SimOpener(ring, sc), AbortTimeout: abortTimeout})
	if err != nil {
		tb.Fatalf("minidrv.New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Initialize(ctx); err != nil {
		tb.Fatalf("Initialize: %v", err)
	}
	tb.Cleanup(func() {
		sc.Resume() // a hung device would hold up the last Uninitialize
		if err := d.Uninitialize(); err != nil {
			tb.Errorf("Uninitialize: %v", err)
		}
		sc.Close()
		ring.Close()
	})
	return &simDevice{d: d, sc: sc}
}

// lastImage returns the raw image the driver's latest acquisition asked
// the scanner for, and its size in pixels.
func (s *simDevice) lastImage() (raw []byte, width, height int) {
	p := s.sc.LastScan()
	return usbsim.ExpectedImage(p), int(p.Width), int(p.Height)
}

// acquisitions returns the number of acquisitions the driver started: the
// driver numbers its jobs from 0 in the job's seed, and the scanner reports
// the zero ScanParams (no width) before the first.
func (s *simDevice) acquisitions() int {
	p := s.sc.LastScan()
	if p.Width == 0 {
		return 0
	}
	return int(p.Seed) + 1
}

// setBandwidth caps the scanner's data rate (0: no cap).
func (s *simDevice) setBandwidth(bytesPerSec int64) { s.sc.SetBandwidth(bytesPerSec) }

// hangAfter makes the scanner stop answering after n more bytes of image.
func (s *simDevice) hangAfter(n int64) { s.sc.HangAfter(n) }

// resume ends a hang.
func (s *simDevice) resume() { s.sc.Resume() }

// exampleDriver returns an initialized driver for a new simulated scanner,
// and the function that undoes it all.
func exampleDriver() (*minidrv.Driver, func(), error) {
	ring, err := ioring.New(ioring.Config{Entries: 256})
	if err != nil {
		return nil, nil, err
	}
	sc, err := usbsim.NewScanner(usbsim.Config{})
	if err != nil {
		ring.Close()
		return nil, nil, err
	}
	d, err := minidrv.New(minidrv.Config{Ring: ring, Open: minidrvtest.SimOpener(ring, sc)})
	if err == nil {
		err = d.Initialize(context.Background())
	}
	if err != nil {
		sc.Close()
		ring.Close()
		return nil, nil, err
	}
	return d, func() { d.Uninitialize(); sc.Close(); ring.Close() }, nil
}

// unplug disconnects the scanner.
func (s *simDevice) unplug() error { return s.sc.Unplug() }
