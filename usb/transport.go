package usb

import (
	"github.com/cancelio/cancelio/ioring"
)

// Transport is the backend of a Device: it moves the transfers of the
// device's claimed interfaces (and, where it implements Configurer,
// changes the configuration, the claims and the alternate settings). Every backend implements it: usbfs and libusb in this
// package (Open), and the simulated scanner in package usbsim. A backend
// whose transfers are ring requests of their own (usbfs: URBs reaped into
// the ring) implements it directly; one whose I/O runs one transfer at a
// time per endpoint (libusb's synchronous calls, the simulator's socket
// messages) gets it from NewPump, which keeps the queues and the contract
// and calls a Runner for the I/O itself.
//
// A Device calls its Transport only for the endpoints of its DeviceDesc,
// from any goroutine, and never after Close; it checks for a closed Device
// and for an empty IN buffer itself. Every method may run concurrently with
// every other but Close. Submit, ClearHalt, Reset and a Configurer's
// methods run while the Device holds its lock for the call that runs them:
// of the Device's methods they may call CancelAll only (a Close there
// would wait for that lock). A panic in a Transport's method goes on to
// the caller of the Device method that called it; the Device stays usable
// (and closed, after Close).
//
// Results carry this package's errors (ErrCanceled, ErrTimeout, ErrStall,
// ErrBabble, ErrNoDevice...) as themselves, wrapped or not, so that
// errors.Is gives the same answers on every backend: a backend maps what
// its I/O reports to them once, where it learns it.
type Transport interface {
	// Submit starts a transfer of buf on ep as one request of the ring the
	// Transport was made for, and returns at once (see Endpoint.Submit for
	// what a caller sees). x's Token, Deadline and User are the request's;
	// wait selects ioring.Ring.Start (the completion goes to Request.Wait
	// only) over ioring.Ring.Submit (to the completion queue). The request
	// completes exactly once, also when canceled by any means; buf belongs
	// to the transfer until then. A transfer submitted with an
	// already-canceled token completes with ErrCanceled without reaching
	// the device. An error means nothing was submitted: bad input (wrapping
	// ioring.ErrInvalid), a buffer the backend cannot carry
	// (ioring.ErrInvalid or ioring.ErrNotSupported), ErrNoDevice once the
	// device is known to be gone, or the ring's.
	//
	// A control transfer is a Submit on endpoint 0 (Address 0, Type
	// Control) whose buf starts with the setup packet (Setup.Put, checked
	// by the Device) and holds the data stage after it; its completion
	// counts the data stage's bytes. A backend without control transfers
	// refuses it with an error wrapping ioring.ErrNotSupported.
	//
	// A completion's count lies in 0..the data's length (buf's, less the
	// setup packet of a control transfer). The Device's synchronous calls
	// (Endpoint.Transfer, Read, Write; Device.Control) clamp one outside
	// it and fail the transfer with an error that says so; the
	// completions of Endpoint.Submit and Start reach the caller as the
	// Transport's requests deliver them.
	Submit(ep EndpointDesc, buf []byte, x Xfer, wait bool) (ioring.Request, error)
	// CancelAll cancels every transfer accepted so far, queued or in
	// progress. It requests and returns: each still completes exactly once.
	// Its error is the *ioring.HookPanicError of a cancel hook that
	// panicked (ioring.Ring.Cancel's), after every other transfer was
	// canceled; otherwise nil.
	CancelAll() error
	// ClearHalt clears a halt of ep on the device and in the host and
	// discards IN data received and not yet transferred. It refuses with an
	// error wrapping ioring.ErrInvalid while transfers are pending on ep,
	// and returns ErrNoDevice once the device is gone.
	ClearHalt(ep EndpointDesc) error
	// Reset resets the device (a USB port reset) and restores what the
	// Transport had set up (configuration, claimed interfaces, alternate
	// settings). The Device calls it with no Submit in progress; it refuses
	// with an error wrapping ioring.ErrInvalid while transfers are
	// pending, and with one wrapping ioring.ErrNotSupported where the
	// backend cannot reset.
	Reset() error
	// Close cancels every transfer, waits until each has completed, and
	// releases the device and the Transport's goroutines.
	Close() error
}

// NewDevice returns a Device whose transfers tr carries, described by desc
// (its endpoints are those of desc, sorted by address, as every Device's
// are). It is how a backend
// outside this package, such as package usbsim, makes its Device. The
// Device owns tr: Device.Close closes it.
//
// desc.Config, desc.Interface and desc.AltSetting say what the backend
// set up: the Device counts that interface as claimed (with a kernel
// driver detached, as Open does) when desc.Configs describes it. It
// panics if tr is nil: a backend's bug, better found here than at the
// first transfer.
func NewDevice(desc DeviceDesc, tr Transport) *Device {
	if tr == nil {
		panic("usb: NewDevice: nil Transport")
	}
	d := &Device{desc: desc, tr: tr, byDesc: map[EndpointDesc]*Endpoint{}, config: desc.Config, claimed: map[int]*claim{}}
	d.cancels.init()
	d.desc.Endpoints = nil
	d.desc.Configs = cloneConfigs(desc.Configs)
	if c, ok := d.desc.config(desc.Config); ok {
		if _, ok := c.setting(desc.Interface, desc.AltSetting); ok {
			d.claimed[desc.Interface] = &claim{alt: desc.AltSetting, detached: true}
		}
	}
	d.setEndpointsLocked(desc.Endpoints)
	return d
}
