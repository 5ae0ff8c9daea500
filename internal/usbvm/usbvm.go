// Package usbvm is for tests that run inside the usbvm guest: a throw-away
// QEMU virtual machine booting Debian's kernel with dummy_hcd, libcomposite
// and usb_f_fs, started by `go test -exec usbvm-exec` (see cmd/usbvm-exec and
// cmd/usbvm-setup). In the guest one test process is both sides of a real
// Linux USB stack: the device, a configfs gadget whose endpoints are
// FunctionFS files (NewGadget), and the host, usbfs or libusb on the device
// the gadget's plug makes appear (Gadget.HostDevice).
//
// Tests call RequireGuest first; outside the guest they skip with a reason
// that says how to run them (make test-usbvm).
package usbvm

import (
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/cancelio/cancelio/internal/usbvm/internal/proto"
)

// SkipReason is the reason tests give when they skip outside the guest.
const SkipReason = "not in usbvm guest; run via make test-usbvm (go test -exec usbvm-exec)"

// InGuest reports whether this process runs inside a usbvm guest: the runner
// set proto.GuestEnv and the guest's init config exists.
func InGuest() bool {
	if os.Getenv(proto.GuestEnv) != "1" {
		return false
	}
	_, err := os.Stat(proto.ConfigPath)
	return err == nil
}

// RequireGuest skips the test unless it runs inside the guest, and logs the
// guest kernel once under -v.
func RequireGuest(tb testing.TB) {
	tb.Helper()
	if !InGuest() {
		tb.Skip(SkipReason)
	}
	LogKernel(tb)
}

var logOnce sync.Once

// LogKernel logs the running kernel's release and version, once per process
// and only under -v.
func LogKernel(tb testing.TB) {
	tb.Helper()
	if !testing.Verbose() {
		return
	}
	logOnce.Do(func() {
		tb.Logf("usbvm guest kernel %s", KernelRelease())
	})
}

// KernelRelease returns the running kernel's release and version, as
// /proc/sys/kernel/{osrelease,version} say, or "unknown".
func KernelRelease() string {
	rel, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	s := strings.TrimSpace(string(rel))
	if v, err := os.ReadFile("/proc/sys/kernel/version"); err == nil {
		s += " (" + strings.TrimSpace(string(v)) + ")"
	}
	return s
}
