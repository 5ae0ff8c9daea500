package usbsim

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"weak"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/usb"
)

// Open opens the simulated scanner s as a usb.Device whose transfers are
// real ring I/O on the scanner's endpoint fds (see the package doc for the
// wire format): an IN transfer is one readv of a message, an OUT transfer
// a writev of one message and the read of the device's reply. It is the
// simulator's backend of package usb (a usb.Runner under a usb.Pump), with
// the same results and errors as the usbfs and libusb backends.
//
// The Device uses the scanner's current plug-in: after s.Unplug its
// transfers fail with usb.ErrNoDevice for good; after s.Replug, open it
// again. Closing the Device does not close s, which owns the fds; close the
// Device first. It fails with an error wrapping ioring.ErrInvalid for a nil
// ring or scanner, usb.ErrNoDevice while s is unplugged, ErrClosed after
// s.Close and ErrNotSupported for a scanner served as a USB gadget (open
// that one with usb.Open).
//
// IN buffers shorter than the endpoint's MaxTransfer are served through a
// bounce buffer, so nothing is lost: a message longer than the buffer fills
// it, and the rest is the data of the endpoint's next transfers, this
// Device's or, after its Close, those of the next Device opened on the
// plug-in (as on a real bus, where the device's packets wait for the next
// IN token; a ClearHalt of the endpoint drops it, with the FIFO). Buffers
// of at least MaxTransfer get the data directly, without a copy. OUT
// buffers longer than MaxTransfer are refused (one OUT transfer is one
// message, one command to the scanner). usb.WithZeroPacket has no
// equivalent here: messages carry their length.
//
// The Device starts where usb.Open leaves a device: configuration 1, with
// interface 0 claimed at alternate setting 0. Open puts the scanner there,
// as usb.Open configures an unconfigured device and selects the
// interface's setting: a scanner an earlier Device left unconfigured, or
// at AltEventsOnly, is set back. The claim is the Device's until its
// Close: another Open of the same plug-in meanwhile fails with an error
// wrapping syscall.EBUSY, as usbfs refuses a second claim.
//
// Ring slots: each transfer in progress takes two of the ring's request
// slots, the transfer's own (a foreign request, which carries its token,
// deadline and cancel) and the read or write on the endpoint's socket that
// moves its data. Size ioring.Config.Entries for twice the transfers kept
// in flight; when the slots run out, a transfer fails with an error
// wrapping ioring.ErrFull.
func Open(ring *ioring.Ring, s *Scanner) (*usb.Device, error) {
	if ring == nil || s == nil {
		return nil, fmt.Errorf("usbsim: open device: %w: nil ring or scanner", ioring.ErrInvalid)
	}
	eps, addr, err := s.endpointsAt()
	if err != nil {
		if errors.Is(err, ErrNoDevice) {
			return nil, usb.ErrNoDevice
		}
		return nil, fmt.Errorf("usbsim: open device: %w", err)
	}
	info := s.Info()
	desc := usb.DeviceDesc{
		VendorID:     info.VendorID,
		ProductID:    info.ProductID,
		Manufacturer: info.Manufacturer,
		Product:      info.Product,
		Serial:       info.Serial,
		Bus:          SimBus,
		Address:      addr,
	}
	ctrl, err := s.ControlEndpoint()
	if err != nil {
		if errors.Is(err, ErrNoDevice) {
			return nil, usb.ErrNoDevice
		}
		return nil, fmt.Errorf("usbsim: open device: %w", err)
	}
	plug, err := s.openSettings(addr)
	if err != nil {
		if errors.Is(err, ErrNoDevice) {
			return nil, usb.ErrNoDevice
		}
		return nil, fmt.Errorf("usbsim: open device: %w", err)
	}
	r := &hostRunner{s: s, plug: plug, eps: make(map[uint8]*hostEndpoint, len(eps)+1)}
	for _, ep := range eps {
		desc.Endpoints = append(desc.Endpoints, usb.EndpointDesc{
			Address:       ep.Address,
			Type:          ep.Type,
			MaxPacketSize: ep.MaxPacketSize,
			MaxTransfer:   ep.MaxTransfer,
		})
	}
	for _, ep := range append(eps, ctrl) {
		h := &hostEndpoint{
			fd:    ep.FD,
			hdr:   make([]byte, HeaderSize),
			data:  []byte{HeaderData},
			reply: make([]byte, ReplySize),
		}
		if ep.Address == AddrBulkOut || ep.Address == 0 {
			h.seqs = hostSeqOf(s, ep.Address, ep.FD)
		}
		for _, dev := range plug.endpoints() {
			if dev.info.Address == ep.Address && ep.IsIn() {
				h.fifo = dev
			}
		}
		r.eps[ep.Address] = h
	}
	desc.Configs = configs(desc.Endpoints, true)
	desc.Config = 1
	pumped := append(slices.Clone(desc.Endpoints), usb.EndpointDesc{Address: 0, Type: usb.Control, MaxPacketSize: ctrl.MaxPacketSize, MaxTransfer: ctrl.MaxTransfer})
	return usb.NewDevice(desc, usb.NewPump(ring, pumped, r)), nil
}

// openSettings claims the interface of the current plug-in, which Open
// found at bus address addr, and puts it in the settings Open's Device
// starts with: configuration 1, interface 0 at alternate setting 0. It
// returns that plug-in, the one the Device belongs to (ErrNoDevice if
// another came meanwhile). A plug-in whose interface another Device holds
// is refused, as usbfs refuses a second claim (EBUSY): the two would
// share its sockets and take each other's replies.
func (s *Scanner) openSettings(addr int) (*plug, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return nil, ErrClosed
	case s.plug == nil || s.plug.addr != addr:
		return nil, ErrNoDevice
	case s.plug.claimed:
		return nil, fmt.Errorf("interface 0 is claimed by another Device of this plug-in (close it first): %w", syscall.EBUSY)
	}
	s.plug.claimed = true
	s.setConfigLocked(1)
	s.changedLocked()
	return s.plug, nil
}

// hostRunner runs a Device's transfers on the simulated scanner's sockets.
type hostRunner struct {
	s      *Scanner
	plug   *plug                   // the plug-in Open found: after a Replug, the device is gone
	eps    map[uint8]*hostEndpoint // read-only after Open
	closed bool                    // Close released the claim; guarded by s.mu
}

// goneLocked reports whether the Device's plug-in is gone: unplugged,
// replugged since Open (another device), or the scanner closed. s.mu held.
func (r *hostRunner) goneLocked() bool { return r.s.closed || r.s.plug != r.plug }

// hostEndpoint is the host side of one endpoint of the simulated scanner.
// Its fields belong to the endpoint's pump goroutine (and to ClearHalt,
// which runs while the pump is idle and paused).
type hostEndpoint struct {
	fd     int
	hdr    []byte    // the header byte of each IN message
	bounce []byte    // MaxTransfer bytes, for IN buffers shorter than that
	fifo   *endpoint // an IN endpoint's device side, whose rest a bounced message leaves
	iov    [2][]byte // the readv or writev vector in use
	data   []byte    // {HeaderData}: each OUT message's header
	reply  []byte    // ReplySize: the device's reply to an OUT message
	seq    uint32    // the sequence number of the last OUT message sent
	seqs   *hostSeq  // the plug-in's OUT message count, shared by its Devices
}

// hostSeq counts the OUT messages sent on one plug-in of a scanner, by
// every Device opened on it: the scanner numbers them from 1 after each
// plug-in, and replies carry that number, so a Device opened on a plug-in
// another Device used must go on from the other's count (the replies the
// other abandoned then still count as stale). The count of the messages
// written is exact where a count taken from replies is not: a reply that
// arrives may answer a message an earlier Device abandoned.
type hostSeq struct {
	mu   sync.Mutex
	fd   int    // the plug-in's bulk OUT host fd; guarded by mu
	sent uint32 // messages written on fd; guarded by mu
}

// hostSeqs maps each scanner and endpoint (weakly: the entry goes with the
// scanner) to the message count of its current plug-in.
var hostSeqs sync.Map // hostSeqKey -> *hostSeq

// hostSeqKey names the message count of one endpoint of one scanner.
type hostSeqKey struct {
	s    weak.Pointer[Scanner]
	addr uint8
}

// hostSeqOf returns the message count of endpoint addr of s's plug-in
// whose host fd is fd, reset if s was replugged since it was last used. A
// scanner keeps the host fds of its earlier plug-ins open until it is
// closed, so fd numbers tell its plug-ins apart.
func hostSeqOf(s *Scanner, addr uint8, fd int) *hostSeq {
	key := hostSeqKey{weak.Make(s), addr}
	v, loaded := hostSeqs.LoadOrStore(key, &hostSeq{fd: fd})
	if !loaded {
		runtime.AddCleanup(s, func(k hostSeqKey) { hostSeqs.Delete(k) }, key)
	}
	q := v.(*hostSeq)
	q.mu.Lock()
	if q.fd != fd {
		q.fd, q.sent = fd, 0
	}
	q.mu.Unlock()
	return q
}

// next counts one more message written on fd and returns its sequence
// number. A Device of an earlier plug-in (fd is stale) writes nothing that
// the scanner reads: it gets a number that matches no reply.
func (q *hostSeq) next(fd int) uint32 {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.fd != fd {
		return 0
	}
	q.sent++
	return q.sent
}

func (*hostRunner) Check(ep usb.EndpointDesc, buf []byte) error {
	if ep.Type == usb.Control {
		su, _ := usb.ParseSetup(buf) // checked by the Device
		if su.Length > ControlMaxData {
			return fmt.Errorf("usb: control transfer: %w: wLength %d, more than the simulator's %d", ioring.ErrInvalid, su.Length, ControlMaxData)
		}
		return nil
	}
	if !ep.IsIn() && len(buf) > ep.MaxTransfer {
		return fmt.Errorf("usb: endpoint %#02x: %w: OUT transfer of %d bytes, more than MaxTransfer (%d)",
			ep.Address, ioring.ErrInvalid, len(buf), ep.MaxTransfer)
	}
	return nil
}

func (r *hostRunner) Run(t *usb.Transfer) (int, error) {
	ep := t.Endpoint()
	if ep.Type == usb.Control {
		return r.control(r.eps[0], t)
	}
	if ep.IsIn() {
		return r.in(r.eps[ep.Address], t)
	}
	return r.out(r.eps[ep.Address], t)
}

// in is one IN transfer: readv([hdr, buf]) of one message.
func (r *hostRunner) in(h *hostEndpoint, t *usb.Transfer) (int, error) {
	buf := t.Buf()
	if n, ok, err := r.takeRest(h.fifo, buf); ok {
		return n, err
	}
	dst := buf
	maxTransfer := t.Endpoint().MaxTransfer
	bounced := len(dst) < maxTransfer
	if bounced {
		if h.bounce == nil {
			h.bounce = make([]byte, maxTransfer)
		}
		dst = h.bounce
	}
	h.iov = [2][]byte{h.hdr, dst}
	c, err := t.Do(ioring.Readv(h.fd, h.iov[:], -1))
	h.iov = [2][]byte{}
	if err != nil {
		return 0, err
	}
	n, err := DecodeIn(h.hdr[0], c.N, c.Err)
	if err != nil {
		return 0, err
	}
	if bounced {
		k := copy(buf, h.bounce[:n])
		// A copy: the bounce buffer is this Device's, the rest the
		// plug-in's.
		r.s.mu.Lock()
		h.fifo.rest = append(h.fifo.rest[:0], h.bounce[k:n]...)
		r.s.mu.Unlock()
		n = k
	}
	return n, nil
}

// takeRest moves what fits of ep's rest, the part of a message a shorter
// buffer took part of (this Device's, or an earlier one's of the
// plug-in), into buf: n bytes, ok when there was a rest. The rest is the
// device's, which cannot deliver it once it is gone (ErrNoDevice, as for
// a message not read yet).
func (r *hostRunner) takeRest(ep *endpoint, buf []byte) (n int, ok bool, err error) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	if len(ep.rest) == 0 {
		return 0, false, nil
	}
	if r.goneLocked() {
		ep.rest = nil
		return 0, true, ErrNoDevice
	}
	n = copy(buf, ep.rest)
	ep.rest = ep.rest[n:]
	return n, true, nil
}

// out is one OUT transfer: writev([HeaderData, buf]) of one message, then
// the device's reply. Replies to messages whose transfer was canceled
// while it waited for them are skipped by their sequence numbers.
func (*hostRunner) out(h *hostEndpoint, t *usb.Transfer) (int, error) {
	buf := t.Buf()
	if err := h.send(t, buf); err != nil {
		return 0, err
	}
	if _, err := h.await(t, h.reply); err != nil {
		if errors.Is(err, ErrStall) || errors.Is(err, usb.ErrNoDevice) {
			return 0, err // the device discarded the message, or is gone
		}
		// The message went out; the device acts on it even though the
		// host did not get its reply (a cancel, a deadline, no ring slot
		// left to wait in), so that a driver does not send it again.
		return len(buf), err
	}
	return len(buf), nil
}

// await reads the device's replies into buf (at least ReplySize bytes) as
// t's I/O until the one to message h.seq, skipping replies to messages
// whose transfer was canceled while it waited for them. It returns the
// length of that reply, or ErrStall (the device refused the message),
// ErrCanceled (the wait was canceled), ErrNoDevice, ErrProtocol or the
// read's error.
func (h *hostEndpoint) await(t *usb.Transfer, buf []byte) (int, error) {
	for {
		c, err := t.Do(ioring.Read(h.fd, buf, -1))
		if err != nil {
			return 0, err
		}
		if errors.Is(c.Err, usb.ErrCanceled) {
			return 0, c.Err
		}
		seq, err := DecodeReply(buf[:ReplySize], min(c.N, ReplySize), c.Err)
		if err != nil && !errors.Is(err, ErrStall) {
			return 0, err
		}
		switch {
		case seq < h.seq:
			continue // the reply to a message abandoned earlier
		case seq > h.seq:
			return 0, fmt.Errorf("usb: endpoint %#02x: reply %d to message %d: %w", t.Endpoint().Address, seq, h.seq, ErrProtocol)
		case err != nil:
			return 0, ErrStall // the device discarded the message
		}
		return c.N, nil
	}
}

// send writes one message, HeaderData and payload, as t's I/O with
// writev, and counts it in h.seq: the sequence number of the device's
// reply to it.
func (h *hostEndpoint) send(t *usb.Transfer, payload []byte) error {
	h.iov = [2][]byte{h.data, payload}
	iov := h.iov[:]
	if len(payload) == 0 {
		iov = iov[:1] // a zero-length packet
	}
	c, err := t.Do(ioring.Writev(h.fd, iov, -1))
	h.iov = [2][]byte{}
	if err != nil {
		return err
	}
	if err := DecodeWrite(c.N, HeaderSize+len(payload), c.Err); err != nil {
		return err
	}
	h.seq = h.seqs.next(h.fd)
	return nil
}

// control is one control transfer: writev([HeaderData, setup and OUT
// data stage]) of one message, then the device's reply with the IN data
// stage, read into a buffer of the endpoint's (the caller's holds no room
// for the reply's header). Replies to requests abandoned earlier are
// skipped by their sequence numbers, as on bulk OUT.
func (*hostRunner) control(h *hostEndpoint, t *usb.Transfer) (int, error) {
	buf := t.Buf()
	su, _ := usb.ParseSetup(buf)
	msg := buf[:SetupSize]
	if !su.IsIn() {
		msg = buf[:SetupSize+int(su.Length)]
	}
	if err := h.send(t, msg); err != nil {
		return 0, err
	}
	if len(h.bounce) < ReplySize+ControlMaxData {
		h.bounce = make([]byte, ReplySize+ControlMaxData)
	}
	n, err := h.await(t, h.bounce)
	switch {
	case err != nil:
		return 0, err // canceled: the device answers the request all the same
	case !su.IsIn():
		return int(su.Length), nil
	}
	in := h.bounce[ReplySize:n]
	if len(in) > int(su.Length) {
		return 0, fmt.Errorf("usb: endpoint 0: %d bytes for a wLength of %d: %w", len(in), su.Length, ErrProtocol)
	}
	return copy(buf[SetupSize:], in), nil
}

// SetConfiguration selects the scanner's configuration: 1, its one, or 0.
// As on a device, it resets the endpoints' halts (see resetHaltsLocked),
// also when the configuration does not change.
func (r *hostRunner) SetConfiguration(value int) error {
	return r.setting("set configuration", func() (bool, bool) { return r.s.setConfigLocked(value), true })
}

// ClaimInterface claims interface 0, the scanner's one; no kernel driver
// holds it.
func (r *hostRunner) ClaimInterface(iface int, detach bool) error {
	return r.setting("claim interface", func() (bool, bool) { return iface == 0 && r.s.config == 1, false })
}

// ReleaseInterface releases interface 0, which returns to alternate
// setting 0 (a SET_INTERFACE, as usbfs sends one, when it was at another).
func (r *hostRunner) ReleaseInterface(iface int, reattach bool) error {
	return r.setting("release interface", func() (bool, bool) {
		other := r.s.alt != 0
		return r.s.setInterfaceLocked(iface, 0), other
	})
}

// SetAltSetting selects alternate setting 0 or AltEventsOnly of interface
// 0. As on a device, it resets the endpoints' halts (see
// resetHaltsLocked), also when the setting does not change.
func (r *hostRunner) SetAltSetting(iface, alt int) error {
	return r.setting("set alternate setting", func() (bool, bool) { return r.s.setInterfaceLocked(iface, alt), true })
}

// setting runs f, a change of the scanner's settings, on the Device's
// plug-in: the device takes it (nil), refuses it (an error wrapping
// ErrStall, as a device refuses a request it cannot honour) or is gone
// (ErrNoDevice: unplugged, or replugged since Open, which is another
// device). f reports whether the device took it, and whether it resets
// the endpoints' halts (it returns once their FIFOs are reset).
func (r *hostRunner) setting(what string, f func() (ok, reset bool)) error {
	s := r.s
	s.mu.Lock()
	if r.goneLocked() {
		s.mu.Unlock()
		return ErrNoDevice
	}
	ok, reset := f()
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("usbsim: %s: the device refused it: %w", what, ErrStall)
	}
	var cleared []chan struct{}
	if reset {
		cleared = resetHaltsLocked(r.plug)
	}
	s.changedLocked()
	s.mu.Unlock()
	s.kick(r.plug)
	return awaitCleared(r.plug, cleared...)
}

func (r *hostRunner) ClearHalt(ep usb.EndpointDesc) error {
	return r.s.clearHalt(r.plug, ep.Address) // an IN endpoint's rest too
}

// Reset is not possible on the socketpairs: the scanner has no port to
// reset (Unplug and Replug it instead).
func (*hostRunner) Reset() error {
	return fmt.Errorf("usbsim: reset: %w: the simulated scanner has no port to reset", ioring.ErrNotSupported)
}

// Close releases the interface Open claimed.
func (r *hostRunner) Close() error {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	if !r.closed {
		r.closed = true
		r.plug.claimed = false
	}
	return nil
}
