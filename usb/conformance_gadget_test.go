//go:build cgo && linux

package usb_test

import (
	"testing"

	"github.com/cancelio/cancelio/internal/usbvm"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// The gadget backends of the conformance suite: usbsim's scanner served
// as a FunctionFS gadget in the usbvm guest, opened through usbfs and
// through libusb (gadgetBackends). Outside the guest they skip.
func init() {
	for _, backend := range gadgetBackends {
		confBackends = append(confBackends, confBackend{name: backend, need: usbvm.RequireGuest, open: func(t *testing.T, cfg usbsim.Config) *confDev {
			gd := newGadgetDev(t, backend, cfg)
			return &confDev{r: gd.r, s: gd.s, d: gd.d, in: gd.in, out: gd.out, intr: gd.intr, maxTransfer: gd.maxTransfer,
				resets: true, unconfigures: backend == "usbfs"}
		}})
	}
}
