// Command usbvm-exec runs a program, typically a Go test binary, inside a
// throw-away QEMU guest that boots Debian's kernel with dummy_hcd,
// libcomposite and usb_f_fs loaded, so tests meet a real Linux USB host and
// gadget stack on a machine without USB:
//
//	go run ./internal/usbvm/cmd/usbvm-setup    # once: QEMU, kernel
//	CGO_ENABLED=0 go build -o /tmp/usbvm-exec ./internal/usbvm/cmd/usbvm-exec
//	go test -count=1 -exec /tmp/usbvm-exec ./usb/...
//
// The program's output streams back over the guest's second serial port; the
// command exits with the program's exit status, or 1 with the guest console
// shown when the guest reports none (boot watchdog, kernel panic, hang).
// Inside the guest the same binary is the init (PID 1).
//
// Environment: CANCELIO_USBVM_CACHE (cache root), CANCELIO_USBVM_ACCEL (tcg,
// kvm), CANCELIO_USBVM_MEM (512M), CANCELIO_USBVM_SMP (2),
// CANCELIO_USBVM_BOOT_TIMEOUT (60s), CANCELIO_USBVM_CONSOLE=1 (always show
// the console), CANCELIO_USBVM_QEMU (QEMU binary). CANCELIO_* and the Go
// runtime's variables (GOTRACEBACK, GODEBUG, GOMAXPROCS...) reach the program.
package main

import (
	"os"

	"github.com/cancelio/cancelio/internal/usbvm/internal/guestinit"
	"github.com/cancelio/cancelio/internal/usbvm/internal/vmhost"
)

func main() {
	if guestinit.IsInit() {
		guestinit.Main()
	}
	os.Exit(vmhost.Exec(os.Args[1:], os.Stdout, os.Stderr))
}
