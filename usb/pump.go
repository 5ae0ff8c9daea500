package usb

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cancelio/cancelio/internal/goid"
	"github.com/cancelio/cancelio/ioring"
)

// Runner does the I/O of a Pump's transfers: one transfer at a time per
// endpoint, each on that endpoint's goroutine. libusb (whose calls block)
// and the simulated scanner of package usbsim (a message or two of socket
// I/O per transfer) are Runners.
//
// Run and the interruptions it arms (Transfer.OnCancel) may call back into
// their Device, Close included (see Device.Close). Check, ClearHalt and
// Reset, and a Configurer's methods, run while the Device holds its lock
// for the call that runs them (a Submit; ClearHalt; Reset or a settings
// call): of the Device's methods they may call CancelAll only, and must
// not wait for a goroutine that calls the others, which would wait for
// that lock. A panic in Run fails its transfer (RunPanicError); one in
// Check, ClearHalt, Reset or a Configurer's method goes on to the caller
// of the Device method that ran it, and the Pump stays usable; one in
// Close goes to the caller of Close, or is dropped when nobody waits for
// it (see Pump.Close).
type Runner interface {
	// Check refuses, before submission, a buffer the backend cannot carry
	// on ep, with an error wrapping ioring.ErrInvalid or
	// ioring.ErrNotSupported. It runs on the submitting goroutine.
	Check(ep EndpointDesc, buf []byte) error
	// Run performs t and returns the bytes moved and the result: nil,
	// ErrCanceled, ErrStall, ErrNoDevice... (see Transport). It makes the
	// I/O interruptible with t.Do or t.OnCancel, so that a cancel of t
	// reaches the I/O in progress. It never runs twice at once for one
	// endpoint. It may call Device.CancelAll and Device.Close on its own
	// device: such a Close does not wait for t (see Device.Close).
	Run(t *Transfer) (int, error)
	// ClearHalt clears a halt of ep; no transfer of ep is pending or
	// running meanwhile.
	ClearHalt(ep EndpointDesc) error
	// Reset resets the device (see Transport.Reset); no transfer is pending
	// or running meanwhile. A backend that cannot returns an error wrapping
	// ioring.ErrNotSupported.
	Reset() error
	// Close releases the backend, after every transfer completed.
	Close() error
}

// Pump is the Transport of a Runner: it keeps each endpoint's transfers in
// a queue, in submission order, and runs them one at a time on one
// goroutine per endpoint (the pump). Each transfer is one foreign request
// of the ring (ioring.Foreign): tokens, deadlines, Request.Cancel and
// Ring.CancelAll reach it through its cancel hook; a queued transfer
// completes with ErrCanceled at once, a running one has its I/O
// interrupted (Transfer.Do, Transfer.OnCancel) and completes when Run
// returns. A transfer costs no goroutine of its own.
//
// Every method refuses a Pump that NewPump did not make (a nil *Pump, a
// zero Pump) with an error wrapping ioring.ErrInvalid.
type Pump struct {
	ring *ioring.Ring
	run  Runner
	eps  [32]*pumpEndpoint // by epIndex; read-only after NewPump

	// xfers counts the transfers accepted and not yet completed; its
	// closed bit says Close has begun (see gate). A transfer is either
	// counted before Close sets the bit, and Close waits for its
	// completion, or refused with ErrClosed. The bit is also read under a
	// pumpEndpoint.mu: a transfer queued after Close's cancel pass looked
	// at its endpoint is canceled, through the ring, instead.
	xfers gate
	pumps sync.WaitGroup // the endpoints' goroutines
	gone  atomic.Bool    // a transfer saw ErrNoDevice: refuse new ones
	// stopping counts, by goroutine id (goid), the interruptions armed
	// with Transfer.OnCancel that are running: with the pumps' goroutines
	// (pumpEndpoint.g), where the Runner's code runs, so that a Close from
	// inside that code can tell (inCallback). Guarded by stopMu; nil until
	// the first interruption.
	stopMu   sync.Mutex
	stopping map[int64]int
	// accepted is called, in tests only (nil otherwise), by Submit between
	// the ring's acceptance of a transfer and its queueing: where a
	// CancelAll may look at the endpoint before the transfer is there.
	accepted func(*Transfer)
	// beforeCount is called, in tests only (nil otherwise), by Submit just
	// before it counts a transfer: where a Close may begin.
	beforeCount func()
}

// pumpEndpoint is one endpoint's queue and goroutine.
type pumpEndpoint struct {
	desc EndpointDesc

	mu         sync.Mutex
	cond       sync.Cond // wakes the pump: work queued, pause over, stop; L is &mu
	head, tail *Transfer // queued transfers, oldest first; guarded by mu
	running    *Transfer // the transfer the pump runs; guarded by mu
	paused     bool      // ClearHalt in progress; guarded by mu
	stop       bool      // Close: the pump exits; guarded by mu

	// g is the id (goid) of the goroutine that runs the endpoint's
	// transfers (the pump), where the Runner's Run runs.
	g atomic.Int64

	// cancels counts the looks of CancelAll (and Close) at the endpoint;
	// changed under mu. Submit reads it before the ring accepts a
	// transfer and again once it holds mu to queue it: a change means a
	// CancelAll looked in between and missed the transfer, which Submit
	// then cancels itself (as usbfs does with cancelAsked). Wrapping would
	// take 2^32 CancelAlls during one Submit.
	cancels atomic.Uint32
}

// epIndex maps an endpoint address to a slot: its number, and the
// direction bit as bit 4.
func epIndex(addr uint8) int { return int(addr&0x0f) | int(addr&0x80)>>3 }

// NewPump returns the Transport of r for the endpoints eps, whose
// transfers complete through ring, and starts one goroutine per endpoint;
// Close stops them. It panics if ring or r is nil, if two endpoints share
// an address, or if an address has bits 4 to 6 set (reserved: no endpoint
// has them): a backend's bugs, better found here than in a pump.
func NewPump(ring *ioring.Ring, eps []EndpointDesc, r Runner) *Pump {
	if ring == nil || r == nil {
		panic("usb: NewPump: nil ring or Runner")
	}
	p := &Pump{ring: ring, run: r}
	p.xfers.init()
	for _, ed := range eps {
		if ed.Address&0x70 != 0 {
			panic(fmt.Sprintf("usb: NewPump: endpoint address %#02x has reserved bits set", ed.Address))
		}
		i := epIndex(ed.Address)
		if p.eps[i] != nil {
			panic(fmt.Sprintf("usb: NewPump: endpoint %#02x twice", ed.Address))
		}
		e := &pumpEndpoint{desc: ed}
		e.cond.L = &e.mu
		p.eps[i] = e
	}
	for _, e := range p.eps {
		if e != nil {
			p.pumps.Add(1)
			go p.pump(e)
		}
	}
	return p
}

// made reports whether NewPump made p.
func (p *Pump) made() bool { return p != nil && p.ring != nil }

// errPumpNotMade refuses op on a Pump that NewPump did not make.
func errPumpNotMade(op string, p *Pump) error {
	return errNotMade(op, "Pump", p == nil, "make pumps with NewPump")
}

// endpoint returns the state of ep, or an error wrapping ErrNotFound.
func (p *Pump) endpoint(ep EndpointDesc) (*pumpEndpoint, error) {
	// The address whole: epIndex ignores the reserved bits, and 0x91 is
	// not 0x81.
	if e := p.eps[epIndex(ep.Address)]; e != nil && e.desc.Address == ep.Address {
		return e, nil
	}
	if ep.Type == Control {
		return nil, errorf("usb: control transfers: %w: this backend has no control endpoint", ioring.ErrNotSupported)
	}
	return nil, errorf("usb: endpoint %#02x: %w", ep.Address, ErrNotFound)
}

// Submit queues a transfer of buf on ep (see Transport.Submit).
func (p *Pump) Submit(ep EndpointDesc, buf []byte, opt Xfer, wait bool) (ioring.Request, error) {
	if !p.made() {
		return ioring.Request{}, errPumpNotMade("submit", p)
	}
	e, err := p.endpoint(ep)
	if err != nil {
		return ioring.Request{}, err
	}
	if err := p.run.Check(ep, buf); err != nil {
		return ioring.Request{}, err
	}
	// Before the count: a Close that sets the closed bit after it bumps
	// cancels after it too.
	cancels := e.cancels.Load()
	if p.beforeCount != nil {
		p.beforeCount()
	}
	if !p.xfers.enter() {
		return ioring.Request{}, ErrClosed
	}
	if p.gone.Load() {
		p.xfers.leave("transfers")
		return ioring.Request{}, ErrNoDevice
	}
	t := &Transfer{p: p, ep: e, desc: ep, buf: buf, tok: opt.Token}
	op := ioring.Foreign(t.cancel).WithToken(opt.Token).WithDeadline(opt.Deadline).WithUser(opt.User)
	var q ioring.Request
	if wait {
		q, err = p.ring.Start(op)
	} else {
		q, err = p.ring.Submit(op)
	}
	if err != nil {
		p.xfers.leave("transfers")
		return ioring.Request{}, errorf("usb: endpoint %#02x: %w", e.desc.Address, err)
	}
	if p.accepted != nil {
		p.accepted(t)
	}
	e.mu.Lock()
	t.req = q
	if !q.Pending() {
		// An already-canceled token: the ring completed the request, the
		// runner must not start.
		t.state = tDone
		e.mu.Unlock()
		p.xfers.leave("transfers")
		return q, nil
	}
	if t.canceled {
		// Canceled (token, deadline) before it was queued.
		t.state = tDone
		e.mu.Unlock()
		p.finish(t, 0, ErrCanceled)
		return q, nil
	}
	if e.cancels.Load() != cancels || p.xfers.closing() {
		// A CancelAll or Close looked at the endpoint after the ring
		// accepted t and before it was queued: it is theirs to cancel.
		e.mu.Unlock()
		p.cancelLate(t)
		return q, nil
	}
	t.state = tQueued
	t.prev = e.tail
	if e.tail != nil {
		e.tail.next = t
	} else {
		e.head = t
	}
	e.tail = t
	e.cond.Signal()
	e.mu.Unlock()
	return q, nil
}

// cancelLate cancels t, which the ring accepted and a CancelAll or Close
// missed (see pumpEndpoint.cancels), as they would have: through the
// ring, so that the cancel is counted once and a later one finds nothing
// left. t is not queued: its cancel hook only marks it, and t completes
// here with ErrCanceled. A cancel that came first (its token, deadline,
// Ring.CancelAll) counts instead; its hook, should it run later, finds t
// done. e.mu not held: the hook takes it.
func (p *Pump) cancelLate(t *Transfer) {
	_, _ = p.ring.Cancel(t.req)
	t.ep.mu.Lock()
	t.state = tDone
	t.ep.mu.Unlock()
	p.finish(t, 0, ErrCanceled)
}

// CancelAll cancels every transfer queued or running (see
// Transport.CancelAll), and those the ring accepted whose Submit has not
// queued them yet: Submit cancels them (see pumpEndpoint.cancels). Its
// error is the *ioring.HookPanicError of a transfer's cancel hook that
// panicked (a Runner's interruption, armed with Transfer.OnCancel); every
// other transfer was still canceled. A closed ring canceled everything
// already: that is no error.
func (p *Pump) CancelAll() error {
	if !p.made() {
		return errPumpNotMade("cancel all", p)
	}
	var reqs []ioring.Request
	for _, e := range p.eps {
		if e == nil {
			continue
		}
		e.mu.Lock()
		e.cancels.Add(1)
		if t := e.running; t != nil {
			reqs = append(reqs, t.req)
		}
		for t := e.head; t != nil; t = t.next {
			reqs = append(reqs, t.req)
		}
		e.mu.Unlock()
	}
	// Through the ring, so that a request is canceled once whoever else
	// cancels it (a request that completed meanwhile is skipped), all in
	// one batch: a cancel hook that panics or ends its goroutine does not
	// keep the others from running.
	if _, err := p.ring.Cancel(reqs...); err != nil && !errors.Is(err, ioring.ErrClosed) {
		return err
	}
	return nil
}

// ClearHalt pauses ep's pump and has the Runner clear the halt (see
// Transport.ClearHalt); transfers submitted meanwhile wait.
func (p *Pump) ClearHalt(ep EndpointDesc) error {
	if !p.made() {
		return errPumpNotMade("clear halt", p)
	}
	e, err := p.endpoint(ep)
	if err != nil {
		return err
	}
	if p.xfers.closing() {
		return ErrClosed // the Runner is closed, or closing
	}
	if p.gone.Load() {
		return ErrNoDevice
	}
	e.mu.Lock()
	if e.head != nil || e.running != nil || e.paused {
		e.mu.Unlock()
		return errorf("usb: clear halt of %#02x: %w: transfers are pending on it", ep.Address, ioring.ErrInvalid)
	}
	e.paused = true
	e.mu.Unlock()
	// A Runner's ClearHalt that panics (the panic goes on to the caller,
	// as from its other methods but Run) does not leave the pump paused.
	defer func() {
		e.mu.Lock()
		e.paused = false
		e.cond.Signal()
		e.mu.Unlock()
	}()
	err = p.run.ClearHalt(ep)
	if errors.Is(err, ErrNoDevice) {
		p.gone.Store(true)
	}
	return err
}

// Reset has the Runner reset the device, once no transfer is queued or
// running on any endpoint (see Transport.Reset).
func (p *Pump) Reset() error {
	if !p.made() {
		return errPumpNotMade("reset", p)
	}
	return p.whileIdle("reset", p.run.Reset)
}

// whileIdle runs f, an operation of the Runner on the whole device, once
// no transfer is queued or running on any endpoint; the caller (the
// Device) keeps new ones from being submitted meanwhile. A device known
// to be gone is ErrNoDevice; f returning ErrNoDevice marks it gone.
func (p *Pump) whileIdle(what string, f func() error) error {
	if p.xfers.closing() {
		return ErrClosed // the Runner is closed, or closing
	}
	if p.gone.Load() {
		return ErrNoDevice
	}
	for _, e := range p.eps {
		if e == nil {
			continue
		}
		e.mu.Lock()
		busy := e.head != nil || e.running != nil || e.paused
		e.mu.Unlock()
		if busy {
			return errorf("usb: %s: %w: transfers are pending on %#02x", what, ioring.ErrInvalid, e.desc.Address)
		}
	}
	err := f()
	if errors.Is(err, ErrNoDevice) {
		p.gone.Store(true)
	}
	return err
}

// configurer returns the Runner as a Configurer, or an error wrapping
// ioring.ErrNotSupported.
func (p *Pump) configurer(what string) (Configurer, error) {
	if !p.made() {
		return nil, errPumpNotMade(what, p)
	}
	if c, ok := p.run.(Configurer); ok {
		return c, nil
	}
	return nil, errorf("usb: %s: %w: this backend keeps the settings it was opened with", what, ioring.ErrNotSupported)
}

// SetConfiguration has the Runner select configuration value, if it is a
// Configurer, once no transfer is pending (see Configurer). The Pump
// serves the endpoints it was made with: give NewPump those of every
// setting the device may be switched to.
func (p *Pump) SetConfiguration(value int) error {
	c, err := p.configurer("set configuration")
	if err != nil {
		return err
	}
	return p.whileIdle("set configuration", func() error { return c.SetConfiguration(value) })
}

// ClaimInterface has the Runner claim interface iface (see
// Pump.SetConfiguration).
func (p *Pump) ClaimInterface(iface int, detach bool) error {
	c, err := p.configurer("claim interface")
	if err != nil {
		return err
	}
	return p.whileIdle("claim interface", func() error { return c.ClaimInterface(iface, detach) })
}

// ReleaseInterface has the Runner release interface iface (see
// Pump.SetConfiguration).
func (p *Pump) ReleaseInterface(iface int, reattach bool) error {
	c, err := p.configurer("release interface")
	if err != nil {
		return err
	}
	return p.whileIdle("release interface", func() error { return c.ReleaseInterface(iface, reattach) })
}

// SetAltSetting has the Runner select alternate setting alt of interface
// iface (see Pump.SetConfiguration).
func (p *Pump) SetAltSetting(iface, alt int) error {
	c, err := p.configurer("set alternate setting")
	if err != nil {
		return err
	}
	return p.whileIdle("set alternate setting", func() error { return c.SetAltSetting(iface, alt) })
}

// Close cancels every transfer, waits until each has completed (its
// completion posted to the ring), stops the pumps and closes the Runner.
// A Submit that races with it either fails with ErrClosed or has its
// transfer counted before Close waits, which then cancels and drains it:
// no transfer is accepted once Close has returned.
// Its error is the Runner's, else the *ioring.HookPanicError of a cancel
// hook that panicked (see CancelAll): the Pump is closed all the same.
//
// Called from the Runner's own code that the Pump runs (Run, or an
// interruption armed with Transfer.OnCancel, on the goroutine running
// it), Close cannot wait: the transfer of that Run or interruption
// completes only once it returns. Then Close cancels every transfer and
// returns (nil, or a *ioring.HookPanicError as above); a goroutine of its
// own waits for the completions, stops the pumps and closes the Runner
// once they are in (the Runner's error, if any, goes unreported: nobody
// waits for it; a panic in its Close is dropped likewise, not let out on
// that goroutine). Every transfer still completes exactly once, and no
// transfer is accepted after Close. A later Close returns ErrClosed at
// once, whether the Runner is closed yet or not.
func (p *Pump) Close() error {
	if !p.made() {
		return errPumpNotMade("close", p)
	}
	if !p.xfers.close() {
		return ErrClosed // the first Close closes the Runner, once
	}
	nested := p.inCallback()
	// A Runner's interruption (Transfer.OnCancel) that ends this goroutine
	// (runtime.Goexit) leaves the rest to another one: the ring runs the
	// other cancel hooks, and the pumps still stop.
	canceled := false
	defer func() {
		if !canceled {
			go p.stopDetached()
		}
	}()
	cerr := p.CancelAll()
	canceled = true
	if nested {
		go p.stopDetached() // the caller's Run or interruption returns first
		return cerr
	}
	if err := p.stop(); err != nil {
		return err
	}
	return cerr
}

// stop is the end of Close, once every transfer was canceled: it waits
// for their completions, stops the pumps and closes the Runner.
func (p *Pump) stop() error {
	// The closed bit is set: no transfer is counted any more; wait for
	// the completions of those that were.
	p.xfers.wait()
	for _, e := range p.eps {
		if e == nil {
			continue
		}
		e.mu.Lock()
		e.stop = true
		e.cond.Signal()
		e.mu.Unlock()
	}
	p.pumps.Wait()
	return p.run.Close()
}

// stopDetached is stop on a goroutine of its own, which nobody waits for:
// the Runner's error goes unreported (see Close), and so does a panic of
// its Close, which would otherwise end the process from a goroutine that
// is not the caller's.
func (p *Pump) stopDetached() {
	defer func() { _ = recover() }()
	_ = p.stop()
}

// finish posts t's result to its request. Exactly one call per accepted
// transfer.
func (p *Pump) finish(t *Transfer, n int, err error) {
	if errors.Is(err, ErrNoDevice) {
		p.gone.Store(true)
	}
	// A count outside the transfer's data is a Runner's bug; a caller
	// slicing its buffer with it would panic.
	data := len(t.buf)
	if t.desc.Type == Control {
		data -= SetupSize
	}
	n, err = movedCount(t.desc.Address, n, data, err)
	_ = p.ring.Complete(t.req, n, err)
	p.xfers.leave("transfers")
}

// pump runs e's transfers one at a time, in order, until Close.
func (p *Pump) pump(e *pumpEndpoint) {
	defer p.pumps.Done()
	e.g.Store(goid.ID())
	for p.next(e) {
	}
}

// next runs e's next transfer and reports whether the pump goes on (false:
// stopping, and drained). A Runner's Run that panics completes its
// transfer with a *RunPanicError and the pump goes on; one that ends the
// goroutine (runtime.Goexit) completes it with ErrRunExited, and a new
// goroutine takes the pump over.
func (p *Pump) next(e *pumpEndpoint) (more bool) {
	e.mu.Lock()
	for (e.head == nil || e.paused) && !e.stop {
		e.cond.Wait()
	}
	t := e.head
	if t == nil { // stopping, and drained
		e.mu.Unlock()
		return false
	}
	e.unlink(t)
	t.state = tRunning
	e.running = t
	e.mu.Unlock()

	var n int
	var err error
	returned := false
	defer func() {
		exited := false
		more = true // after a recovered panic too
		if !returned {
			n = 0
			if v := recover(); v != nil {
				err = &RunPanicError{Value: v, Stack: debug.Stack()}
			} else { // runtime.Goexit: this goroutine ends
				err, exited = ErrRunExited, true
			}
		}
		e.mu.Lock()
		t.state = tDone
		t.inner, t.stop = ioring.Request{}, nil
		e.running = nil
		e.mu.Unlock()
		p.finish(t, n, err)
		if exited {
			// After t's completion: the endpoint's transfers complete in
			// order. Counted before this goroutine's Done.
			p.pumps.Add(1)
			go p.pump(e)
		}
	}()
	switch {
	case p.gone.Load():
		err = ErrNoDevice
	case t.tok != nil && t.tok.Canceled():
		// Its token was canceled and the token's cancel of t has not run
		// yet (it cancels its members one after another): a queued
		// transfer of a canceled token must not reach the device.
		err = ErrCanceled
	default:
		n, err = p.run.Run(t)
	}
	returned = true
	return true
}

// unlink removes queued t. e.mu held.
func (e *pumpEndpoint) unlink(t *Transfer) {
	if t.prev != nil {
		t.prev.next = t.next
	} else {
		e.head = t.next
	}
	if t.next != nil {
		t.next.prev = t.prev
	} else {
		e.tail = t.prev
	}
	t.next, t.prev = nil, nil
}

// transferState is where a Transfer is; transitions under its
// pumpEndpoint's mu.
type transferState uint8

const (
	tNew     transferState = iota // submitted to the ring, not queued yet
	tQueued                       // in the endpoint's queue
	tRunning                      // the pump runs it
	tDone                         // completed (or being completed)
)

// Transfer is one transfer of a Pump, as its Runner sees it while Run
// runs. A new one per submission: its cancel hook may run after
// completion, so it is never reused. Its methods are for the Runner, on
// the goroutine of Run, during Run. A Transfer that no Pump made (a nil
// *Transfer, a zero Transfer) has no endpoint and no buffer, OnCancel
// reports it canceled, and Do refuses it with an error wrapping
// ioring.ErrInvalid.
type Transfer struct {
	p    *Pump
	ep   *pumpEndpoint
	desc EndpointDesc // as submitted: the endpoint in the current alternate setting
	buf  []byte
	tok  *ioring.Token  // Xfer.Token, or nil
	req  ioring.Request // set before it is queued

	// guarded by ep.mu
	state      transferState
	canceled   bool
	next, prev *Transfer
	inner      ioring.Request // the ring I/O in progress (Do)
	stop       func()         // the interruption armed with OnCancel
}

// made reports whether a Pump made t.
func (t *Transfer) made() bool { return t != nil && t.ep != nil }

// Endpoint returns the descriptor of the transfer's endpoint.
func (t *Transfer) Endpoint() EndpointDesc {
	if t == nil {
		return EndpointDesc{}
	}
	return t.desc
}

// Buf returns the transfer's buffer: the data to send on an OUT endpoint,
// where the data received goes on an IN endpoint.
func (t *Transfer) Buf() []byte {
	if t == nil {
		return nil
	}
	return t.buf
}

// cancel is t's ioring cancel hook: it must not block. A queued transfer
// completes at once; a running one has its I/O interrupted and completes
// when Run returns.
func (t *Transfer) cancel() {
	e := t.ep
	e.mu.Lock()
	switch t.state {
	case tNew:
		t.canceled = true
	case tQueued:
		e.unlink(t)
		t.state = tDone
		e.mu.Unlock()
		t.p.finish(t, 0, ErrCanceled)
		return
	case tRunning:
		if t.canceled {
			// Canceled before: its interruption ran, and OnCancel's
			// stop runs once. (The ring runs a request's hook once;
			// this guard keeps stop to one run whoever calls cancel.)
			e.mu.Unlock()
			return
		}
		t.canceled = true
		inner, stop := t.inner, t.stop
		e.mu.Unlock()
		if inner != (ioring.Request{}) {
			_ = inner.Cancel()
		}
		if stop != nil {
			t.p.callStop(stop)
		}
		return
	}
	e.mu.Unlock()
}

// callStop calls stop, an interruption armed with OnCancel, counted in
// p.stopping for as long as it runs (see inCallback).
func (p *Pump) callStop(stop func()) {
	g := goid.ID()
	p.stopMu.Lock()
	if p.stopping == nil {
		p.stopping = map[int64]int{}
	}
	p.stopping[g]++
	p.stopMu.Unlock()
	defer func() { // after a panic, or a runtime.Goexit, too
		p.stopMu.Lock()
		if p.stopping[g]--; p.stopping[g] == 0 {
			delete(p.stopping, g)
		}
		p.stopMu.Unlock()
	}()
	stop()
}

// inCallback reports whether the calling goroutine runs, now, code of p's
// Runner that p called: Run (on a pump's goroutine), or an interruption
// armed with Transfer.OnCancel (on the goroutine of the cancel that runs
// it). A Close from there cannot wait for the transfers to complete: one
// of them waits for it to return.
func (p *Pump) inCallback() bool {
	g := goid.ID()
	if g == 0 {
		return false
	}
	for _, e := range p.eps {
		if e != nil && e.g.Load() == g {
			return true
		}
	}
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	return p.stopping[g] > 0
}

// isCanceled reports whether t's cancel hook ran.
func (t *Transfer) isCanceled() bool {
	t.ep.mu.Lock()
	defer t.ep.mu.Unlock()
	return t.canceled
}

// OnCancel arms stop as the interruption of the I/O Run is about to do
// (for example the cancel function of the context a blocking call takes)
// and reports whether that I/O may start: false means t is canceled
// already, and Run should return ErrCanceled. A cancel of t from then on
// calls stop, once, without waiting; it must not block.
//
// stop runs on the goroutine of the cancel, inside it: Device.CancelAll,
// Request.Cancel, a token's Cancel, Ring.CancelAll, Device.Close, or the
// ring's goroutine for a deadline. It may call back into the Device and
// the ring; a Device.Close there (or in Run) returns without waiting for
// the transfers to complete, t among them, and the device is released
// once they have (see Device.Close).
func (t *Transfer) OnCancel(stop func()) bool {
	if !t.made() {
		return false // no I/O may start for it
	}
	t.ep.mu.Lock()
	defer t.ep.mu.Unlock()
	if t.canceled {
		return false
	}
	t.stop = stop
	return true
}

// Ring-full retries of a transfer's inner I/O: slots free up as other
// completions are delivered. Past this, the transfer fails (it could only
// wait for its own caller otherwise).
const (
	fullRetries = 12
	fullBackoff = 50 * time.Microsecond
)

// Do runs op on the Pump's ring as t's I/O in progress and waits for its
// completion; a cancel of t cancels op. A transfer canceled before op
// starts gets a Completion with ErrCanceled without starting it; a closed
// ring counts as a cancel (its Close canceled every request). The error is
// the ring's refusal of op (after a few retries while the ring is full),
// or of the wait. While op runs it takes a second ring slot besides t's.
func (t *Transfer) Do(op ioring.Op) (ioring.Completion, error) {
	if !t.made() {
		return ioring.Completion{}, errNotMade("transfer", "Transfer", t == nil, "a Pump makes transfers and hands them to Runner.Run")
	}
	e := t.ep
	var q ioring.Request
	var err error
	backoff := fullBackoff
	for try := 0; ; try++ {
		if t.isCanceled() {
			return ioring.Completion{Err: ErrCanceled}, nil
		}
		q, err = t.p.ring.Start(op)
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
		return ioring.Completion{}, errorf("usb: endpoint %#02x: %w", e.desc.Address, err)
	}
	e.mu.Lock()
	t.inner = q
	canceled := t.canceled
	e.mu.Unlock()
	if canceled {
		_ = q.Cancel()
	}
	c, err := q.Wait(context.Background())
	e.mu.Lock()
	t.inner = ioring.Request{}
	e.mu.Unlock()
	if err != nil {
		return ioring.Completion{}, errorf("usb: endpoint %#02x: wait: %w", e.desc.Address, err)
	}
	return c, nil
}
