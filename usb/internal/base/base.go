// Package base defines, once, what package usb and the backends below it
// (package usbfs) share: the errors a transfer or a device call reports,
// and an endpoint's transfer type. A backend returns these values
// themselves, so no layer maps one set of sentinels onto another; package
// usb re-exports them (usb.ErrStall, usb.Bulk...) with their documentation,
// and callers use those.
package base

import (
	"errors"
	"fmt"

	"github.com/cancelio/cancelio/ioring"
)

// alsoError is a sentinel that also matches the error it stands for in a
// lower layer (errors.Is through Unwrap), without allocating when a
// transfer completes with it.
type alsoError struct {
	msg  string
	also error
}

func (e *alsoError) Error() string { return e.msg }

// Unwrap returns the lower-layer error e stands for.
func (e *alsoError) Unwrap() error { return e.also }

// The errors of package usb and its backends; see package usb for what
// each means to a caller.
var (
	ErrNoUSB    = error(&alsoError{msg: "usb: no USB subsystem (no /dev/bus/usb)", also: ioring.ErrNotSupported})
	ErrNoDevice = error(&alsoError{msg: "usb: no device", also: ioring.ErrNoDevice})
	ErrStall    = errors.New("usb: endpoint stalled")
	ErrBabble   = errors.New("usb: babble: the device sent more data than requested")
	ErrNotFound = errors.New("usb: not found")
	ErrClosed   = errors.New("usb: device closed")
)

// TransferType is an endpoint's transfer type, valued as in the endpoint
// descriptor's bmAttributes bits 1..0.
type TransferType uint8

// The USB transfer types.
const (
	Control     TransferType = 0
	Isochronous TransferType = 1
	Bulk        TransferType = 2
	Interrupt   TransferType = 3
)

// String returns "control", "isochronous", "bulk" or "interrupt".
func (t TransferType) String() string {
	switch t {
	case Control:
		return "control"
	case Isochronous:
		return "isochronous"
	case Bulk:
		return "bulk"
	case Interrupt:
		return "interrupt"
	}
	return fmt.Sprintf("TransferType(%d)", uint8(t))
}
