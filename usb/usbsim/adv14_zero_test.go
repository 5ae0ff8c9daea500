package usbsim_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// TestAdv14ZeroScanner: a zero Scanner (not made by NewScanner) is bad
// input: each method must refuse it with an error or do nothing, never
// panic, and never leave the Scanner's lock held so that the next call
// hangs. The calls run in order on one goroutine, each recovered, within a
// generous bound.
func TestAdv14ZeroScanner(t *testing.T) {
	var s usbsim.Scanner
	type call struct {
		name string
		f    func() error
		errs bool // refuses it: an error wrapping ioring.ErrInvalid
	}
	calls := []call{
		{"Info", func() error { _ = s.Info(); return nil }, false},
		{"Endpoints", func() error { _, err := s.Endpoints(); return err }, true},
		{"ControlEndpoint", func() error { _, err := s.ControlEndpoint(); return err }, true},
		{"Stall", func() error { return s.Stall(usbsim.AddrBulkIn) }, true},
		{"ClearHalt", func() error { return s.ClearHalt(usbsim.AddrBulkIn) }, true},
		{"SetLatency", func() error { s.SetLatency(time.Millisecond); return nil }, false},
		{"SetBandwidth", func() error { s.SetBandwidth(1 << 20); return nil }, false},
		{"Hang", func() error { s.Hang(); return nil }, false},
		{"HangAfter", func() error { s.HangAfter(10); return nil }, false},
		{"Resume", func() error { s.Resume(); return nil }, false},
		{"PressButton", func() error { s.PressButton(1); return nil }, false},
		{"LastScan", func() error { _ = s.LastScan(); return nil }, false},
		{"BusAddr", func() error { _, _ = s.BusAddr(); return nil }, false},
		{"WatchHotplug", func() error {
			h, err := s.WatchHotplug()
			if h != nil {
				_ = h.Close()
			}
			return err
		}, true},
		{"Unplug", func() error { return s.Unplug() }, true},
		{"Replug", func() error { return s.Replug() }, true},
		{"Close", func() error { return s.Close() }, true},
	}
	type outcome struct {
		call
		name  string
		panic any
		err   error
	}
	results := make(chan outcome, len(calls))
	go func() {
		for _, c := range calls {
			func() {
				o := outcome{call: c, name: c.name}
				defer func() {
					o.panic = recover()
					results <- o
				}()
				o.err = c.f()
			}()
		}
	}()
	deadline := time.After(10 * time.Second)
	for i := range calls {
		select {
		case o := <-results:
			assert.Nil(t, o.panic, "%s on a zero Scanner panicked (err %v)", o.name, o.err)
			if o.errs {
				assert.ErrorIs(t, o.err, ioring.ErrInvalid, "%s on a zero Scanner", o.name)
			} else {
				assert.NoError(t, o.err, o.name)
			}
		case <-deadline:
			t.Fatalf("%s on a zero Scanner hung (after %d calls returned)", calls[i].name, i)
		}
	}
}
