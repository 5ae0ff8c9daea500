//go:build linux && (amd64 || arm64 || riscv64 || loong64)

package usbfs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cancelio/cancelio/ioring"
)

// Endpoint is a bulk or interrupt endpoint of an open Device. Its methods
// are safe for concurrent use; transfers on one endpoint go to the kernel
// in submission order, at most Config.Depth of them at once.
type Endpoint struct {
	d  *Device
	es *epState // shared by every Endpoint value of this address
	// Desc is the endpoint's descriptor.
	Desc EndpointDescriptor
	// Interface and Alternate locate the endpoint in the active
	// configuration. Claim the interface before transferring.
	Interface, Alternate int

	maxURB      int // the largest URB, a multiple of the packet size for bulk
	maxTransfer int // the largest transfer
}

// epState is the transfers of one endpoint address. Lock order: es.mu,
// then a transfer's mu, then Device.mu.
type epState struct {
	// mu orders submissions (the URBs of a transfer go to the kernel
	// together, and transfers in the order they were accepted) and guards
	// the fields below and each transfer's where and next.
	mu         sync.Mutex
	pending    int       // transfers started or waiting
	inKernel   int       // of those, transfers started
	head, tail *transfer // transfers waiting for a place in the kernel, oldest first
}

// epIndex maps an endpoint address to its slot in Device.eps: the number,
// and the direction bit as bit 4.
func epIndex(addr uint8) int { return int(addr&0x0f) | int(addr&0x80)>>3 }

// TransferOptions qualify one transfer. The zero value is a transfer whose
// completion goes to the ring's completion queue, with no token, deadline or
// user value.
type TransferOptions struct {
	Token    *ioring.Token // cancels the transfer with others
	Deadline time.Duration // after submission; the result is then ioring.ErrTimeout
	User     any           // handed back in the ioring.Completion
	// Await submits with Ring.Start instead of Ring.Submit: the completion
	// goes to Request.Wait only.
	Await bool
	// ZeroPacket ends an OUT transfer whose length is a multiple of the
	// packet size with a zero-length packet (USBDEVFS_URB_ZERO_PACKET), so
	// that the device sees where it ends.
	ZeroPacket bool
}

// MaxTransfer returns the largest transfer the endpoint accepts, in bytes.
func (e *Endpoint) MaxTransfer() int { return e.maxTransfer }

// String describes the endpoint.
func (e *Endpoint) String() string { return e.Desc.String() }

// Submit starts a transfer: from buf to the device on an OUT endpoint, from
// the device into buf on an IN endpoint. It returns at once with the
// transfer's request; the completion (bytes moved and the result, see the
// package doc) follows exactly once, through the ring's queue or, with
// o.Await, to Request.Wait. buf belongs to the transfer until then.
//
// Bad input (an empty IN buffer, a transfer larger than MaxTransfer, a
// closed device) is refused with an error before any ioctl; so is a transfer
// on a device already seen disconnected (ErrNoDevice), and one that
// would take the memory of the transfers already accepted past the usbfs
// budget (an error wrapping ioring.ErrFull: retry after completions). A
// refusal of the kernel's at submission completes the request with it
// instead.
func (e *Endpoint) Submit(buf []byte, o TransferOptions) (ioring.Request, error) {
	t, err := e.newTransfer(buf, o.ZeroPacket)
	if err != nil {
		return ioring.Request{}, err
	}
	d := e.d
	if err := d.begin(t); err != nil {
		return ioring.Request{}, err
	}
	op := ioring.Foreign(t.discard).WithUser(o.User)
	tokenCanceled := false
	if o.Token != nil {
		if o.Token.Canceled() {
			// Tokens cover the future: nothing reaches the kernel. The
			// completion is posted here because ioring (as of bc51294)
			// completes a foreign request refused by a canceled token
			// with a nil error.
			tokenCanceled = true
			op = ioring.Foreign(nil).WithUser(o.User)
		} else {
			op = op.WithToken(o.Token)
		}
	}
	if o.Deadline != 0 {
		op = op.WithDeadline(o.Deadline)
	}
	var req ioring.Request
	if o.Await {
		req, err = d.ring.Start(op)
	} else {
		req, err = d.ring.Submit(op)
	}
	if err != nil {
		d.end(t)
		return ioring.Request{}, &OpError{Op: "submit " + e.String(), Err: err}
	}
	if tokenCanceled {
		d.ring.Complete(req, 0, ioring.ErrCanceled)
		d.end(t)
		return req, nil
	}
	if !req.Pending() {
		// Its token was canceled: the ring completed it without us.
		d.end(t)
		return req, nil
	}
	d.mu.Lock()
	t.req = req
	cancelAsked := t.cancelAsked
	d.mu.Unlock()
	if cancelAsked {
		// CancelAll or Close looked for it before its request was
		// recorded: cancel it through the ring now, as they would have
		// (the hook marks it canceled, and it completes below).
		req.Cancel()
	}
	es := e.es
	es.mu.Lock()
	es.pending++
	t.mu.Lock()
	canceled := t.canceled
	t.mu.Unlock()
	switch {
	case canceled:
		// Canceled (by its deadline, CancelAll or Close) before it was
		// queued: it never reaches the kernel.
		es.completeLocked(t)
	case d.depth == 0 || es.inKernel < d.depth:
		es.inKernel++
		t.where = tStarted
		if t.start() {
			es.completeLocked(t)
		}
	default:
		t.where = tWaiting
		if es.tail != nil {
			es.tail.next = t
		} else {
			es.head = t
		}
		es.tail = t
	}
	es.mu.Unlock()
	return req, nil
}

// Transfer runs one transfer (see Submit) and waits for it; ctx ending
// cancels it, and Transfer still waits for the completion, so buf is free
// when it returns. It returns the bytes moved, with the transfer's error.
func (e *Endpoint) Transfer(ctx context.Context, buf []byte) (int, error) {
	req, err := e.Submit(buf, TransferOptions{Await: true})
	if err != nil {
		return 0, err
	}
	c, err := req.Wait(ctx)
	if err != nil {
		return 0, err
	}
	return c.N, c.Err
}

// Read is Transfer on an IN endpoint; on an OUT endpoint it fails.
func (e *Endpoint) Read(ctx context.Context, buf []byte) (int, error) {
	if !e.Desc.In() {
		return 0, invalid("read "+e.String(), "not an IN endpoint")
	}
	return e.Transfer(ctx, buf)
}

// Write is Transfer on an OUT endpoint; on an IN endpoint it fails.
func (e *Endpoint) Write(ctx context.Context, buf []byte) (int, error) {
	if e.Desc.In() {
		return 0, invalid("write "+e.String(), "not an OUT endpoint")
	}
	return e.Transfer(ctx, buf)
}

// Pending returns the number of transfers submitted on the endpoint's
// address and not yet completed.
func (e *Endpoint) Pending() int {
	e.es.mu.Lock()
	defer e.es.mu.Unlock()
	return e.es.pending
}

// ClearHalt clears the endpoint's halt (USBDEVFS_CLEAR_HALT) after a
// transfer ended with ErrStall, and resets its data toggle. No transfer may
// be pending on the endpoint (let them complete or cancel them: on a
// halted endpoint they all end with ErrStall): it refuses with an error
// wrapping ioring.ErrInvalid otherwise. Transfers submitted while it runs
// wait until it returns.
func (e *Endpoint) ClearHalt() error {
	op := "clear halt " + e.String()
	if err := e.d.use(op); err != nil {
		return err
	}
	defer e.d.calls.Done()
	es := e.es
	es.mu.Lock()
	defer es.mu.Unlock()
	if es.pending > 0 {
		return invalid(op, "%d transfers are pending on it", es.pending)
	}
	return e.d.controlErr(op, ioctlU32(e.d.fd, ioctlClearHalt, uint32(e.Desc.Address)))
}

// where is the stage of a transfer, guarded by its epState's mu.
type where uint8

const (
	tNew      where = iota // accepted, not queued yet
	tWaiting               // waiting for a place in the kernel
	tStarted               // its URBs go, or went, to the kernel
	tComplete              // its completion is posted
)

// transfer is one transfer in flight: one URB, or several for a split bulk
// transfer. Its URBs and buffer stay pinned until every URB is reaped.
type transfer struct {
	d      *Device
	es     *epState
	req    ioring.Request // set once the ring accepted it; guarded by d.mu
	buf    []byte
	cost   int  // what it takes of the usbfs memory budget
	posted bool // post counted it out of Device.unposted (the reaper's)
	urbs   []urb
	one    [1]urb  // urbs for the common one-URB transfer
	done   []bool  // done[i]: urbs[i] was reaped
	one1   [1]bool // done for one URB
	pin    runtime.Pinner

	where where     // guarded by es.mu
	next  *transfer // the next waiting transfer; guarded by es.mu

	// cancelAsked: CancelAll or Close found it accepted by the ring but
	// its request not yet recorded (req); Submit cancels it. Guarded by
	// d.mu.
	cancelAsked bool

	mu        sync.Mutex // guards the fields below and done
	submitted int        // URBs handed to the kernel
	reaped    int        // of those, URBs reaped
	running   bool       // the submit loop has not ended
	canceled  bool       // the cancel hook ran
	submitErr error      // the kernel refused a URB
	finished  bool       // every URB is back: the transfer can be completed
}

// urbOverhead approximates what usbfs charges to the memory budget for a
// URB besides its buffer (struct urb and usbfs's struct async).
const urbOverhead = 512

// newTransfer checks a transfer and lays out its URBs.
func (e *Endpoint) newTransfer(buf []byte, zlp bool) (*transfer, error) {
	op := "submit " + e.String()
	d := e.d
	switch {
	case e.Desc.In() && len(buf) == 0:
		return nil, invalid(op, "an IN transfer needs a buffer")
	case len(buf) > e.maxTransfer:
		why := ""
		if e.Desc.Type() == Bulk && !d.caps.Has(CapBulkContinuation) {
			why = " (no USBDEVFS_CAP_BULK_CONTINUATION: cannot split)"
		}
		return nil, invalid(op, "%d bytes; at most %d%s", len(buf), e.maxTransfer, why)
	case zlp && (e.Desc.In() || e.Desc.Type() == Control):
		return nil, invalid(op, "ZeroPacket on an IN or control endpoint")
	case e.Desc.Type() == Control && len(buf) < SetupSize:
		return nil, invalid(op, "%d bytes: a control transfer starts with its %d-byte setup packet", len(buf), SetupSize)
	case e.Desc.Type() == Control && len(buf) < SetupSize+int(binary.LittleEndian.Uint16(buf[6:])):
		return nil, invalid(op, "%d bytes: less than the setup packet and its wLength of %d", len(buf), binary.LittleEndian.Uint16(buf[6:]))
	case zlp && !d.caps.Has(CapZeroPacket):
		return nil, &OpError{Op: op, Err: fmt.Errorf("ZeroPacket: %w", ioring.ErrNotSupported)}
	}
	n := max(1, (len(buf)+e.maxURB-1)/e.maxURB)
	t := &transfer{d: d, es: e.es, buf: buf, running: true, cost: len(buf) + n*urbOverhead}
	if n == 1 {
		t.urbs, t.done = t.one[:], t.one1[:]
	} else {
		t.urbs, t.done = make([]urb, n), make([]bool, n)
	}
	typ := urbTypeBulk
	switch e.Desc.Type() {
	case Interrupt:
		typ = urbTypeInterrupt
	case Control:
		typ = urbTypeControl // one URB: maxURB holds the largest
	}
	for i := range t.urbs {
		u := &t.urbs[i]
		u.typ, u.endpoint = typ, e.Desc.Address
		u.setBuffer(buf[min(i*e.maxURB, len(buf)):min((i+1)*e.maxURB, len(buf))])
		if i > 0 {
			u.flags |= urbBulkContinuation
		}
		if e.Desc.In() && i < n-1 {
			u.flags |= urbShortNotOK
		}
		if zlp && i == n-1 {
			u.flags |= urbZeroPacket
		}
	}
	return t, nil
}

// begin registers t with the device; it fails once Close has begun, once
// the device is gone, and when t does not fit in the memory budget next to
// the transfers already accepted.
func (d *Device) begin(t *transfer) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.closing:
		return &OpError{Op: "submit", Err: ErrClosed}
	case d.gone.Load():
		return &OpError{Op: "submit", Err: ErrNoDevice}
	case d.charged+t.cost > d.budget:
		return &OpError{Op: "submit", Err: fmt.Errorf("%w: %d bytes of transfers in flight and %d more exceed the usbfs memory budget of %d (usbcore.usbfs_memory_mb)",
			ioring.ErrFull, d.charged, t.cost, d.budget)}
	}
	d.charged += t.cost
	d.active[t] = struct{}{}
	d.unposted.Add(1)
	return nil
}

// end unregisters t, after its completion was posted.
func (d *Device) end(t *transfer) {
	if !t.posted {
		d.unposted.Add(-1)
	}
	d.mu.Lock()
	d.charged -= t.cost
	delete(d.active, t)
	if len(d.active) == 0 && d.idle != nil {
		close(d.idle)
		d.idle = nil
	}
	d.mu.Unlock()
}

// CancelAll cancels every transfer of the device accepted so far, waiting
// or in the kernel, like Close without closing. It requests and returns;
// each transfer still completes exactly once (ioring.ErrCanceled, or its
// real result when it won the race). Transfers submitted later run
// normally. It cancels through the ring (ioring.Ring.Cancel), as any other
// cancel: a transfer canceled before (Request.Cancel, its token, its
// deadline, a context) keeps that first cause, and a later cancel of one
// CancelAll canceled finds nothing left (ioring.ErrNotFound). Its error
// is the ring's: a *ioring.HookPanicError should a cancel hook panic. A
// closed ring has canceled every transfer already: that is no error.
func (d *Device) CancelAll() error {
	return d.cancelActive()
}

// cancelActive cancels every transfer in d.active through the ring, which
// runs the hook (discard) of each it had not canceled yet. A transfer whose
// request is not recorded yet is marked for Submit to cancel (cancelAsked).
// ErrClosed from the ring is no error: once its backend is closed the ring
// has drained, so every request it accepted has completed.
func (d *Device) cancelActive() error {
	d.mu.Lock()
	reqs := make([]ioring.Request, 0, len(d.active))
	for t := range d.active {
		if t.req.Ring() != nil {
			reqs = append(reqs, t.req)
		} else {
			t.cancelAsked = true
		}
	}
	d.mu.Unlock()
	if _, err := d.ring.Cancel(reqs...); err != nil && !errors.Is(err, ioring.ErrClosed) {
		return err
	}
	return nil
}

// start submits t's URBs in order and reports whether t is finished
// already (the kernel refused its first URB, or it was canceled before).
// A URB may be reaped before the next is submitted; the cancel hook may
// run at any point (before the first URB, it leaves nothing to submit).
// es.mu held: the URBs of one transfer go to the kernel together.
func (t *transfer) start() bool {
	d := t.d
	t.pin.Pin(&t.urbs[0])
	if len(t.buf) > 0 {
		t.pin.Pin(&t.buf[0])
	}
	t.mu.Lock()
	for i := range t.urbs {
		if t.canceled {
			break
		}
		u := &t.urbs[i]
		addr := urbAddr(u)
		d.mu.Lock()
		d.inflight[addr] = partRef{t, i}
		d.mu.Unlock()
		if err := submitURB(d.fd, u); err != nil {
			d.mu.Lock()
			delete(d.inflight, addr)
			d.mu.Unlock()
			switch err {
			case unix.ENODEV:
				d.gone.Store(true)
				t.submitErr = ErrNoDevice
			case unix.ENOMEM:
				// Other usbfs users of the system took the budget.
				t.submitErr = &OpError{Op: fmt.Sprintf("submit URB to %#02x", u.endpoint),
					Err: fmt.Errorf("%w: %w: the usbfs memory budget (usbcore.usbfs_memory_mb) is exhausted", ioring.ErrFull, err)}
			default:
				t.submitErr = &OpError{Op: fmt.Sprintf("submit URB to %#02x", u.endpoint), Err: err}
			}
			break
		}
		t.submitted++
	}
	t.running = false
	var discard []partRef
	if t.submitErr != nil && t.submitted > t.reaped && !t.canceled {
		// End the parts already in the kernel.
		t.canceled = true
		discard = t.pendingLocked()
	}
	fin := t.finishLocked()
	t.mu.Unlock()
	d.queueDiscard(discard)
	return fin
}

// completeLocked posts t's completion and gives its place in the kernel to
// the transfers waiting; one that finishes as it starts is completed in
// turn. es.mu held.
func (es *epState) completeLocked(t *transfer) {
	depth := t.d.depth
	for t != nil {
		if t.where == tStarted {
			es.inKernel--
		}
		t.where = tComplete
		es.pending--
		t.post()
		t = nil
		for es.head != nil && t == nil && (depth == 0 || es.inKernel < depth) {
			n := es.head
			es.head, n.next = n.next, nil
			if es.head == nil {
				es.tail = nil
			}
			es.inKernel++
			n.where = tStarted
			if n.start() {
				t = n
			}
		}
	}
}

// unlinkLocked removes waiting t from the queue. es.mu held.
func (es *epState) unlinkLocked(t *transfer) {
	var prev *transfer
	for p := es.head; p != t; p = p.next {
		prev = p
	}
	if prev != nil {
		prev.next = t.next
	} else {
		es.head = t.next
	}
	if es.tail == t {
		es.tail = prev
	}
	t.next = nil
}

// post posts t's completion, then lets Close know.
func (t *transfer) post() {
	n, err := t.result()
	t.pin.Unpin()
	// Counted out before its completion shows, so that a caller that has
	// seen every completion finds none pending (Device.Pending).
	t.posted = true
	t.d.unposted.Add(-1)
	t.d.ring.Complete(t.req, n, err)
	t.d.end(t)
}

// pendingLocked returns t's URBs in the kernel, last first: discarding them
// in that order keeps a later part from taking data while an earlier one is
// being discarded.
func (t *transfer) pendingLocked() []partRef {
	refs := make([]partRef, 0, t.submitted-t.reaped)
	for i := t.submitted - 1; i >= 0; i-- {
		if !t.done[i] {
			refs = append(refs, partRef{t, i})
		}
	}
	return refs
}

// discard is t's cancel hook: a transfer waiting for the kernel completes
// at once; one in the kernel has the device's discarder discard its URBs,
// and stops those not yet submitted. It does not wait for the discards
// (USBDEVFS_DISCARDURB waits for the host controller). The ring calls it
// outside its locks, maybe more than once and maybe after the transfer
// completed; CancelAll and Close reach it through the ring too. The reap
// that follows is the truth: a URB that completed first keeps its result.
func (t *transfer) discard() {
	es := t.es
	es.mu.Lock()
	if t.where == tWaiting {
		es.unlinkLocked(t)
		t.mu.Lock()
		t.canceled = true
		t.mu.Unlock()
		es.completeLocked(t)
		es.mu.Unlock()
		return
	}
	t.mu.Lock()
	es.mu.Unlock()
	if t.canceled || t.finished {
		t.mu.Unlock()
		return
	}
	t.canceled = true
	refs := t.pendingLocked()
	t.mu.Unlock()
	t.d.queueDiscard(refs)
}

// queueDiscard hands URBs to the discarder. The transfer they belong to is
// not finished, so Close is still waiting for it and has not stopped the
// discarder; Close's d.calls.Wait covers the queued discards.
func (d *Device) queueDiscard(refs []partRef) {
	if len(refs) == 0 {
		return
	}
	d.calls.Add(len(refs))
	d.dmu.Lock()
	d.discards = append(d.discards, refs...)
	d.dmu.Unlock()
	select {
	case d.discardWake <- struct{}{}:
	default:
	}
}

// discarder runs USBDEVFS_DISCARDURB for the cancel hooks, in the order
// they asked. Each call waits in the kernel until the host controller gives
// the URB back (usb_kill_urb, under the device lock, so discards cannot run
// in parallel anyway); doing it here lets a cancel request and return. A
// discarded URB is reapable when the ioctl returns, so the discarder reaps
// it at once rather than leave it to the reaper's next poll wake-up.
func (d *Device) discarder() {
	defer close(d.discarderDone)
	var batch []partRef
	for {
		select {
		case <-d.discardWake:
		case <-d.discardStop:
			return
		}
		d.dmu.Lock()
		batch, d.discards = d.discards, batch[:0]
		d.dmu.Unlock()
		for i, ref := range batch {
			ref.t.mu.Lock()
			done := ref.t.done[ref.i]
			ref.t.mu.Unlock()
			if !done {
				// EINVAL: reaped meanwhile. ENODEV: the device is gone
				// and its URBs end anyway.
				discardURB(d.fd, urbAddr(&ref.t.urbs[ref.i]))
			}
			batch[i] = partRef{} // let the transfer go
		}
		d.reapAll()
		// Only now: Close must not stop the reaper (and close the fd)
		// while this reap runs.
		for range batch {
			d.calls.Done()
		}
	}
}

// finishLocked reports whether t is finished (every submitted URB reaped,
// the submit loop over) and claims the right to complete it.
func (t *transfer) finishLocked() bool {
	if t.running || t.finished || t.reaped < t.submitted {
		return false
	}
	t.finished = true
	return true
}

// reaped1 records that URB i of t was reaped.
func (t *transfer) reaped1(i int) {
	t.mu.Lock()
	t.done[i] = true
	t.reaped++
	fin := t.finishLocked()
	t.mu.Unlock()
	if fin {
		t.es.mu.Lock()
		t.es.completeLocked(t)
		t.es.mu.Unlock()
	}
}

// result adds up t's URBs, in order, into its completion.
func (t *transfer) result() (int, error) {
	n := 0
	gone := t.d.gone.Load()
	for i := 0; i < t.submitted; i++ {
		u := &t.urbs[i]
		n += int(u.actualLength)
		switch st := unix.Errno(-u.status); {
		case u.status == 0:
			if u.actualLength < u.bufferLength {
				return n, nil // a short transfer ends it
			}
		case st == unix.EREMOTEIO:
			return n, nil // a short packet in a SHORT_NOT_OK part ends it
		case (st == unix.ENOENT || st == unix.ECONNRESET) && t.submitErr != nil:
			return n, t.submitErr // discarded because a later part failed
		default:
			return n, statusError(u.status, gone)
		}
	}
	switch {
	case t.submitErr != nil:
		return n, t.submitErr
	case t.submitted < len(t.urbs):
		return n, ioring.ErrCanceled // canceled before every part was submitted
	}
	return n, nil
}

// statusError maps a reaped URB's status (negative errno) to the
// transfer's error; gone says whether the device was seen disconnected.
func statusError(status int32, gone bool) error {
	switch st := unix.Errno(-status); st {
	case 0:
		return nil
	case unix.ENOENT, unix.ECONNRESET:
		return ioring.ErrCanceled
	case unix.EPIPE:
		return ErrStall
	case unix.EOVERFLOW:
		return ErrBabble
	case unix.ENODEV, unix.ESHUTDOWN:
		return ErrNoDevice
	case unix.EPROTO, unix.EILSEQ, unix.ETIME:
		// Host controllers end a disconnected device's URBs with protocol
		// errors before the hub has noticed the disconnect.
		if gone {
			return ErrNoDevice
		}
	}
	return &StatusError{Errno: unix.Errno(-status)}
}

// Grace for a protocol error to turn into a disconnect: dummy_hcd and real
// host controllers end URBs with -EPROTO at once, the hub driver marks the
// device gone a few milliseconds later.
const (
	disconnectGrace = 500 * time.Millisecond
	disconnectPoll  = 2 * time.Millisecond
)

// reaper waits for reapable URBs with a poll request on the usbfs fd
// (POLLOUT) through the ring, reaps them all and posts each finished
// transfer. Where the ring refuses the poll request (closed, full) it polls
// the fd itself. It exits when Close asks, or once the device is gone and
// no URB is left in the kernel.
func (d *Device) reaper() {
	defer close(d.reaperDone)
	ringOK := true
	for {
		d.mu.Lock()
		if d.stop || (d.gone.Load() && len(d.inflight) == 0) {
			d.mu.Unlock()
			return
		}
		var req ioring.Request
		var err error
		if ringOK {
			req, err = d.ring.Start(ioring.Poll(d.fd, unix.POLLOUT))
			if errors.Is(err, ioring.ErrClosed) {
				ringOK = false // the ring is gone for good
			}
		}
		d.pollReq = req
		d.mu.Unlock()
		if ringOK && err == nil {
			req.Wait(context.Background())
		} else {
			// Bounded, so that Close's stop is seen.
			fds := []unix.PollFd{{Fd: int32(d.fd), Events: unix.POLLOUT}}
			unix.Poll(fds, 20)
		}
		d.reapAll()
		if d.gone.Load() {
			// A gone device's fd polls ready at once (POLLHUP); URBs still
			// in the kernel end soon.
			time.Sleep(time.Millisecond)
		}
	}
}

// reapAll reaps every ready URB.
func (d *Device) reapAll() {
	for {
		addr, err := reapURB(d.fd)
		switch err {
		case nil:
		case unix.ENODEV:
			d.gone.Store(true)
			return
		default: // EAGAIN: none ready
			return
		}
		d.mu.Lock()
		ref, ok := d.inflight[addr]
		delete(d.inflight, addr)
		d.mu.Unlock()
		if !ok {
			continue // not ours: cannot happen, the fd is private
		}
		u := &ref.t.urbs[ref.i]
		if st := unix.Errno(-u.status); (st == unix.EPROTO || st == unix.EILSEQ || st == unix.ETIME) && !d.gone.Load() && !d.probeGone() {
			// Maybe a disconnect the hub has not seen yet: decide later.
			d.calls.Add(1)
			go d.settle(ref)
			continue
		}
		ref.t.reaped1(ref.i)
	}
}

// probeGone asks usbfs whether the device is still connected (every ioctl
// but the reaps fails with ENODEV once it is not).
func (d *Device) probeGone() bool {
	if _, err := getCapabilities(d.fd); err == unix.ENODEV {
		d.gone.Store(true)
	}
	return d.gone.Load()
}

// settle records a URB that ended with a protocol error once the device is
// seen disconnected (then the transfer ends with ErrNoDevice), or after
// disconnectGrace (then with the error).
func (d *Device) settle(ref partRef) {
	defer d.calls.Done()
	d.awaitGone()
	ref.t.reaped1(ref.i)
}

// awaitGone reports whether the device is seen disconnected within
// disconnectGrace.
func (d *Device) awaitGone() bool {
	deadline := time.Now().Add(disconnectGrace)
	for !d.probeGone() && time.Now().Before(deadline) {
		time.Sleep(disconnectPoll)
	}
	return d.gone.Load()
}

// controlErr is ioctlErr for an ioctl that runs a control transfer
// (USBDEVFS_CLEAR_HALT, USBDEVFS_CONTROL): a protocol error there may be a
// disconnect the hub has not reported yet, as for a URB (see settle), and
// is ErrNoDevice once the device is seen gone within disconnectGrace.
func (d *Device) controlErr(op string, err error) error {
	switch err {
	case unix.EPROTO, unix.EILSEQ, unix.ETIME, unix.ESHUTDOWN:
		if d.gone.Load() || d.awaitGone() {
			return &OpError{Op: op, Err: fmt.Errorf("%w (%v)", ErrNoDevice, err)}
		}
	}
	return d.ioctlErr(op, err)
}
