// Package usbvmtest is for tests outside package usb (minidrv, bench) that
// run inside the usbvm guest, a QEMU virtual machine with a real Linux USB
// stack (dummy_hcd, a configfs + FunctionFS gadget, usbfs), started by
// `go test -exec usbvm-exec` (make test-usbvm). It re-exports the test
// helpers of usb/internal/usbvm, which Go's internal rule keeps to the usb
// tree: RequireGuest, and on Linux NewGadget, whose Gadget usbsim.ServeGadget
// serves the scanner through.
//
// It is test infrastructure: import it from _test.go files only.
package usbvmtest

import (
	"testing"

	"github.com/cancelio/cancelio/usb/internal/usbvm"
)

// SkipReason is the reason tests give when they skip outside the guest.
const SkipReason = usbvm.SkipReason

// InGuest reports whether this process runs inside the usbvm guest.
func InGuest() bool { return usbvm.InGuest() }

// RequireGuest skips the test unless it runs inside the guest (with
// SkipReason), and logs the guest's kernel release once under -v.
func RequireGuest(tb testing.TB) {
	tb.Helper()
	usbvm.RequireGuest(tb)
}

// LogKernel logs the running kernel's release and version, once per
// process and only under -v.
func LogKernel(tb testing.TB) {
	tb.Helper()
	usbvm.LogKernel(tb)
}
