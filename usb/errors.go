package usb

import (
	"errors"
	"fmt"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/usb/internal/base"
)

// Errors of this package. Compare with errors.Is: transports may wrap them.
// Every backend (usbfs, libusb, the simulator) reports these values
// themselves; they are defined once, in package usb/internal/base, which
// the usbfs backend below this package shares.
var (
	// ErrNoUSB is returned by List and Open where the system has no USB
	// subsystem (no /dev/bus/usb, as in most containers and on kernels
	// built without CONFIG_USB). Nothing can be opened; use the simulator
	// (package usbsim). errors.Is(err, ioring.ErrNotSupported) holds.
	ErrNoUSB = base.ErrNoUSB

	// ErrNoDevice is the result of a transfer whose device went away
	// (unplugged, reset, powered off), and is returned by Submit once the
	// device is known to be gone. It is final: close the Device and open
	// the device again when it comes back. errors.Is(err,
	// ioring.ErrNoDevice) holds. It is not a cancel.
	ErrNoDevice = base.ErrNoDevice

	// ErrStall is the result of a transfer on a halted endpoint (a STALL
	// handshake: libusb's LIBUSB_ERROR_PIPE, usbfs's EPIPE). Every transfer
	// on the endpoint fails with it until the host clears the halt: let the
	// pending transfers complete (or cancel them), then call
	// Device.ClearHalt.
	ErrStall = base.ErrStall

	// ErrBabble is the result of a transfer in which the device sent more
	// than the buffer could hold (babble: libusb's
	// LIBUSB_TRANSFER_OVERFLOW, usbfs's EOVERFLOW). The bytes that fit are
	// reported where the transport knows them.
	ErrBabble = base.ErrBabble

	// ErrNotFound is returned by Open when no device matches, and by
	// Device.Endpoint and Device.ClearHalt for an endpoint address the
	// device's interface does not have.
	ErrNotFound = base.ErrNotFound

	// ErrClosed is returned by calls on a closed Device.
	ErrClosed = base.ErrClosed

	// ErrCanceled is the result of a transfer canceled before it completed
	// (its token, Request.Cancel, Device.CancelAll, a context, Close). The
	// completion may still report bytes that moved before the cancel took
	// effect. It is ioring.ErrCanceled.
	ErrCanceled = ioring.ErrCanceled

	// ErrTimeout is the result of a transfer whose deadline passed first
	// (Xfer.Deadline or a context deadline). It is a cancel too. It is
	// ioring.ErrTimeout.
	ErrTimeout = ioring.ErrTimeout
)

// ErrRunExited is the result of a Pump's transfer whose Runner's Run ended
// its goroutine (runtime.Goexit, as testing's FailNow does) instead of
// returning. The Pump goes on with the endpoint's next transfer.
var ErrRunExited = errors.New("usb: the transport's Run ended its goroutine (runtime.Goexit)")

// RunPanicError is the result of a Pump's transfer whose Runner's Run
// panicked. The Pump recovers the panic, completes the transfer with this
// error, and goes on with the endpoint's next transfer: a backend's bug
// fails its transfer, not the process.
type RunPanicError struct {
	Value any    // what Run panicked with
	Stack []byte // the pump goroutine's stack at the panic
}

func (e *RunPanicError) Error() string {
	return fmt.Sprintf("usb: the transport's Run panicked: %v", e.Value)
}
