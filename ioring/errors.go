package ioring

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// cancelError is the error of a canceled request. It wraps ECANCELED so that
// callers matching on the errno keep working.
type cancelError struct {
	msg     string
	timeout bool
}

func (e *cancelError) Error() string { return e.msg }

// Unwrap returns ECANCELED for ErrCanceled, and ErrCanceled for ErrTimeout:
// a timeout is a cancel.
func (e *cancelError) Unwrap() error {
	if e.timeout {
		return ErrCanceled
	}
	return unix.ECANCELED
}

// Is makes ErrTimeout match os.ErrDeadlineExceeded, as Go's own deadlines do.
func (e *cancelError) Is(target error) bool {
	return e.timeout && target == os.ErrDeadlineExceeded
}

// Timeout reports whether the cancel came from a deadline (net.Error style).
func (e *cancelError) Timeout() bool { return e.timeout }

var (
	// ErrCanceled is the result of a request that was canceled before it
	// completed (by its token, Request.Cancel, Ring.CancelAll, a context or
	// Close). It wraps ECANCELED. A cancel is an outcome, not a failure: the
	// buffer is the caller's again once this completion is delivered.
	ErrCanceled error = &cancelError{msg: "ioring: operation canceled"}

	// ErrTimeout is the result of a request whose deadline passed first. It
	// is also a cancel: errors.Is(ErrTimeout, ErrCanceled) holds, and so does
	// errors.Is(ErrTimeout, os.ErrDeadlineExceeded).
	ErrTimeout error = &cancelError{msg: "ioring: deadline exceeded", timeout: true}

	// ErrNotFound is returned by a cancel that found nothing to cancel: the
	// request already completed, or the handle is stale or zero. Nothing was
	// changed; the request's own completion (if any) is the truth.
	ErrNotFound = errors.New("ioring: request not found")

	// ErrClosed is returned by calls on a closed Ring.
	ErrClosed = errors.New("ioring: ring closed")

	// ErrFull is returned by Submit when every request slot is in use
	// (Config.Entries requests accepted and not yet delivered). Deliver
	// completions, then submit again.
	ErrFull = errors.New("ioring: no free request slot")

	// ErrInvalid is wrapped by every error about bad input (nil buffer,
	// negative fd or offset, a token of another ring...). Nothing reached the
	// ring.
	ErrInvalid = errors.New("ioring: invalid argument")

	// ErrNotSupported is returned where a backend or operation is not
	// available on this system.
	ErrNotSupported = errors.New("ioring: not supported")

	// ErrNoDevice is the result of a request whose device went away. Layers
	// above (usb) complete their requests with it; it is not a cancel.
	ErrNoDevice = errors.New("ioring: no such device")
)

// OpError describes a request that was refused before it reached the ring.
type OpError struct {
	Op  string // the operation, such as "read"
	Err error  // wraps ErrInvalid, ErrClosed, ErrFull...
}

func (e *OpError) Error() string { return e.Op + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *OpError) Unwrap() error { return e.Err }
