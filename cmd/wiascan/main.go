// Command wiascan acquires an image from a scanner through the cancelio
// minidriver (package minidrv) and writes it to a file whose extension
// picks the format: .pgm (gray), .ppm (color), .pnm (netpbm, gray or color
// as --mode says) or .png (either). Without --mode, .ppm scans in color and
// the others in gray; a --mode the extension cannot hold (--mode color
// --out b.pgm) is refused as bad usage.
//
//	wiascan --out scan.pgm
//	wiascan --out page.png --dpi 300 --mode color
//	wiascan --out scan.pgm --hang-after 100k --stall-timeout 5s
//
// By default the scanner is simulated (package usbsim): a deterministic
// image, with fault injection (--hang-after, --bandwidth). --usb VID:PID
// opens a real scanner instead, through the usb package's default backend
// (usbfs on Linux, no cgo; the environment variable CANCELIO_USB=libusb
// picks libusb), as cmd/scand does; it must speak usbsim's command protocol,
// as usbsim's scanner served as a FunctionFS gadget does (docs/usbvm.md).
//
// --hang-after and --bandwidth take sizes in the syntax of iobench's
// --size: a whole number with k, M or G (powers of 1024; KiB, MiB, GiB
// also accepted), such as 4096, 64k or 1M.
//
// --dpi, --width and --height are checked against the flatbed's item
// properties before the scanner is opened; a value the scanner would
// refuse is bad usage, reported with the flag's name and the values it
// allows.
//
// When stderr is a terminal (or --progress on) a progress line is drawn
// there. While the scanner sends nothing for a couple of seconds the line
// says so, and how long wiascan will wait: after --stall-timeout (default
// 30s; 0 waits for ever) the scan fails. Without a progress line the same
// is said in one notice line. Ctrl-C (SIGINT) calls CancelPendingIO: the
// transfer is canceled at once, wiascan reports how long the call took
// and exits with status 130; a second Ctrl-C kills it at once. SIGTERM
// and SIGHUP cancel the same way (status 130 too). A hung
// scanner does not hang wiascan: the abort is bounded by --abort-timeout.
//
// The image is written to a temporary file in the directory of --out and
// renamed over --out once the scan has succeeded. A scan that fails or is
// canceled removes the temporary file: it leaves no partial image, and an
// existing --out as it was. (A second signal, which kills wiascan at
// once, can leave the temporary file, named .FILE.XXXXXXXX.tmp.)
//
// A failure is reported in one line that says what happened in the
// scanner's terms (it stopped answering, went away, refused a value); -v
// adds the driver's whole error on an indented "detail:" line. The exit
// status is 0 on success, 1 when the scan fails, 2 for bad usage, 130 when
// canceled.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// The first Ctrl-C (or SIGTERM, from kill, timeout or a service
	// manager; or SIGHUP, the terminal gone) goes to run, which cancels
	// the scan; the next one gets the default action (exit at once).
	raw := make(chan os.Signal, 1)
	signal.Notify(raw, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	sigs := make(chan os.Signal, 1)
	go func() {
		s := <-raw
		signal.Reset(os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
		sigs <- s
	}()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, sigs))
}
