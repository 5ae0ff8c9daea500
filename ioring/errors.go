package ioring

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// cancelError is the error of a canceled request. It wraps ECANCELED so that
// callers matching on the errno keep working. The variants made by a
// context also wrap the context's own error.
type cancelError struct {
	msg     string
	timeout bool
	wraps   []error
}

func (e *cancelError) Error() string { return e.msg }

// Unwrap returns what the error wraps: ECANCELED for ErrCanceled, and
// ErrCanceled for ErrTimeout (a timeout is a cancel); the context variants
// add context.Canceled or context.DeadlineExceeded.
func (e *cancelError) Unwrap() []error { return e.wraps }

// Is makes ErrTimeout match os.ErrDeadlineExceeded, as Go's own deadlines do.
func (e *cancelError) Is(target error) bool {
	return e.timeout && target == os.ErrDeadlineExceeded
}

// Timeout reports whether the cancel came from a deadline (net.Error style).
func (e *cancelError) Timeout() bool { return e.timeout }

var (
	// errCtxCanceled and errCtxTimeout are the results of requests ended by
	// a context (Do, ReadAt, WriteAt, Request.Wait, Token.Bind): they match
	// ErrCanceled (and ErrTimeout for a deadline) and the context's own
	// error, with errors.Is.
	errCtxCanceled error = &cancelError{msg: "ioring: operation canceled: context canceled", wraps: []error{ErrCanceled, context.Canceled}}
	errCtxTimeout  error = &cancelError{msg: "ioring: deadline exceeded: context deadline exceeded", timeout: true, wraps: []error{ErrTimeout, context.DeadlineExceeded}}
)

var (
	// ErrCanceled is the result of a request that was canceled before it
	// completed (by its token, Request.Cancel, Ring.CancelAll, a context or
	// Close). It wraps ECANCELED. A cancel is an outcome, not a failure: the
	// buffer is the caller's again once this completion is delivered.
	//
	// A request ended by a context carries an error that also matches the
	// context's: errors.Is(err, context.Canceled) or, for a context deadline,
	// errors.Is(err, context.DeadlineExceeded) (and ErrTimeout).
	ErrCanceled error = &cancelError{msg: "ioring: operation canceled", wraps: []error{eCanceled}}

	// ErrTimeout is the result of a request whose deadline passed first. It
	// is also a cancel: errors.Is(ErrTimeout, ErrCanceled) holds, and so does
	// errors.Is(ErrTimeout, os.ErrDeadlineExceeded).
	ErrTimeout error = &cancelError{msg: "ioring: deadline exceeded", timeout: true, wraps: []error{ErrCanceled}}

	// ErrNotFound is returned by a cancel that found nothing to cancel: the
	// request already completed, or the handle is stale or zero. Nothing was
	// changed; the request's own completion (if any) is the truth.
	ErrNotFound = errors.New("ioring: request not found")

	// ErrClosed is returned by calls on a closed Ring.
	ErrClosed = errors.New("ioring: ring closed")

	// ErrFull is returned by Submit when every request slot is in use
	// (Config.Entries requests accepted and not yet delivered). A slot is
	// freed when its completion is delivered: reap completions (Reap), wait
	// for started requests (Request.Wait), or make the ring larger
	// (Config.Entries), then submit again.
	ErrFull = errors.New("ioring: every request slot is in use (deliver completions with Reap or Request.Wait to free slots, or raise Config.Entries)")

	// ErrOverrun ends a multishot request whose consumer fell behind: more
	// than MaxUndelivered of its completions were waiting for Reap, or, on
	// io_uring, the kernel's completion ring was full and the kernel ended
	// it (its last result is delivered before, with More set). The ring
	// canceled it to bound the memory they take; its final completion
	// carries ErrOverrun (which wraps ECANCELED, and is not ErrCanceled:
	// nobody asked for it). Reap faster, or submit the request again.
	ErrOverrun error = &cancelError{msg: "ioring: multishot request ended: too many completions waiting for Reap", wraps: []error{eCanceled}}

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

func (e *OpError) Error() string {
	if e.Err == nil { // not one of the ring's
		return e.Op + ": <nil>"
	}
	return e.Op + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *OpError) Unwrap() error { return e.Err }

// IOError is the error of a request the kernel completed with an errno: it
// says which operation on which fd, or path, failed. errors.Is matches the
// errno (errors.Is(err, syscall.EBADF), and errors.Is(err, fs.ErrNotExist)
// for ENOENT).
type IOError struct {
	Op   string        // the operation, such as "read"
	FD   int           // the fd it ran on (OpenAt and Statx: the directory fd)
	Path string        // OpenAt's and Statx's path, "" for the others
	Err  syscall.Errno // what the kernel said
}

func (e *IOError) Error() string {
	if e.Path == "" && !e.pathOp() {
		return "ioring: " + e.Op + " fd " + strconv.Itoa(e.FD) + ": " + e.Err.Error()
	}
	msg := "ioring: " + e.Op + " " + strconv.Quote(e.Path)
	if e.FD >= 0 {
		msg += " in directory fd " + strconv.Itoa(e.FD)
	}
	return msg + ": " + e.Err.Error()
}

// pathOp reports whether e is of an operation on a path.
func (e *IOError) pathOp() bool {
	return e.Op == OpOpenAt.String() || e.Op == OpStatx.String()
}

// Unwrap returns the errno.
func (e *IOError) Unwrap() error { return e.Err }

// HookPanicError reports that a foreign request's cancel hook panicked. The
// ring recovers the panic, finishes the cancel it was doing (other requests'
// hooks still run, Close still drains), and reports it here: as the error
// of the call that ran the hook (Request.Cancel, Token.Cancel,
// Ring.CancelAll, Ring.Close), or, for a hook run by a deadline's timer, in
// the request's completion, wrapping the transport's error.
type HookPanicError struct {
	Value any    // what the hook panicked with
	Stack []byte // the hook's goroutine stack at the panic
	Err   error  // the completion's own error, for a deadline's hook (else nil)
}

func (e *HookPanicError) Error() string {
	msg := fmt.Sprintf("ioring: cancel hook panicked: %v", e.Value)
	if e.Err != nil {
		msg += " (completion: " + e.Err.Error() + ")"
	}
	return msg
}

// Unwrap returns the completion's own error, if any.
func (e *HookPanicError) Unwrap() error { return e.Err }
