package usb

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cancelio/cancelio/ioring"
)

// transport moves the data of one Device's transfers: the simulated
// scanner's sockets, or libusb. The Device owns the queues, the ring
// requests and the contract; a transport runs one transfer at a time per
// endpoint, on that endpoint's pump goroutine.
type transport interface {
	// check refuses, before submission, a buffer the transport cannot
	// carry on e (with an error wrapping ioring.ErrInvalid).
	check(e *Endpoint, buf []byte) error
	// run performs x on e and returns the bytes moved and the decoded
	// error (nil, ErrCanceled, ErrStall, ErrNoDevice...). It makes itself
	// interruptible with e.startInner or e.arm, so that x's cancel hook
	// reaches the I/O in progress.
	run(e *Endpoint, x *xfer) (int, error)
	// clearHalt clears a halt of e; no transfer is pending on e.
	clearHalt(e *Endpoint) error
	// close releases the transport, after every transfer completed.
	close() error
}

// directTransport is a transport that takes whole transfers itself (usbfs:
// its own queues, cancel hooks and completions), so the Device runs no
// pump and keeps no queue for it; run is never called.
type directTransport interface {
	transport
	// submit starts a transfer of buf on e, checked already (see
	// Endpoint.Submit for the results).
	submit(e *Endpoint, buf []byte, x Xfer, awaited bool) (ioring.Request, error)
	// cancelAll cancels every transfer accepted so far.
	cancelAll()
}

// Device is an opened USB device (one interface of it) whose endpoints run
// transfers as requests of an ioring.Ring: each transfer is a foreign
// request, so tokens, deadlines, Request.Cancel, Ring.CancelAll and the
// exactly-once completion work as for file I/O.
//
// The Device does not own the Ring: close the Device before the Ring (a
// Ring closed first cancels the Device's transfers, which then complete
// with ErrCanceled). All methods are safe for concurrent use.
type Device struct {
	ring   *ioring.Ring
	desc   DeviceDesc
	tr     transport
	direct directTransport // tr, when it takes whole transfers; else nil
	eps    []*Endpoint

	mu     sync.RWMutex   // orders closed against Submit's xfers.Add
	closed bool           // guarded by mu
	xfers  sync.WaitGroup // transfers accepted and not yet completed
	pumps  sync.WaitGroup // the endpoints' pump goroutines
	gone   atomic.Bool    // a transfer saw ErrNoDevice: refuse new ones
	// closing is closed, readable under an Endpoint.mu: a transfer queued
	// after Close's cancel pass looked at its endpoint is canceled at once.
	closing atomic.Bool
}

// newDevice makes a Device and starts one pump goroutine per endpoint,
// unless tr is a directTransport.
func newDevice(ring *ioring.Ring, desc DeviceDesc, tr transport, setup func(*Endpoint)) *Device {
	d := &Device{ring: ring, desc: desc, tr: tr}
	d.direct, _ = tr.(directTransport)
	for _, ed := range desc.Endpoints {
		e := &Endpoint{dev: d, desc: ed}
		e.cond.L = &e.mu
		if setup != nil {
			setup(e)
		}
		d.eps = append(d.eps, e)
	}
	if d.direct != nil {
		return d
	}
	d.pumps.Add(len(d.eps))
	for _, e := range d.eps {
		go e.pump()
	}
	return d
}

// Desc returns the device's descriptor and the endpoints of its opened
// interface.
func (d *Device) Desc() DeviceDesc {
	desc := d.desc
	desc.Endpoints = slices.Clone(d.desc.Endpoints)
	return desc
}

// Endpoint returns the endpoint at address addr (bit 7 set for IN), or an
// error wrapping ErrNotFound. The same *Endpoint is returned each time; it
// stays usable (failing with ErrClosed) after Close.
func (d *Device) Endpoint(addr uint8) (*Endpoint, error) {
	for _, e := range d.eps {
		if e.desc.Address == addr {
			return e, nil
		}
	}
	return nil, fmt.Errorf("usb: %v: endpoint %#02x: %w", d.desc, addr, ErrNotFound)
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
	e, err := d.Endpoint(addr)
	if err != nil {
		return err
	}
	d.mu.RLock()
	closed := d.closed
	d.mu.RUnlock()
	switch {
	case closed:
		return ErrClosed
	case d.gone.Load():
		return ErrNoDevice
	case d.direct != nil:
		return d.tr.clearHalt(e) // refuses itself while transfers are pending
	}
	e.mu.Lock()
	if e.head != nil || e.running != nil || e.paused {
		e.mu.Unlock()
		return fmt.Errorf("usb: clear halt of %#02x: %w: transfers are pending on it", addr, ioring.ErrInvalid)
	}
	e.paused = true
	e.mu.Unlock()
	err = d.tr.clearHalt(e)
	e.mu.Lock()
	e.paused = false
	e.cond.Signal()
	e.mu.Unlock()
	if errors.Is(err, ErrNoDevice) {
		d.gone.Store(true)
	}
	return err
}

// CancelAll cancels every transfer in flight on the device's endpoints,
// queued or in progress, like WIA's CancelPendingIO. It requests and
// returns; each transfer still completes exactly once (ErrCanceled, or its
// real result when it won the race). Transfers submitted later run
// normally. It returns ErrClosed after Close.
func (d *Device) CancelAll() error {
	d.mu.RLock()
	closed := d.closed
	d.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	d.cancelAll()
	return nil
}

func (d *Device) cancelAll() {
	if d.direct != nil {
		d.direct.cancelAll()
		return
	}
	var reqs []ioring.Request
	for _, e := range d.eps {
		e.mu.Lock()
		if x := e.running; x != nil {
			reqs = append(reqs, x.req)
		}
		for x := e.head; x != nil; x = x.next {
			reqs = append(reqs, x.req)
		}
		e.mu.Unlock()
	}
	// Through the ring, so that a request is canceled once whoever else
	// cancels it; a request that completed meanwhile says ErrNotFound.
	for _, q := range reqs {
		_ = q.Cancel()
	}
}

// Close cancels every transfer, waits until each has completed (its
// completion posted to the ring: drained), stops the endpoints' goroutines
// and releases the device. Completions not yet reaped stay in the ring.
// Later calls return ErrClosed.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return ErrClosed
	}
	d.closed = true
	d.closing.Store(true)
	d.mu.Unlock()
	d.cancelAll()
	d.xfers.Wait()
	for _, e := range d.eps {
		e.mu.Lock()
		e.stop = true
		e.cond.Signal()
		e.mu.Unlock()
	}
	d.pumps.Wait()
	return d.tr.close()
}

// finish posts x's result to its request. Exactly one call per accepted
// transfer.
func (d *Device) finish(x *xfer, n int, err error) {
	if err == ErrNoDevice {
		d.gone.Store(true)
	}
	_ = d.ring.Complete(x.req, n, err)
	d.xfers.Done()
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
// All methods are safe for concurrent use.
type Endpoint struct {
	dev  *Device
	desc EndpointDesc
	sim  *simEndpoint // the simulated scanner's state (pump-owned), or nil

	mu         sync.Mutex
	cond       sync.Cond // wakes the pump: work queued, pause over, stop; L is &mu
	head, tail *xfer     // queued transfers, oldest first; guarded by mu
	running    *xfer     // the transfer the pump runs; guarded by mu
	paused     bool      // ClearHalt in progress; guarded by mu
	stop       bool      // Close: the pump exits; guarded by mu
}

// Desc returns the endpoint's descriptor.
func (e *Endpoint) Desc() EndpointDesc { return e.desc }

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
	return e.submit(buf, x, false)
}

// Start is Submit whose completion is delivered only to Request.Wait,
// never to the completion queue (see ioring.Ring.Start). Every started
// transfer must be waited for.
func (e *Endpoint) Start(buf []byte, x Xfer) (ioring.Request, error) {
	return e.submit(buf, x, true)
}

// Transfer runs one transfer of buf and waits for it: it returns the bytes
// moved and the transfer's error. ctx ending cancels the transfer (then
// the error is ErrCanceled, or ErrTimeout for a deadline, with the bytes
// that moved); Transfer still waits for its completion, so buf is free when
// it returns.
func (e *Endpoint) Transfer(ctx context.Context, buf []byte) (int, error) {
	q, err := e.Start(buf, Xfer{})
	if err != nil {
		return 0, err
	}
	c, err := q.Wait(ctx)
	if err != nil {
		return 0, err
	}
	return c.N, c.Err
}

func (e *Endpoint) submit(buf []byte, opt Xfer, awaited bool) (ioring.Request, error) {
	d := e.dev
	if e.desc.IsIn() && len(buf) == 0 {
		return ioring.Request{}, fmt.Errorf("usb: endpoint %#02x: %w: IN transfer without a buffer", e.desc.Address, ioring.ErrInvalid)
	}
	if err := d.tr.check(e, buf); err != nil {
		return ioring.Request{}, err
	}
	if d.direct != nil {
		// The transport refuses once Close has begun (ErrClosed) or the
		// device is gone.
		return d.direct.submit(e, buf, opt, awaited)
	}
	d.mu.RLock()
	if d.closed {
		d.mu.RUnlock()
		return ioring.Request{}, ErrClosed
	}
	if d.gone.Load() {
		d.mu.RUnlock()
		return ioring.Request{}, ErrNoDevice
	}
	d.xfers.Add(1)
	d.mu.RUnlock()

	x := &xfer{ep: e, buf: buf}
	op := ioring.Foreign(x.cancel).WithToken(opt.Token).WithDeadline(opt.Deadline).WithUser(opt.User)
	var q ioring.Request
	var err error
	if awaited {
		q, err = d.ring.Start(op)
	} else {
		q, err = d.ring.Submit(op)
	}
	if err != nil {
		d.xfers.Done()
		return ioring.Request{}, fmt.Errorf("usb: endpoint %#02x: %w", e.desc.Address, err)
	}
	e.mu.Lock()
	x.req = q
	if !q.Pending() {
		// An already-canceled token: the ring completed the request, the
		// transport must not start.
		x.state = xDone
		e.mu.Unlock()
		d.xfers.Done()
		return q, nil
	}
	if x.canceled || d.closing.Load() {
		// Canceled (token, deadline) before it was queued, or submitted
		// while Close canceled everything.
		x.state = xDone
		e.mu.Unlock()
		d.finish(x, 0, ErrCanceled)
		return q, nil
	}
	x.state = xQueued
	x.prev = e.tail
	if e.tail != nil {
		e.tail.next = x
	} else {
		e.head = x
	}
	e.tail = x
	e.cond.Signal()
	e.mu.Unlock()
	return q, nil
}

// xferState is where a transfer is; transitions under Endpoint.mu.
type xferState uint8

const (
	xNew     xferState = iota // submitted to the ring, not queued yet
	xQueued                   // in the endpoint's queue
	xRunning                  // the pump runs it
	xDone                     // completed (or being completed)
)

// xfer is one transfer. A new one per Submit: its cancel hook may run
// after completion, so it is never reused.
type xfer struct {
	ep  *Endpoint
	buf []byte
	req ioring.Request // set before it is queued

	// guarded by ep.mu
	state      xferState
	canceled   bool
	next, prev *xfer
	inner      ioring.Request     // the ring I/O in progress (simulated scanner)
	stopCtx    context.CancelFunc // the context of the libusb call in progress
}

// cancel is x's ioring cancel hook: it must not block. A queued transfer
// completes at once; a running one has its I/O interrupted and completes
// when the transport returns.
func (x *xfer) cancel() {
	e := x.ep
	e.mu.Lock()
	switch x.state {
	case xNew:
		x.canceled = true
	case xQueued:
		e.unlink(x)
		x.state = xDone
		e.mu.Unlock()
		e.dev.finish(x, 0, ErrCanceled)
		return
	case xRunning:
		x.canceled = true
		inner, stop := x.inner, x.stopCtx
		e.mu.Unlock()
		if inner != (ioring.Request{}) {
			_ = inner.Cancel()
		}
		if stop != nil {
			stop()
		}
		return
	}
	e.mu.Unlock()
}

// unlink removes queued x. e.mu held.
func (e *Endpoint) unlink(x *xfer) {
	if x.prev != nil {
		x.prev.next = x.next
	} else {
		e.head = x.next
	}
	if x.next != nil {
		x.next.prev = x.prev
	} else {
		e.tail = x.prev
	}
	x.next, x.prev = nil, nil
}

// pump runs e's transfers one at a time, in order, until Close.
func (e *Endpoint) pump() {
	d := e.dev
	defer d.pumps.Done()
	for {
		e.mu.Lock()
		for (e.head == nil || e.paused) && !e.stop {
			e.cond.Wait()
		}
		x := e.head
		if x == nil { // stopping, and drained
			e.mu.Unlock()
			return
		}
		e.unlink(x)
		x.state = xRunning
		e.running = x
		e.mu.Unlock()

		var n int
		var err error
		if d.gone.Load() {
			err = ErrNoDevice
		} else {
			n, err = d.tr.run(e, x)
		}

		e.mu.Lock()
		x.state = xDone
		x.inner, x.stopCtx = ioring.Request{}, nil
		e.running = nil
		e.mu.Unlock()
		d.finish(x, n, err)
	}
}

// canceled reports whether x's cancel hook ran.
func (e *Endpoint) canceled(x *xfer) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return x.canceled
}

// Ring-full retries of a transfer's inner I/O: slots free up as other
// completions are delivered. Past this, the transfer fails (it could only
// wait for its own caller otherwise).
const (
	fullRetries = 12
	fullBackoff = 50 * time.Microsecond
)

// startInner runs op on the ring as x's I/O in progress and waits for its
// completion; x's cancel hook cancels it. A transfer canceled before its
// I/O starts gets ErrCanceled without starting it; a closed ring counts as
// a cancel (its Close canceled every request).
func (e *Endpoint) startInner(x *xfer, op ioring.Op) (ioring.Completion, error) {
	r := e.dev.ring
	return e.runInner(x, func() (ioring.Request, error) { return r.Start(op) })
}

// runInner is startInner for an I/O that start submits (to be waited for
// with Request.Wait): a ring request of x's transport.
func (e *Endpoint) runInner(x *xfer, start func() (ioring.Request, error)) (ioring.Completion, error) {
	var q ioring.Request
	var err error
	backoff := fullBackoff
	for try := 0; ; try++ {
		if e.canceled(x) {
			return ioring.Completion{Err: ErrCanceled}, nil
		}
		q, err = start()
		if err == nil || !errors.Is(err, ioring.ErrFull) || try == fullRetries {
			break
		}
		time.Sleep(backoff)
		backoff *= 2
	}
	if err != nil {
		if errors.Is(err, ioring.ErrClosed) {
			return ioring.Completion{Err: ErrCanceled}, nil
		}
		return ioring.Completion{}, fmt.Errorf("usb: endpoint %#02x: %w", e.desc.Address, err)
	}
	e.mu.Lock()
	x.inner = q
	canceled := x.canceled
	e.mu.Unlock()
	if canceled {
		_ = q.Cancel()
	}
	c, err := q.Wait(context.Background())
	e.mu.Lock()
	x.inner = ioring.Request{}
	e.mu.Unlock()
	if err != nil {
		return ioring.Completion{}, fmt.Errorf("usb: endpoint %#02x: wait: %w", e.desc.Address, err)
	}
	return c, nil
}
