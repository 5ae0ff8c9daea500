package usb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cancelio/cancelio/ioring"
)

// Device is an opened USB device (the interfaces it claimed) whose endpoints run
// transfers as requests of an ioring.Ring: each transfer is a foreign
// request, so tokens, deadlines, Request.Cancel, Ring.CancelAll and the
// exactly-once completion work as for file I/O. Its Transport (usbfs,
// libusb, the simulator) moves the data.
//
// The Device does not own the Ring: close the Device before the Ring (a
// Ring closed first cancels the Device's transfers, which then complete
// with ErrCanceled). All methods are safe for concurrent use.
//
// Every method but Desc and Configuration refuses a Device that Open or
// NewDevice did not make (a nil *Device, a zero Device) with an error
// wrapping ioring.ErrInvalid; those two return zero values.
type Device struct {
	desc DeviceDesc // as NewDevice got it; Endpoints, Config and the claims change below
	tr   Transport

	// mu orders Close after the Submits and ClearHalts in progress: they
	// hold it for reading, so the Transport is never used after its Close.
	// SetConfiguration, ClaimInterface, ReleaseInterface, SetAltSetting and
	// Reset hold it for writing.
	mu     sync.RWMutex
	closed bool // guarded by mu
	// cancels orders Close after the CancelAlls in progress, as mu does
	// the Submits, without mu: a settings call or Reset holds mu for as
	// long as the device takes to answer, and a cancel requests and
	// returns. Not a lock (see gate): a CancelAll from a transfer's cancel
	// hook, inside another CancelAll, cannot wait for a Close waiting for
	// the outer one; a Close from such a hook does not wait for the
	// CancelAlls at all (see Close).
	cancels gate
	eps     []*Endpoint                // the endpoints transfers may use now, by address; guarded by mu
	byDesc  map[EndpointDesc]*Endpoint // every Endpoint handed out, by descriptor, so the same one comes back; guarded by mu
	config  int                        // the active configuration; guarded by mu
	claimed map[int]*claim             // claimed interfaces, by number; guarded by mu
}

// made reports whether Open or NewDevice made d: every method refuses a
// nil *Device and a zero Device (errDeviceNotMade) rather than panic.
func (d *Device) made() bool { return d != nil && d.tr != nil }

// errDeviceNotMade refuses op on a Device that Open or NewDevice did not
// make (d nil, or a zero Device).
func errDeviceNotMade(op string, d *Device) error {
	return errNotMade(op, "Device", d == nil, "make devices with Open or NewDevice")
}

// errNotMade refuses op on a value of type typ that its constructor did
// not make (isNil: a nil pointer; else a zero value), with an error
// wrapping ioring.ErrInvalid whose text says where such values come from
// (how). Out of line, so that the checks cost the callers' fast paths one
// comparison.
//
//go:noinline
func errNotMade(op, typ string, isNil bool, how string) error {
	what := "zero " + typ
	if isNil {
		what = "nil *" + typ
	}
	return errorf("usb: %s: %w: %s (%s)", op, ioring.ErrInvalid, what, how)
}

// claim is one claimed interface of a Device.
type claim struct {
	alt      int  // its current alternate setting
	detached bool // ClaimInterface was asked to detach a kernel driver: Release reattaches it
}

// Desc returns the device's descriptor as it is now: the endpoints of the
// claimed interfaces at their current alternate settings, the active
// configuration and the lowest claimed interface with its alternate
// setting (-1 and 0 when none is claimed). For a backend that does not
// describe its configurations (empty Configs), Config, Interface and
// AltSetting are those NewDevice was given. A Device that Open or
// NewDevice did not make (nil or zero) has the zero DeviceDesc.
func (d *Device) Desc() DeviceDesc {
	if !d.made() {
		return DeviceDesc{}
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	desc := d.desc
	desc.Configs = cloneConfigs(d.desc.Configs)
	desc.Endpoints = make([]EndpointDesc, 0, len(d.eps))
	for _, e := range d.eps {
		desc.Endpoints = append(desc.Endpoints, e.desc)
	}
	if len(d.desc.Configs) == 0 {
		return desc // a backend that does not describe its settings: as it said
	}
	desc.Config, desc.Interface, desc.AltSetting = d.config, -1, 0
	for n, c := range d.claimed {
		if desc.Interface < 0 || n < desc.Interface {
			desc.Interface, desc.AltSetting = n, c.alt
		}
	}
	return desc
}

// endpointList names the device's endpoints, for an error about one that
// is not there.
func (d *Device) endpointList() string {
	if len(d.eps) == 0 {
		return "no endpoints"
	}
	var b strings.Builder
	for i, e := range d.eps {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%#02x %v %v", e.desc.Address, e.desc.Type, dirName(e.desc.Address))
	}
	return b.String()
}

// dirName says which way an endpoint address points.
func dirName(addr uint8) string {
	if addr&0x80 != 0 {
		return "IN"
	}
	return "OUT"
}

// Endpoint returns the endpoint at address addr (bit 7 set for IN) among
// those of the claimed interfaces at their current alternate settings, or
// an error wrapping ErrNotFound. The same *Endpoint is returned each time
// while the endpoint's descriptor stays the same; it stays usable
// (failing with ErrClosed) after Close, and fails with ErrNotFound while
// its interface is released or at another alternate setting.
func (d *Device) Endpoint(addr uint8) (*Endpoint, error) {
	if !d.made() {
		return nil, errDeviceNotMade("endpoint", d)
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.endpointLocked(addr)
}

// endpointLocked is Endpoint with d.mu held.
func (d *Device) endpointLocked(addr uint8) (*Endpoint, error) {
	for _, e := range d.eps {
		if e.desc.Address == addr {
			return e, nil
		}
	}
	return nil, errorf("usb: %v: endpoint %#02x: %w (it has %s)", d.desc, addr, ErrNotFound, d.endpointList())
}

// ClearHalt clears the halt (stall) of the endpoint at addr, on the device
// and in the host, and discards IN data received and not yet transferred.
// No transfer may be pending on that endpoint (complete or cancel them
// first: on a stalled endpoint they all end with ErrStall); transfers
// submitted meanwhile wait until it returns. Clearing an endpoint that is
// not halted does no harm. Errors: ErrNotFound, ErrClosed, ErrNoDevice, an
// error wrapping ioring.ErrInvalid while transfers are pending, or the
// transport's.
func (d *Device) ClearHalt(addr uint8) error {
	if !d.made() {
		return errDeviceNotMade("clear halt", d)
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	e, err := d.endpointLocked(addr)
	if err != nil {
		return err
	}
	return d.tr.ClearHalt(e.desc)
}

// Reset resets the device (a USB port reset): it returns to its default
// state and the host sets it up again as it was (configuration, the
// claimed interfaces and their alternate settings), at the same address. No
// transfer may be pending on the device: complete or cancel them first.
// Transfers submitted meanwhile wait until Reset returns (Transfer and
// Control stop waiting when their context ends: see Transfer). Errors: ErrClosed, ErrNoDevice (also
// when the device does not come back), an error wrapping ioring.ErrInvalid
// while transfers are pending, one wrapping ioring.ErrNotSupported where
// the backend cannot reset (the simulator), or the transport's.
func (d *Device) Reset() error {
	if !d.made() {
		return errDeviceNotMade("reset", d)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	return d.tr.Reset()
}

// CancelAll cancels every transfer in flight on the device's endpoints,
// queued or in progress, like WIA's CancelPendingIO. It requests and
// returns; each transfer still completes exactly once (ErrCanceled, or its
// real result when it won the race). Transfers submitted later run
// normally. It returns ErrClosed after Close, and a
// *ioring.HookPanicError when a transfer's cancel hook panicked (on a Pump:
// a Runner's interruption armed with Transfer.OnCancel), as
// ioring.Ring.CancelAll does: every other transfer was still canceled.
//
// The cancel hooks run on the caller's goroutine, before CancelAll
// returns. One may call back into the Device: CancelAll again, Submit,
// Request.Cancel, and Close, which then returns without waiting for this
// CancelAll or for the drain (see Close); a Close on another goroutine
// waits for the CancelAlls in progress.
func (d *Device) CancelAll() error {
	if !d.made() {
		return errDeviceNotMade("cancel all", d)
	}
	if !d.cancels.enter() {
		return ErrClosed
	}
	defer d.cancels.leave("CancelAlls")
	return d.tr.CancelAll()
}

// Close cancels every transfer, waits until each has completed (its
// completion posted to the ring: drained), stops the transport's
// goroutines and releases the device. Completions not yet reaped stay in
// the ring. Later calls return ErrClosed, without waiting for the first
// to finish. Its error is the transport's: a Pump's is a
// *ioring.HookPanicError when a transfer's cancel hook panicked (the
// Device is closed all the same).
//
// A Pump's Runner may call Close on its own device from the code the Pump
// runs for it, on the goroutine running it: Run, or an interruption armed
// with Transfer.OnCancel (which runs inside CancelAll, Request.Cancel, a
// token's cancel, a deadline, Ring.CancelAll or Close). That Close cannot
// wait for the drain, nor for a CancelAll that runs the interruption: they
// wait for it to return. It cancels every transfer and returns (nil, or a
// *ioring.HookPanicError) before they have all completed: the Device is
// closed from then on, as after any Close (no transfer is accepted;
// CancelAll, Close and the calls that would use the device return
// ErrClosed), each transfer still completes exactly once, and the Pump
// releases the device (closes the Runner) on a goroutine of its own once
// the transfers have completed, after the caller's Run or interruption
// returned (the Runner's error then goes unreported). A goroutine that
// Run or the interruption starts is no longer the Runner's code: its
// Close waits as any other. A Close from any other goroutine, even while
// such code runs, keeps the guarantee above.
func (d *Device) Close() error {
	if !d.made() {
		return errDeviceNotMade("close", d)
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return ErrClosed
	}
	d.closed = true
	d.mu.Unlock()
	d.cancels.close()
	if c, ok := d.tr.(callbackRunner); ok && c.inCallback() {
		// Inside a Runner's code, perhaps run by a CancelAll counted in
		// d.cancels: waiting for them would wait for ourselves. A Pump
		// takes a CancelAll alongside and after its Close, and its Close
		// leaves the drain and the release to a goroutine of its own.
		return d.tr.Close()
	}
	d.cancels.wait() // the CancelAlls in progress end
	return d.tr.Close()
}

// callbackRunner is a Transport that runs code of its user (a Pump: its
// Runner's Run and interruptions), may be closed from inside it, and
// tells when (inCallback). Its CancelAll must be safe during and after
// its Close, which the Device then does not wait for.
type callbackRunner interface {
	inCallback() bool
}

// Xfer carries the options of one transfer.
type Xfer struct {
	// Token, if not nil, covers the transfer: canceling it cancels the
	// transfer (see ioring.Token). It must belong to the Device's ring.
	Token *ioring.Token
	// Deadline, if positive, limits the transfer to that long after
	// submission; then it completes with ErrTimeout.
	Deadline time.Duration
	// User is handed back in the transfer's Completion.
	User any
}

// Endpoint is one endpoint of an opened Device. Transfers on an endpoint
// run in submission order (as on the bus) and complete in that order,
// unless canceled while queued, which completes them at once: one at a
// time, or WithDepth at a time on usbfs.
// All methods are safe for concurrent use. An Endpoint that
// Device.Endpoint did not return (a nil *Endpoint, a zero Endpoint) is
// refused by every method with an error wrapping ioring.ErrInvalid; its
// Desc is the zero EndpointDesc.
type Endpoint struct {
	dev    *Device
	desc   EndpointDesc
	active bool // in the claimed interfaces' current settings; guarded by dev.mu
}

// Desc returns the endpoint's descriptor.
func (e *Endpoint) Desc() EndpointDesc {
	if e == nil {
		return EndpointDesc{}
	}
	return e.desc
}

// errEndpointNotMade refuses op on an Endpoint that Device.Endpoint did not
// return (e nil, or a zero Endpoint).
func errEndpointNotMade(op string, e *Endpoint) error {
	return errNotMade(op, "Endpoint", e == nil, "get endpoints from Device.Endpoint")
}

// Submit starts an asynchronous transfer of buf: for an IN endpoint the
// device's data is read into buf, for an OUT endpoint buf is sent. It
// returns at once. The transfer's completion arrives through the ring's
// completion queue (Ring.Reap) like any file I/O: Completion.N is the
// number of bytes moved (a short IN transfer, even 0 for a zero-length
// packet, is a success), Completion.Err is nil, ErrCanceled, ErrTimeout,
// ErrStall, ErrNoDevice or another error of the transport, and
// Completion.User is x.User. buf belongs to the transfer until its
// completion is delivered.
//
// An error from Submit means nothing was submitted: bad input (an empty IN
// buffer, a buffer the transport cannot carry, a token of another ring:
// errors wrapping ioring.ErrInvalid), ErrClosed, ErrNoDevice once the
// device is known to be gone, or the ring's (ioring.ErrFull,
// ioring.ErrClosed). A transfer submitted with an already-canceled token
// is accepted and completes at once with ErrCanceled, without reaching the
// device.
//
// A transfer in progress needs a second ring slot for its I/O on the
// simulated scanner: keep the number of outstanding requests on the ring
// below its Entries minus the number of busy endpoints.
func (e *Endpoint) Submit(buf []byte, x Xfer) (ioring.Request, error) {
	return e.submit(context.Background(), buf, x, false)
}

// Start is Submit whose completion is delivered only to Request.Wait,
// never to the completion queue (see ioring.Ring.Start). Every started
// transfer must be waited for.
func (e *Endpoint) Start(buf []byte, x Xfer) (ioring.Request, error) {
	return e.submit(context.Background(), buf, x, true)
}

// Transfer runs one transfer of buf and waits for it: it returns the bytes
// moved and the transfer's error. ctx ending cancels the transfer (then
// the error is ErrCanceled, or ErrTimeout for a deadline, with the bytes
// that moved); Transfer still waits for its completion, so buf is free when
// it returns. A ctx that has already ended starts nothing (the same
// errors, 0 bytes); a nil ctx is refused (ioring.ErrInvalid). While a
// Reset or a settings call (SetConfiguration, ClaimInterface,
// ReleaseInterface, SetAltSetting) is in progress the transfer waits for it
// before it is submitted; ctx ending during that wait ends it too, with
// nothing submitted (the same errors, 0 bytes).
func (e *Endpoint) Transfer(ctx context.Context, buf []byte) (int, error) {
	if err := startable(ctx, "transfer"); err != nil {
		return 0, err
	}
	q, err := e.submit(ctx, buf, Xfer{}, true)
	if err != nil {
		return 0, err
	}
	c, err := q.Wait(ctx)
	if err != nil {
		return 0, err
	}
	return movedCount(e.desc.Address, c.N, len(buf), c.Err)
}

// movedCount checks a transfer's count of bytes moved against its data
// (size bytes) before a synchronous call (Transfer, Read, Write, Control)
// returns it: a Transport that reports more, or fewer than none, is
// wrong (see Transport), and a caller slicing its buffer with the count
// would panic. Such a count is clamped into 0..size and, where the
// transfer reported no error, the transfer fails with one that says so.
// A Pump checks its Runners' counts with it too. The completions of
// Submit and Start come from the Transport's requests as they are.
func movedCount(addr uint8, n, size int, err error) (int, error) {
	if n >= 0 && n <= size {
		return n, err
	}
	if err == nil {
		err = fmt.Errorf("usb: endpoint %#02x: transport reported %d bytes moved for %d bytes of data", addr, n, size)
	}
	return min(max(n, 0), size), err
}

// submit is Submit (wait false) or Start (wait true); ctx is the context
// of the caller that will wait for the transfer (Transfer; Background for
// Submit and Start): it stops the wait for a Reset or settings call in
// progress (rlock).
func (e *Endpoint) submit(ctx context.Context, buf []byte, x Xfer, wait bool) (ioring.Request, error) {
	if e == nil || e.dev == nil { // e.dev is a Device that NewDevice made
		return ioring.Request{}, errEndpointNotMade("submit", e)
	}
	if e.desc.IsIn() && len(buf) == 0 {
		return ioring.Request{}, errorf("usb: endpoint %#02x: %w: IN transfer without a buffer", e.desc.Address, ioring.ErrInvalid)
	}
	d := e.dev
	if err := d.rlock(ctx, "transfer"); err != nil {
		return ioring.Request{}, err
	}
	defer d.mu.RUnlock()
	if d.closed {
		return ioring.Request{}, ErrClosed
	}
	if !e.active {
		return ioring.Request{}, errorf("usb: %v: endpoint %v: %w: its interface is released or at another alternate setting", d.desc, e.desc, ErrNotFound)
	}
	return d.tr.Submit(e.desc, buf, x, wait)
}

// rlock takes d.mu for reading, as every submission does. A Reset or a
// settings call holds it for writing for as long as the device takes to
// answer; a caller that passes its context (Transfer, Control) stops
// waiting when ctx ends first, with startable's error: nothing was
// submitted. A goroutine then keeps waiting for the lock and lets it go at
// once. A context that never ends (Submit's and Start's Background) waits
// as long as it takes.
func (d *Device) rlock(ctx context.Context, op string) error {
	if d.mu.TryRLock() {
		return nil
	}
	done := ctx.Done()
	if done == nil {
		d.mu.RLock()
		return nil
	}
	got, gone := make(chan struct{}), make(chan struct{})
	go func() {
		d.mu.RLock()
		select {
		case got <- struct{}{}: // the caller holds it now
		case <-gone:
			d.mu.RUnlock()
		}
	}()
	select {
	case <-got:
		return nil
	case <-done:
		close(gone)
		return startable(ctx, op)
	}
}

// startable refuses a transfer before it starts when ctx is nil (an error
// wrapping ioring.ErrInvalid: nothing could cancel it) or has already
// ended: a context that has ended starts nothing, and the error is the one
// a transfer its context cancels gets (ErrTimeout for a deadline,
// ErrCanceled otherwise, and the context's own error).
func startable(ctx context.Context, op string) error {
	if ctx == nil {
		return errorf("usb: %s: %w: nil context (use context.Background)", op, ioring.ErrInvalid)
	}
	err := ctx.Err()
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return errorf("usb: %s: %w: %w", op, ErrTimeout, err)
	}
	return errorf("usb: %s: %w: %w", op, ErrCanceled, err)
}
