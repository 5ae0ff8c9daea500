package minidrv

import (
	"errors"
	"fmt"
)

// COM HRESULT values (winerror.h) that the package maps errors to. An
// HRESULT is a 32-bit value whose top bit marks a failure, so failure codes
// are negative as int32; 0x80004005 - 1<<32 is how Go spells the int32 whose
// bits are 0x80004005.
const (
	HResultOK         int32 = 0                  // S_OK: success
	HResultFalse      int32 = 1                  // S_FALSE: success with a twist; WIA uses it for "canceled"
	HResultFail       int32 = 0x80004005 - 1<<32 // E_FAIL: unspecified failure
	HResultInvalidArg int32 = 0x80070057 - 1<<32 // E_INVALIDARG: an argument is invalid
	HResultUnexpected int32 = 0x8000FFFF - 1<<32 // E_UNEXPECTED: a call at the wrong time
	hrWIAGeneral      int32 = 0x80210001 - 1<<32 // WIA_ERROR_GENERAL_ERROR
	hrWIAPaperJam     int32 = 0x80210002 - 1<<32 // WIA_ERROR_PAPER_JAM
	hrWIAPaperEmpty   int32 = 0x80210003 - 1<<32 // WIA_ERROR_PAPER_EMPTY
	hrWIAOffline      int32 = 0x80210005 - 1<<32 // WIA_ERROR_OFFLINE
	hrWIABusy         int32 = 0x80210006 - 1<<32 // WIA_ERROR_BUSY
	hrWIAWarmingUp    int32 = 0x80210007 - 1<<32 // WIA_ERROR_WARMING_UP
	hrWIADeviceComm   int32 = 0x8021000A - 1<<32 // WIA_ERROR_DEVICE_COMMUNICATION
	hrWIADeviceLocked int32 = 0x8021000D - 1<<32 // WIA_ERROR_DEVICE_LOCKED
	hrWIACoverOpen    int32 = 0x80210016 - 1<<32 // WIA_ERROR_COVER_OPEN
)

// Error is a minidriver error that carries the HRESULT a WIA minidriver
// would return for it.
//
// The package's sentinels (ErrBusy, ErrCanceled, ...) are *Error values; test
// for them with errors.Is. Wrap attaches a cause (an ioring or usb error, say)
// and keeps the sentinel's identity: errors.Is(ErrCanceled.Wrap(cause),
// ErrCanceled) and errors.Is(ErrCanceled.Wrap(cause), cause) both hold.
// An Error is immutable once made and safe to share between goroutines.
type Error struct {
	// HResult is the COM/WIA result code, e.g. WIA_ERROR_BUSY (0x80210006)
	// as an int32.
	HResult int32
	// Name is the symbolic name of HResult, e.g. "WIA_ERROR_BUSY".
	Name string
	// Msg says what went wrong, in lower case, without the package prefix.
	Msg string
	// Err is the cause, or nil.
	Err error

	base *Error // the sentinel this error was wrapped from; nil for sentinels
}

// Error returns "minidrv: <Msg> (<Name> 0x<HResult>)", followed by ": <cause>"
// when there is a cause.
func (e *Error) Error() string {
	s := "minidrv: " + e.Msg
	if e.Name != "" {
		s += fmt.Sprintf(" (%s 0x%08X)", e.Name, uint32(e.HResult))
	} else {
		s += fmt.Sprintf(" (0x%08X)", uint32(e.HResult))
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the cause, or nil.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether e was made by wrapping target, or from a sentinel that
// is a kind of target (ErrNotRecovered is an ErrDeviceCommunication); see
// Wrap. Identity with target itself is checked by errors.Is before it calls
// Is.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	for b := e.base; b != nil; b = b.base {
		if b == t {
			return true
		}
	}
	return false
}

// Wrap returns an error with e's HRESULT and identity (errors.Is(w, e) holds
// for the result w, and for any sentinel e was itself wrapped from) whose
// cause is cause. Wrap(nil) returns e. It allocates; sentinels themselves do
// not.
func (e *Error) Wrap(cause error) *Error {
	if cause == nil {
		return e
	}
	base := e
	if e.Err != nil && e.base != nil { // e was wrapped: keep its sentinel
		base = e.base
	}
	return &Error{HResult: e.HResult, Name: e.Name, Msg: e.Msg, Err: cause, base: base}
}

// Errors a minidriver returns. Device conditions carry their WIA_ERROR_*
// HRESULT (wia.h, "Error Codes (WIA)"); misuse of the call order carries
// E_UNEXPECTED; bad arguments E_INVALIDARG. Calls the state machine refuses
// change nothing, so a caller may retry once the condition is gone.
var (
	// ErrGeneral (WIA_ERROR_GENERAL_ERROR) is an unknown device failure.
	ErrGeneral = &Error{HResult: hrWIAGeneral, Name: "WIA_ERROR_GENERAL_ERROR", Msg: "general device error"}
	// ErrPaperJam (WIA_ERROR_PAPER_JAM): paper is jammed in the feeder.
	// The user must clear it; retrying without that fails again.
	ErrPaperJam = &Error{HResult: hrWIAPaperJam, Name: "WIA_ERROR_PAPER_JAM", Msg: "paper jam"}
	// ErrPaperEmpty (WIA_ERROR_PAPER_EMPTY): the feeder has no documents.
	ErrPaperEmpty = &Error{HResult: hrWIAPaperEmpty, Name: "WIA_ERROR_PAPER_EMPTY", Msg: "no paper in the feeder"}
	// ErrOffline (WIA_ERROR_OFFLINE): the device is not there (unplugged or
	// suspended). Calls fail with it until DeviceConnected or PowerResume.
	ErrOffline = &Error{HResult: hrWIAOffline, Name: "WIA_ERROR_OFFLINE", Msg: "device offline"}
	// ErrBusy (WIA_ERROR_BUSY): a transfer is running or unwinding. Retry
	// after it ends (Machine.Wait until !State.Busy()).
	ErrBusy = &Error{HResult: hrWIABusy, Name: "WIA_ERROR_BUSY", Msg: "device busy"}
	// ErrWarmingUp (WIA_ERROR_WARMING_UP): the lamp is warming up; retry
	// later.
	ErrWarmingUp = &Error{HResult: hrWIAWarmingUp, Name: "WIA_ERROR_WARMING_UP", Msg: "device warming up"}
	// ErrDeviceCommunication (WIA_ERROR_DEVICE_COMMUNICATION): an I/O with
	// the device failed (stall, hang, protocol error). Wrap the transport
	// error as its cause.
	ErrDeviceCommunication = &Error{HResult: hrWIADeviceComm, Name: "WIA_ERROR_DEVICE_COMMUNICATION", Msg: "device communication failed"}
	// ErrDeviceLocked (WIA_ERROR_DEVICE_LOCKED): Lock was called while the
	// device is already locked. Wait for the holder to Unlock.
	ErrDeviceLocked = &Error{HResult: hrWIADeviceLocked, Name: "WIA_ERROR_DEVICE_LOCKED", Msg: "device already locked"}
	// ErrNotRecovered (WIA_ERROR_DEVICE_COMMUNICATION) is a device that did
	// not recover after an acquisition that ended early (canceled, or
	// failed): it answered neither the abort nor, once reset, the
	// resynchronization, each within AbortTimeout; or the context of the
	// Lock or AcquireItemData that waited for that recovery ended first.
	// Lock and AcquireItemData resynchronize such a device before they go
	// on, so a caller may retry once the device answers again (or after
	// unplugging it: EventDeviceDisconnected, EventDeviceConnected). It is
	// a kind of ErrDeviceCommunication: errors.Is holds for both.
	ErrNotRecovered = &Error{HResult: hrWIADeviceComm, Name: "WIA_ERROR_DEVICE_COMMUNICATION", Msg: "device did not recover", base: ErrDeviceCommunication}
	// ErrCoverOpen (WIA_ERROR_COVER_OPEN): a device cover is open.
	ErrCoverOpen = &Error{HResult: hrWIACoverOpen, Name: "WIA_ERROR_COVER_OPEN", Msg: "device cover open"}

	// ErrInvalidProperty (E_INVALIDARG): a property write or read was
	// refused. The error returned is a *PropertyError naming the property
	// and its allowed values; it wraps ErrInvalidProperty.
	ErrInvalidProperty = &Error{HResult: HResultInvalidArg, Name: "E_INVALIDARG", Msg: "invalid property value"}
	// ErrInvalidEvent (E_INVALIDARG): an Event or Input value outside the
	// defined set. It changes nothing.
	ErrInvalidEvent = &Error{HResult: HResultInvalidArg, Name: "E_INVALIDARG", Msg: "invalid event"}

	// ErrNotInitialized (E_UNEXPECTED): a call before Initialize (or after
	// Uninitialize).
	ErrNotInitialized = &Error{HResult: HResultUnexpected, Name: "E_UNEXPECTED", Msg: "driver not initialized"}
	// ErrAlreadyInitialized (E_UNEXPECTED): Initialize on an initialized
	// driver.
	ErrAlreadyInitialized = &Error{HResult: HResultUnexpected, Name: "E_UNEXPECTED", Msg: "driver already initialized"}
	// ErrNotLocked (E_UNEXPECTED): Unlock or an acquisition without Lock;
	// WIA's call order is Lock, WriteItemProperties, AcquireItemData,
	// Unlock. A suspend or a removal ends the lock (see State).
	ErrNotLocked = &Error{HResult: HResultUnexpected, Name: "E_UNEXPECTED", Msg: "device not locked"}
	// ErrInvalidState (E_UNEXPECTED): a State value outside the defined
	// set was passed to Transition. Machine never returns it.
	ErrInvalidState = &Error{HResult: HResultUnexpected, Name: "E_UNEXPECTED", Msg: "invalid state"}

	// ErrCanceled (S_FALSE) is the outcome of an acquisition stopped by
	// CancelPendingIO, by EventCancelIO, by the progress callback or by the
	// end of its context. As in WIA it is an outcome, not a failure:
	// HResult maps it to S_FALSE. Wrap the transport's own cancel error
	// (ioring.ErrCanceled) as its cause so that both errors.Is tests hold;
	// a context's end wraps ioring.ErrTimeout for a deadline instead (a
	// kind of ioring.ErrCanceled), and the context's own error.
	ErrCanceled = &Error{HResult: HResultFalse, Name: "S_FALSE", Msg: "operation canceled"}
)

// HResult returns the HRESULT for err: S_OK (0) for nil, the HRESULT of the
// first *Error in err's chain (S_FALSE for ErrCanceled), and E_FAIL
// (0x80004005) for any other error.
func HResult(err error) int32 {
	if err == nil {
		return HResultOK
	}
	if e, ok := errors.AsType[*Error](err); ok {
		return e.HResult
	}
	return HResultFail
}
