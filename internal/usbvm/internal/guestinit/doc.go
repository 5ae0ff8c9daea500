// Package guestinit is the PID 1 of a usbvm guest: it mounts the pseudo file
// systems, loads the USB modules, runs the program named by the runner's
// config with its output on the raw serial port ttyS1, and reports the
// program's exit status to QEMU through the isa-debug-exit device.
//
// The runner's own binary is the init (it calls Main when it finds itself
// running as /init with PID 1), so the binary must be statically linked or
// shipped with its shared libraries; the runner does the latter when needed.
package guestinit
