// Command scand serves a scanner as an eSCL (AirScan) network scanner
// through the cancelio minidriver (packages minidrv and minidrv/escl), so
// that unmodified clients scan from it: on Linux, scanimage and every SANE
// frontend through the sane-airscan backend.
//
//	scand --addr 127.0.0.1:8090 --sane-config /tmp/scand-sane
//	SANE_CONFIG_DIR=/tmp/scand-sane scanimage -d airscan:e0:cancelio --format=png -o page.png
//
//	scand --addr :8090 --usb 1209:0001            # a real scanner, through usbfs
//	scand --bandwidth 1M --hang-after 500k        # a slow simulated scanner that hangs
//
// By default the scanner is simulated (package usbsim); --usb VID:PID opens
// a real one through the usb package's default backend (usbfs on Linux, no
// cgo); it must speak usbsim's command protocol (the FunctionFS gadget of
// the usbvm guest does). scand follows that scanner's unplugging and
// plugging back in through the kernel's uevents: unplugged, it is Down to
// clients and scand logs it; plugged in again, the driver opens it by
// itself, and scand logs its return and serves it on. The eSCL root is http://ADDR/eSCL; with
// sane-airscan, name it in airscan.conf's [devices] section:
//
//	"cancelio" = http://127.0.0.1:8090/eSCL
//
// or let --sane-config DIR write a SANE configuration that loads only the
// airscan backend with scand as its one device and discovery off, for
// SANE_CONFIG_DIR=DIR (nothing under /etc changes).
//
// --bandwidth and --hang-after take sizes in the syntax of iobench's
// --size and wiascan's: a whole number with k, M or G (powers of 1024;
// KiB, MiB, GiB also accepted), such as 4096, 500k or 1M.
//
// Each job logs two lines on stderr: "escl: job created" with its
// settings, then, when it ends, "escl: job" with its outcome and timings
// (scan, encode, delivery and, for a job canceled while scanning, cancel to
// idle and CancelPendingIO's own time). A client's DELETE or dropped
// connection cancels the running job through CancelPendingIO. SIGTERM or
// SIGINT shuts down: the running job is canceled, open requests end (a
// client that does not finish its request within a second, or has sent
// none yet, has its connection closed), the driver is uninitialized, and
// scand exits with status 0. Bad usage exits with 2, a failure to start
// or serve with 1.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	os.Exit(run(os.Args[1:], os.Stderr, sigs, nil))
}
