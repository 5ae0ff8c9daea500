// Command wiascan acquires an image from a scanner through the cancelio
// minidriver (package minidrv) and writes it to a file: PNM (P5 for gray,
// P6 for color) or PNG, chosen by the file's extension.
//
//	wiascan --out scan.pnm
//	wiascan --out page.png --dpi 300 --mode color
//	wiascan --out scan.pgm --hang-after 100000   # then press Ctrl-C
//
// By default the scanner is simulated (package usbsim): a deterministic
// image, with fault injection (--hang-after, --bandwidth). --usb VID:PID
// opens a real scanner through libusb instead; it must speak usbsim's
// command protocol (the FunctionFS gadget of USBVM.md does).
//
// When stderr is a terminal a progress bar is drawn there. Ctrl-C (SIGINT)
// calls CancelPendingIO: the transfer is canceled at once, the job aborted
// on the device, and wiascan reports how long the cancel took, removes the
// partial output and exits with status 130. A scanner that hangs does not
// hang wiascan: the abort is bounded by --abort-timeout. The exit status is
// 0 on success, 1 when the scan fails, 2 for bad usage, 130 when canceled.
package main

import (
	"os"
	"os/signal"
)

func main() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt)
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, sigs))
}
