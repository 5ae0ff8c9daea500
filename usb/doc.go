// Package usb provides USB devices and endpoints whose transfers are
// overlapped, individually cancelable requests completing through an ioring
// completion queue, like any other I/O in cancelio.
package usb
