package usbsim

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cancelio/cancelio/usb"
)

// ServeGadget serves the scanner through g, a USB gadget with FunctionFS
// endpoint files, and plugs g in (g must not be plugged in yet): the host
// side of the machine's USB stack (usbfs, libusb) then finds the device and
// talks to the same scanner personality as NewScanner's socketpairs carry,
// with the same fault injection. The caller must Close the Scanner, then
// close g, which it keeps owning. Info reports cfg's identity; it should
// match g's descriptors.
//
// USB frames the transfers, with no header byte and no replies:
//
//   - Bulk IN and interrupt IN: each message of the socketpair transport is
//     one write to the endpoint file. A message shorter than MaxTransfer
//     whose length is a nonzero multiple of wMaxPacketSize is followed by a
//     zero-length packet, so a host reading with buffers of MaxTransfer
//     bytes (interrupt IN: InterruptMaxPacketSize) gets exactly the
//     transfers a socketpair host gets. Image data comes in MaxTransfer
//     pieces; a larger host buffer gathers several, up to a short packet.
//   - Bulk OUT: a command is one host transfer, ended by a short packet: a
//     host sending a nonzero multiple of wMaxPacketSize bytes, fewer than
//     MaxTransfer, ends it with a zero-length packet (usbfs
//     USBDEVFS_URB_ZERO_PACKET, or a zero-length bulk transfer after it).
//     USB acknowledges the transfer once the device has taken it; the
//     device acts on it after the latency and bandwidth faults allow, and
//     takes the next one only then.
//
// Faults map onto the real stack:
//
//   - Stall halts the endpoint in the controller: the host's transfers fail
//     with EPIPE (libusb: LIBUSB_ERROR_PIPE) until it clears the halt
//     (USBDEVFS_CLEAR_HALT); then the endpoint carries on with the data
//     queued meanwhile. An IN endpoint first delivers the write it has
//     queued to the controller, as a socket delivers its messages, so a
//     stall shows once the host has read that; a second Stall before the
//     host cleared the first likewise halts the endpoint again after the
//     next transfer. ClearHalt and Endpoints return ErrNotSupported: the
//     host works through USB.
//   - Hang: the device queues no more IN writes (one already queued is
//     delivered when the host reads, as a socket's messages are), takes no
//     more OUT transfers (the host's stay pending, NAKed) and, when the call
//     returns, no OUT transfer is taken until Resume.
//   - Unplug unbinds the gadget from its controller: the host's pending
//     transfers end with ENODEV, EPROTO or ESHUTDOWN and the device node
//     goes away; Replug binds it again and the host enumerates a new
//     device (a new address and usbfs node).
//
// A Stall or Hang that races with a host transfer the device is taking on
// bulk OUT may cut that transfer: FunctionFS does not report how much of a
// withdrawn request moved. IN writes are never withdrawn while plugged in.
func ServeGadget(g Gadget, cfg Config) (*Scanner, error) {
	if g == nil {
		return nil, errors.New("usbsim: ServeGadget: nil gadget")
	}
	in, out, intr := g.EndpointFiles()
	if in == nil || out == nil || intr == nil {
		return nil, errors.New("usbsim: ServeGadget: gadget without endpoint files")
	}
	s, err := newScanner(cfg)
	if err != nil {
		return nil, err
	}
	s.gadget = g
	if err := s.Replug(); err != nil {
		return nil, err
	}
	return s, nil
}

// ffsPlug plugs the gadget in and starts the goroutines of a new plug-in.
// Call with plugMu held and no current plug-in.
func (s *Scanner) ffsPlug() error {
	in, out, intr := s.gadget.EndpointFiles()
	p := &plug{gone: make(chan struct{})}
	files := [3]*os.File{out, in, intr} // in the order of s.endpointInfos
	for i, info := range s.endpointInfos() {
		rc, err := files[i].SyscallConn()
		if err != nil {
			return fmt.Errorf("usbsim: gadget endpoint file %s: %w", files[i].Name(), err)
		}
		*p.slots()[i] = &endpoint{info: info, ffs: &ffsEndpoint{file: files[i], rc: rc}}
	}
	if ep0 := s.gadget.ControlFile(); ep0 != nil {
		rc, err := ep0.SyscallConn()
		if err != nil {
			return fmt.Errorf("usbsim: gadget control file %s: %w", ep0.Name(), err)
		}
		p.ctrl = &endpoint{info: Endpoint{Type: EndpointType(usb.Control), MaxPacketSize: maxPacket0, MaxTransfer: ControlMaxData, FD: -1},
			ffs: &ffsEndpoint{file: ep0, rc: rc}}
	}
	if err := s.gadget.Plug(); err != nil {
		return fmt.Errorf("usbsim: plug gadget: %w", err)
	}
	s.install(p, s.ffsOutLoop, s.ffsInLoop, s.ffsCtrlLoop)
	return nil
}

// FunctionFS's ep0 events: struct usb_functionfs_event of
// <linux/usb/functionfs.h>, the setup packet and then the event type.
const (
	ffsEventSize  = 12
	ffsEventType  = 8 // offset of the type
	ffsEventSetup = 4 // FUNCTIONFS_SETUP
)

// ffsCtrlLoop serves FunctionFS's ep0 for plug-in p until p is unplugged:
// it reads the function's events and answers each setup request that
// reaches it. The kernel's USB stack answers the standard requests; with
// FUNCTIONFS_ALL_CTRL_RECIP, vendor requests to the device come here as
// well as those to the interface, and the scanner answers them as the
// socketpair transport does (vendorAccepts, vendorLocked). An unplug
// queues events (unbind, disable) that end the wait for the next one.
func (s *Scanner) ffsCtrlLoop(p *plug, ep *endpoint) {
	defer p.wg.Done()
	ffsShieldThread()
	var evs [4 * ffsEventSize]byte
	for {
		n, err := ffsEP0(p, ep, false, evs[:])
		s.mu.Lock()
		gone := s.plug != p
		s.mu.Unlock()
		if gone {
			return
		}
		if err != nil {
			// EIDRM: a request the host gave up on while unplugged.
			s.ffsPause(p, err)
			continue
		}
		for i := 0; i+ffsEventSize <= n; i += ffsEventSize {
			if evs[i+ffsEventType] == ffsEventSetup {
				su, _ := usb.ParseSetup(evs[i:])
				s.ffsSetup(p, ep, su)
			}
		}
	}
}

// ffsShieldThread locks the calling goroutine to its thread for good (the
// thread ends with it, and its signal mask with it) and blocks SIGURG
// there: Go's runtime preempts goroutines with it, at any moment, and a
// signal that lands in a FunctionFS call makes FunctionFS dequeue the
// request and fail with EINTR, whatever part of the transfer had moved:
// on ep0, a host's data stage that had just arrived is lost and the setup
// stays pending; on a data endpoint, see ffsLockThread. ep0's calls are
// never withdrawn on purpose, so nothing is lost by keeping signals off
// them; the runtime preempts the goroutine at its next function call
// instead.
func ffsShieldThread() {
	runtime.LockOSThread()
	var set unix.Sigset_t
	sigAdd(&set, unix.SIGURG)
	_ = unix.PthreadSigmask(unix.SIG_BLOCK, &set, nil)
}

// ffsKickSignal is the signal ffsKick withdraws a blocking call on a data
// endpoint with. It is not SIGURG, which the endpoints' threads block (see
// ffsLockThread), but a real-time signal that neither Go's runtime (SIGURG
// to preempt, 33 to run a syscall on every thread) nor the C libraries
// (glibc 32 and 33, musl 34) send. Go's runtime catches it and, unless the
// program asked for it with os/signal, does nothing with it: a kick that
// lands after the call has returned does no harm.
const ffsKickSignal = unix.Signal(40)

// sigAdd adds sig to set, whose words are 64 bits wide on 64-bit
// platforms and 32 on the others (1024 bits in all).
func sigAdd(set *unix.Sigset_t, sig unix.Signal) {
	w := uint(1024 / len(set.Val))
	n := uint(sig) - 1
	set.Val[n/w] |= 1 << (n % w)
}

// ffsSetup answers setup request su on ep0. The request waits, as on the
// socketpair transport, for the latency fault and for the end of a hang:
// the host's transfer stays pending meanwhile (an OUT request in its data
// stage). A request the host abandons meanwhile is superseded by its next
// one (FunctionFS then fails the late answer, which does no harm).
func (s *Scanner) ffsSetup(p *plug, ep *endpoint, su usb.Setup) {
	var one [1]byte
	if !vendorAccepts(su) {
		// A call in the wrong direction stalls the request: a read for an
		// IN request, a write for an OUT one. It fails with EL2HLT when
		// it did; anything else leaves the host's request unanswered until
		// its timeout, which StallErrors reports.
		_, err := ffsEP0(p, ep, !su.IsIn(), one[:])
		if err != unix.EL2HLT {
			s.mu.Lock()
			s.stallErrs = append(s.stallErrs, fmt.Errorf("stall of %+v: %v", su, err))
			s.mu.Unlock()
		}
		return
	}
	if !s.awaitActLocked(p, time.Now(), int(su.Length)) {
		return
	}
	if su.IsIn() {
		in := s.vendorLocked(p, su, nil)
		s.changedLocked()
		s.mu.Unlock()
		s.kick(p)
		n, err := ffsEP0(p, ep, true, in)
		s.mu.Lock()
		switch {
		case err == nil && n == len(in):
			s.answersTaken++
		case err == nil:
			s.dataErrs = append(s.dataErrs, fmt.Errorf("data stage of %+v: %d of %d bytes: %w", su, n, len(in), ErrAnswerNotTaken))
		case err != ErrNoDevice:
			// The host abandoned the request, or the rig served its
			// data stage with a read for an abandoned OUT request (see
			// ErrAnswerNotTaken).
			s.dataErrs = append(s.dataErrs, fmt.Errorf("data stage of %+v: %w: %w", su, ErrAnswerNotTaken, err))
		}
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	data := make([]byte, su.Length)
	n, err := ffsEP0(p, ep, false, data)
	if err != nil {
		// The host gave up on it, or FunctionFS failed the read: either
		// way the request is dropped, and DataStageErrors says why.
		if err != ErrNoDevice {
			s.mu.Lock()
			s.dataErrs = append(s.dataErrs, fmt.Errorf("data stage of %+v: %w", su, err))
			s.mu.Unlock()
		}
		return
	}
	s.mu.Lock()
	if n != len(data) {
		// A host's data stage holds exactly wLength bytes; fewer is the
		// rig serving this read, which the host had abandoned, as the
		// data stage of its next request (see ErrShortDataStage):
		// FunctionFS checks for a newer setup and then queues the read
		// on ep0, and a setup that lands in between finds it queued after
		// dummy_hcd's sweep of stale requests; dummy_hcd takes ep0's
		// queue whatever its direction. For an OUT request the bytes are
		// its data stage, which the gadget then never reads for it, and
		// they run here, as they always did (TestGadgetControlWithheld
		// has its command run so); for an IN request they are this read's
		// unfilled buffer, sent to the host as its answer. Say so.
		s.dataErrs = append(s.dataErrs, fmt.Errorf("data stage of %+v: %d of %d bytes: %w", su, n, len(data), ErrShortDataStage))
	}
	if s.plug == p {
		s.vendorLocked(p, su, data[:n])
		s.changedLocked()
	}
	s.mu.Unlock()
	s.kick(p)
}

// ffsEP0Poll bounds each wait for ep0 to become ready (see ffsEP0).
const ffsEP0Poll = 20 * time.Millisecond

// ffsEP0 reads b from ep0's file, or with write writes it, until the call
// does not say EAGAIN or EINTR, or plug-in p is gone (then it returns
// ErrNoDevice).
// FunctionFS's ep0 can be polled, so Go opened it non-blocking. Its calls
// also say EAGAIN when another holds the function's mutex for a moment,
// and no readiness event follows that: each wait for one is bounded by
// ffsEP0Poll, after which the call is tried again.
func ffsEP0(p *plug, ep *endpoint, write bool, b []byte) (n int, err error) {
	f := ep.ffs.file
	call, wait, deadline := unix.Read, ep.ffs.rc.Read, f.SetReadDeadline
	if write {
		call, wait, deadline = unix.Write, ep.ffs.rc.Write, f.SetWriteDeadline
	}
	for {
		select {
		case <-p.gone:
			return 0, ErrNoDevice
		default:
		}
		_ = deadline(time.Now().Add(ffsEP0Poll)) // fails, harmlessly, on a file opened blocking
		// As if the call had said EAGAIN: a goroutine that ran only
		// after its deadline had passed (a slow guest, a loaded host)
		// finds wait refusing at once, without making the call, and must
		// try again, not take the deadline for an error: ffsSetup would
		// give up on the data stage, and FunctionFS would serve the
		// control loop's next read of events as that data stage.
		n, err = 0, unix.EAGAIN
		if ep.ffs.late != nil {
			ep.ffs.late()
		}
		cerr := wait(func(fd uintptr) bool {
			for {
				n, err = call(int(fd), b)
				// A signal (Go's runtime preempts with SIGURG) makes
				// FunctionFS dequeue the request and fail with EINTR;
				// the setup is still pending, and a caller that gave up
				// on it would next read ep0 for events and get the
				// host's data stage instead: make the call again.
				if err != unix.EINTR {
					return err != unix.EAGAIN
				}
			}
		})
		if err != unix.EAGAIN {
			if err == nil {
				err = cerr
			}
			return n, err
		}
		if cerr != nil && !errors.Is(cerr, os.ErrDeadlineExceeded) {
			return n, cerr
		}
	}
}

// ffsTeardown unbinds the gadget and stops the goroutines of p, which
// unplugLocked has detached. Call with plugMu held.
func (s *Scanner) ffsTeardown(p *plug) error {
	err := s.gadget.Unplug()
	if err != nil {
		err = fmt.Errorf("usbsim: unplug gadget: %w", err)
	}
	// Unbinding disables the endpoints, which fails the calls in progress
	// (ESHUTDOWN); a call begun just before the detach may wait for the
	// endpoint to be enabled again: withdraw it. No call starts on a
	// detached plug-in.
	s.ffsKick(p)
	p.wg.Wait()
	return err
}

// ffsKick withdraws every blocking call on p's endpoints that the state
// forbids now, and returns when they have returned.
func (s *Scanner) ffsKick(p *plug) {
	for _, ep := range p.endpoints() {
		for {
			s.mu.Lock()
			stop, tid := s.ffsMustStopLocked(p, ep), ep.ffs.tid
			s.mu.Unlock()
			if !stop {
				break
			}
			// A signal that lands before the thread is in the call is
			// lost; send again until the call has returned. Go's runtime
			// takes a stray one in its stride.
			if tid != 0 {
				_ = unix.Tgkill(os.Getpid(), tid, ffsKickSignal)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// ffsCall runs call, a blocking read or write of ep's file, if may (run
// under s.mu) allows it on the current plug-in p, with ep's op set so that
// ffsKick can withdraw it. It reports whether call ran.
func (s *Scanner) ffsCall(p *plug, ep *endpoint, op ffsOp, may func() bool, call func(fd int) (int, error)) (n int, err error, ran bool) {
	s.mu.Lock()
	if s.plug != p || !may() {
		s.mu.Unlock()
		return 0, nil, false
	}
	ep.ffs.op = op
	s.mu.Unlock()
	if cerr := ep.ffs.rc.Control(func(fd uintptr) { n, err = call(int(fd)) }); cerr != nil && err == nil {
		err = cerr
	}
	s.mu.Lock()
	ep.ffs.op = ffsIdle
	s.mu.Unlock()
	return n, err, true
}

// ffsLockThread locks the calling goroutine to its thread for good, with
// SIGURG blocked there (ffsShieldThread) and ffsKickSignal unblocked, and
// records the thread as ep's, for ffsKick's signals: only ffsKick
// withdraws a call on ep. A signal FunctionFS takes during a transfer
// dequeues the request and fails the call with EINTR without saying how
// much of it had moved: an IN write that the host had partly read would
// be sent again whole (the host would read its first part twice: the
// stream out of step), an OUT read would drop the part of a transfer it
// had taken. The runtime's SIGURG lands at any moment; ffsKick's come only
// when the call must stop anyway (an unplug; a hang or a stall on bulk
// OUT).
func (s *Scanner) ffsLockThread(ep *endpoint) {
	ffsShieldThread()
	var set unix.Sigset_t
	sigAdd(&set, ffsKickSignal)
	_ = unix.PthreadSigmask(unix.SIG_UNBLOCK, &set, nil)
	s.mu.Lock()
	ep.ffs.tid = unix.Gettid()
	s.mu.Unlock()
}

// ffsHalt halts ep in the controller: FunctionFS does it for a call in the
// wrong direction (a read of an IN file, a write of an OUT file), which
// fails with EBADMSG once the endpoint is halted (drivers/usb/gadget/
// function/f_fs.c, ffs_epfile_io).
func (s *Scanner) ffsHalt(p *plug, ep *endpoint) {
	var b [1]byte
	_, err, ran := s.ffsCall(p, ep, ffsHalt, func() bool { return ep.halted && !s.hung }, func(fd int) (int, error) {
		if ep.info.IsIn() {
			return unix.Read(fd, b[:])
		}
		return unix.Write(fd, b[:])
	})
	if !ran {
		return
	}
	if errors.Is(err, unix.EBADMSG) {
		s.mu.Lock()
		ep.halted = false // the controller holds the halt until the host clears it
		s.mu.Unlock()
		return
	}
	// EAGAIN: the controller still holds IN data for the host; try again
	// once it may have read it.
	s.ffsPause(p, err)
}

// ffsPause waits a little after a failed call, unless it was withdrawn
// (EINTR) or the state changes, so that a persistent error does not spin.
// A disabled endpoint (ESHUTDOWN: the host configured the device again, or
// it is being unplugged) makes the next call wait until it is enabled.
func (s *Scanner) ffsPause(p *plug, err error) {
	if err == nil || errors.Is(err, unix.EINTR) {
		return
	}
	s.mu.Lock()
	changed := s.changed
	s.mu.Unlock()
	sleep(time.Now().Add(10*time.Millisecond), changed, p.gone)
}

// ffsInLoop serves the IN endpoint ep of plug-in p until p is unplugged:
// the same plans as the socketpair transport's inLoop, one write each.
func (s *Scanner) ffsInLoop(p *plug, ep *endpoint) {
	defer p.wg.Done()
	s.ffsLockThread(ep)
	buf := make([]byte, ep.info.MaxTransfer)
	var t0 time.Time // when the message being planned became due to start
	for {
		s.mu.Lock()
		if s.plug != p {
			s.mu.Unlock()
			return
		}
		changed := s.changed
		switch {
		case s.hung:
			s.mu.Unlock()
			wait(changed, p.gone)
			continue
		case ep.halted:
			s.mu.Unlock()
			s.ffsHalt(p, ep)
			continue
		}
		m, due := s.awaitMessageLocked(p, ep, &t0, changed)
		if !due {
			continue // something changed: plan again
		}
		m.fill(buf)
		// The host may read the message, and act on it, before the write
		// returns: until then its image bytes count as handed, so that a
		// job whose last bytes the host has is no longer active for the
		// commands that follow (a status, the next scan).
		j := m.it.job
		_, err, ran := s.ffsCall(p, ep, ffsData, func() bool {
			if !s.stillDueLocked(p, ep, m) {
				return false
			}
			if j != nil {
				j.handed = int64(m.n)
			}
			return true
		}, func(fd int) (int, error) { return unix.Write(fd, buf[:m.n]) })
		if !ran {
			continue // stale plan
		}
		s.mu.Lock()
		if j != nil {
			j.handed = 0
		}
		if err != nil {
			s.mu.Unlock()
			s.ffsPause(p, err) // not sent: planned again
			continue
		}
		s.sentLocked(p, ep, m.it, m.off, m.n)
		hung := s.hung
		s.mu.Unlock()
		t0 = time.Time{}
		if hung {
			s.ffsKick(p) // HangAfter ran out: bulk OUT stops taking transfers
		}
		if s.ffsNeedsZLP(ep, m.n) {
			// Part of the message: it goes out whatever the state, unless
			// the plug-in is gone.
			_, err, _ := s.ffsCall(p, ep, ffsData, func() bool { return true },
				func(fd int) (int, error) { return unix.Write(fd, nil) })
			s.ffsPause(p, err)
		}
	}
}

// ffsNeedsZLP reports whether a message of n bytes on ep must be followed by
// a zero-length packet to end the host's transfer of MaxTransfer bytes.
func (s *Scanner) ffsNeedsZLP(ep *endpoint, n int) bool {
	if n == 0 || n >= ep.info.MaxTransfer {
		return false
	}
	if ep.info.Type == EndpointInterrupt {
		return n%InterruptMaxPacketSize == 0
	}
	switch {
	case n%BulkMaxPacketSize == 0: // a multiple of both speeds' packet size
		return true
	case n%64 == 0:
		return n%s.gadget.BulkMaxPacket() == 0
	}
	return false
}

// ffsOutLoop serves bulk OUT of plug-in p until p is unplugged: one read per
// host transfer, acted on as the socketpair transport's outLoop does.
func (s *Scanner) ffsOutLoop(p *plug, ep *endpoint) {
	defer p.wg.Done()
	s.ffsLockThread(ep)
	buf := make([]byte, ep.info.MaxTransfer)
	for {
		s.mu.Lock()
		if s.plug != p {
			s.mu.Unlock()
			return
		}
		changed, hung, halted := s.changed, s.hung, ep.halted
		s.mu.Unlock()
		switch {
		case hung:
			wait(changed, p.gone)
			continue
		case halted:
			s.ffsHalt(p, ep)
			continue
		}
		n, err, ran := s.ffsCall(p, ep, ffsData, func() bool { return !s.hung && !ep.halted },
			func(fd int) (int, error) { return unix.Read(fd, buf) })
		if !ran {
			continue
		}
		if err != nil {
			s.ffsPause(p, err)
			continue
		}
		if !s.awaitActLocked(p, time.Now(), n) {
			return
		}
		s.commandLocked(p, buf[:n])
		s.changedLocked()
		s.mu.Unlock()
	}
}
