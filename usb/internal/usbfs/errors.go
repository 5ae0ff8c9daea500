package usbfs

import (
	"fmt"
	"strings"
	"syscall"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/usb/internal/base"
)

// The errors of this package are package usb's own (see package base), so
// that a transfer's result needs no mapping on its way up.
var (
	// ErrNoUSB is returned by List and the Open functions where the system
	// has no USB host support to offer: no /sys/bus/usb (a kernel without
	// CONFIG_USB) or no /dev/bus/usb (no devtmpfs or udev). Nothing is
	// wrong with the caller: use another transport.
	ErrNoUSB = base.ErrNoUSB

	// ErrNoDevice is the result of a transfer or call on a device that is
	// gone (ENODEV, and URB statuses that mean a disconnect). It wraps
	// ioring.ErrNoDevice.
	ErrNoDevice = base.ErrNoDevice

	// ErrClosed is returned by calls on a closed Device or its endpoints.
	ErrClosed = base.ErrClosed

	// ErrStall is the result of a transfer the device refused with a STALL
	// handshake (URB status -EPIPE): the endpoint is halted until
	// Endpoint.ClearHalt.
	ErrStall = base.ErrStall

	// ErrBabble is the result of a transfer in which the device sent more
	// than the buffer could hold (URB status -EOVERFLOW). The bytes that fit
	// are reported.
	ErrBabble = base.ErrBabble
)

// StatusError is the result of a transfer whose URB ended with a status this
// package has no sentinel for (-EPROTO, -EILSEQ, -ETIME...). errors.Is
// matches its Errno.
type StatusError struct {
	Errno syscall.Errno // the status, negated: EPROTO for -EPROTO
}

// Error describes the status.
func (e *StatusError) Error() string {
	return fmt.Sprintf("usbfs: transfer failed: %v (URB status -%d)", e.Errno, uintptr(e.Errno))
}

// Unwrap returns the Errno.
func (e *StatusError) Unwrap() error { return e.Errno }

// OpError describes a call that failed: Op names it ("submit 0x81",
// "claim interface 0"...), Err is the cause: ioring.ErrInvalid (bad input,
// refused before any ioctl), ErrClosed, ErrNoDevice, ErrNoUSB,
// ioring.ErrNotSupported, or the syscall.Errno of the ioctl.
type OpError struct {
	Op  string
	Err error
}

// Error describes the failure.
func (e *OpError) Error() string {
	return "usbfs: " + e.Op + ": " + strings.TrimPrefix(e.Err.Error(), "usbfs: ")
}

// Unwrap returns the cause.
func (e *OpError) Unwrap() error { return e.Err }

// invalid returns an error wrapping ioring.ErrInvalid.
func invalid(op, format string, args ...any) error {
	return &OpError{Op: op, Err: fmt.Errorf("%w: "+format, append([]any{ioring.ErrInvalid}, args...)...)}
}
