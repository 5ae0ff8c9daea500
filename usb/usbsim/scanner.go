package usbsim

import (
	"fmt"
	"net"
	"sync"
	"time"
	"unicode/utf16"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/usb"
)

// Descriptor defaults. 0x1209 is pid.codes' open-source vendor ID and
// 0x0001 its test product ID: the device is simulated and must not pass for
// a real product.
const (
	DefaultVendorID    = 0x1209
	DefaultProductID   = 0x0001
	DefaultMaxTransfer = 64 << 10 // bytes of payload per bulk message
	MaxMaxTransfer     = 4 << 20  // largest Config.MaxTransfer accepted
)

// Endpoint addresses (bEndpointAddress; bit 7 set for IN).
const (
	AddrBulkOut     uint8 = 0x01
	AddrBulkIn      uint8 = 0x82
	AddrInterruptIn uint8 = 0x83
)

// Max packet sizes (wMaxPacketSize) of a high-speed device: informational,
// the sockets carry whole transfers.
const (
	BulkMaxPacketSize      = 512
	InterruptMaxPacketSize = 64
)

// maxEvents bounds the interrupt IN queue; the oldest event is dropped
// when a host does not read events.
const maxEvents = 64

// EndpointType is an endpoint's transfer type, valued as in bmAttributes:
// usb.TransferType (its String gives "bulk", "interrupt").
type EndpointType = usb.TransferType

// Transfer types the simulated scanner uses.
const (
	EndpointBulk      = usb.Bulk
	EndpointInterrupt = usb.Interrupt
)

// Endpoint describes one endpoint of the current plug-in and its host fd.
type Endpoint struct {
	Address       uint8 // AddrBulkOut, AddrBulkIn or AddrInterruptIn
	Type          EndpointType
	MaxPacketSize int
	// MaxTransfer is the largest payload of one message on this endpoint.
	// The device never sends more in one message, so a host read offering
	// MaxTransfer payload bytes never truncates; the host must not send more
	// on bulk OUT (the device would stall the endpoint). It can be below
	// Config.MaxTransfer where the kernel grants smaller socket buffers.
	MaxTransfer int
	// FD is the host end of the endpoint's SOCK_SEQPACKET socketpair, in
	// blocking mode (the host may set O_NONBLOCK). The Scanner owns it: the
	// fd stays open, failing with ErrNoDevice after an Unplug, until Close.
	FD int
}

// IsIn reports whether e sends data to the host.
func (e Endpoint) IsIn() bool { return e.Address&0x80 != 0 }

// DeviceInfo is the device descriptor's identity, what a host lists.
type DeviceInfo struct {
	VendorID     uint16
	ProductID    uint16
	Manufacturer string
	Product      string
	Serial       string
}

// Config configures a Scanner; the zero value is a usable device.
type Config struct {
	VendorID  uint16 // default DefaultVendorID
	ProductID uint16 // default DefaultProductID
	Serial    string // default "SIM0001"
	// MaxTransfer is the largest payload of one bulk message: 0 for
	// DefaultMaxTransfer, else EventSize to MaxMaxTransfer; see
	// Endpoint.MaxTransfer.
	MaxTransfer int
	Latency     time.Duration // initial SetLatency
	Bandwidth   int64         // initial SetBandwidth
}

// Scanner is a simulated USB scanner: bulk OUT for commands, bulk IN for
// image data, interrupt IN for events (see the package doc for the
// protocol). The device side runs in goroutines of this process; the host
// side is the fds listed by Endpoints. All methods are safe for concurrent
// use; after Close the fault setters do nothing.
type Scanner struct {
	info        DeviceInfo
	maxTransfer int // 0 only in a zero Scanner (made): set once
	// gadget is the USB gadget the scanner is served through (ServeGadget),
	// nil for the socketpair transport (NewScanner). Set once.
	gadget Gadget

	// plugMu serializes Unplug, Replug and Close, held while they wait
	// for the device goroutines.
	plugMu sync.Mutex
	stale  []int // host fds of earlier plug-ins; guarded by plugMu

	mu        sync.Mutex
	closed    bool          // guarded by mu
	plug      *plug         // current plug-in, nil when unplugged; guarded by mu
	plugs     int           // plug-ins so far (their addresses); guarded by mu
	changed   chan struct{} // closed and replaced at every state change; guarded by mu
	latency   time.Duration // guarded by mu
	bandwidth int64         // bytes/s, 0 unlimited; guarded by mu
	hung      bool          // guarded by mu
	hangAfter int64         // bulk IN bytes until a hang, -1 off; guarded by mu
	job       *job          // current or last job; guarded by mu
	jobs      uint32        // last job id; guarded by mu
	config    int           // the configuration the host selected (1 at plug-in); guarded by mu
	alt       int           // the interface's alternate setting; guarded by mu
	// watchers are the Hotplugs that WatchHotplug made and Close has not
	// closed; guarded by mu.
	watchers map[*Hotplug]struct{}
	// stallErrs are the stalls of endpoint 0 that FunctionFS did not make
	// (StallErrors); guarded by mu.
	stallErrs []error
	// dataErrs are the data stages of endpoint 0 that failed
	// (DataStageErrors); guarded by mu.
	dataErrs []error
	// answersTaken counts the answers to control IN requests that the
	// host took in full (AnswersTaken); guarded by mu.
	answersTaken int
}

// plug is one plug-in: a set of socketpairs (or a gadget's binding to its
// controller) and the goroutines serving them.
type plug struct {
	out, in, intr *endpoint
	// ctrl is endpoint 0: a socketpair of its own, or the gadget's
	// FunctionFS ep0 (nil for a gadget without one).
	ctrl *endpoint
	gone chan struct{} // closed at unplug
	wg   sync.WaitGroup
	// addr is the plug-in's device address on SimBus (1..127, the next
	// one at each plug-in, as a host assigns them), which Open's
	// DeviceDesc and the hotplug events carry; 0 for a gadget (the
	// kernel's enumeration gives it its place on a real bus).
	addr int
	// claimed: a Device of this plug-in is open (Open claims its
	// interface, its Close releases it); guarded by Scanner.mu.
	claimed bool
}

func (p *plug) endpoints() [3]*endpoint { return [3]*endpoint{p.out, p.in, p.intr} }

// slots are the places of p's endpoints, in the order of endpoints.
func (p *plug) slots() [3]**endpoint { return [3]**endpoint{&p.out, &p.in, &p.intr} }

// endpoint is the device side of one endpoint.
type endpoint struct {
	info   Endpoint      // FD is the host end (-1 on the gadget transport)
	dev    *net.UnixConn // socketpair transport: the device end
	sndbuf int           // SO_SNDBUF asked for the device end outside of stalls
	ffs    *ffsEndpoint  // gadget transport: the FunctionFS endpoint file

	halted    bool          // guarded by Scanner.mu
	clearDone chan struct{} // a ClearHalt waiting for the IN loop; guarded by Scanner.mu
	queue     []*inItem     // IN data not yet sent; guarded by Scanner.mu
	// rest is the part of the last IN message that a host transfer
	// shorter than the message left unread (Open's Devices read such a
	// message whole into a bounce buffer): it stays with the plug-in, as
	// a device's FIFO keeps what the host did not take, for the next
	// transfer of whichever Device holds the plug-in; a halt's clearing
	// drops it. Guarded by Scanner.mu.
	rest []byte
}

// inItem is one unit of IN data: a job's image, or bytes (none: a zero-length
// packet). The IN loop sends it in messages of at most MaxTransfer bytes.
type inItem struct {
	job  *job
	data []byte
	off  int64 // bytes sent; guarded by Scanner.mu
}

func (it *inItem) size() int64 {
	if it.job != nil {
		return it.job.total
	}
	return int64(len(it.data))
}

type job struct {
	id      uint32
	params  ScanParams
	total   int64
	sent    int64 // guarded by Scanner.mu
	aborted bool  // guarded by Scanner.mu
	// handed is the part of the job in an IN write the gadget transport
	// has handed to the controller and that has not returned yet: the
	// host may have it already, so the device counts it as sent. Guarded
	// by Scanner.mu.
	handed int64
}

// active reports whether the job still has image data to hand to the
// transport.
func (j *job) active() bool { return j != nil && !j.aborted && j.sent+j.handed < j.total }

// NewScanner creates a plugged-in scanner and starts its goroutines. The
// caller must Close it.
func NewScanner(cfg Config) (*Scanner, error) {
	s, err := newScanner(cfg)
	if err != nil {
		return nil, err
	}
	if err := s.Replug(); err != nil {
		return nil, err
	}
	return s, nil
}

// maxStringUnits is how many UTF-16 units a string descriptor holds: its
// length is one byte, two of them its header.
const maxStringUnits = (255 - 2) / 2

// newScanner validates cfg and returns an unplugged Scanner.
func newScanner(cfg Config) (*Scanner, error) {
	if cfg.MaxTransfer != 0 && (cfg.MaxTransfer < EventSize || cfg.MaxTransfer > MaxMaxTransfer) {
		return nil, fmt.Errorf("usbsim: %w: MaxTransfer %d outside %d..%d (or 0 for the default)", ioring.ErrInvalid, cfg.MaxTransfer, EventSize, MaxMaxTransfer)
	}
	if cfg.Latency < 0 || cfg.Bandwidth < 0 {
		return nil, fmt.Errorf("usbsim: %w: negative latency or bandwidth", ioring.ErrInvalid)
	}
	// A string descriptor's length is one byte: at most 126 UTF-16 units.
	if n := len(utf16.Encode([]rune(cfg.Serial))); n > maxStringUnits {
		return nil, fmt.Errorf("usbsim: %w: serial number of %d UTF-16 units, more than a string descriptor holds (%d)", ioring.ErrInvalid, n, maxStringUnits)
	}
	s := &Scanner{
		info: DeviceInfo{
			VendorID:     orDefault(cfg.VendorID, DefaultVendorID),
			ProductID:    orDefault(cfg.ProductID, DefaultProductID),
			Manufacturer: "cancelio",
			Product:      "usbsim simulated scanner",
			Serial:       cfg.Serial,
		},
		maxTransfer: cfg.MaxTransfer,
		changed:     make(chan struct{}),
		latency:     cfg.Latency,
		bandwidth:   cfg.Bandwidth,
		hangAfter:   -1,
	}
	if s.info.Serial == "" {
		s.info.Serial = "SIM0001"
	}
	if s.maxTransfer == 0 {
		s.maxTransfer = DefaultMaxTransfer
	}
	return s, nil
}

func orDefault(v, def uint16) uint16 {
	if v == 0 {
		return def
	}
	return v
}

// Info returns the device descriptor's identity.
func (s *Scanner) Info() DeviceInfo { return s.info }

// Endpoints returns the endpoints of the current plug-in: bulk OUT, bulk IN,
// interrupt IN, in that order. It fails with ErrNoDevice while unplugged and
// ErrClosed after Close, and with ErrNotSupported for a scanner served as a
// USB gadget (ServeGadget), whose host opens the USB device instead.
func (s *Scanner) Endpoints() ([]Endpoint, error) {
	eps, _, err := s.endpointsAt()
	return eps, err
}

// endpointsAt is Endpoints, with the address of the plug-in they belong
// to (Open's DeviceDesc).
func (s *Scanner) endpointsAt() ([]Endpoint, int, error) {
	if !s.made() {
		return nil, 0, errNotMade
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, 0, ErrClosed
	}
	if s.gadget != nil {
		return nil, 0, fmt.Errorf("usbsim: Endpoints of a USB gadget: %w", ErrNotSupported)
	}
	if s.plug == nil {
		return nil, 0, ErrNoDevice
	}
	eps := s.plug.endpoints()
	return []Endpoint{eps[0].info, eps[1].info, eps[2].info}, s.plug.addr, nil
}

// ControlEndpoint returns endpoint 0 of the current plug-in: its host fd
// is the host end of a SOCK_SEQPACKET socketpair of its own (Address 0,
// Type usb.Control, MaxTransfer ControlMaxData). The host writes each
// control request as one message: HeaderData, the 8-byte setup packet
// (usb.Setup.Put) and, for an OUT request, its data stage of wLength
// bytes. The device answers each with one message: HeaderAck (done) or
// HeaderStall (refused), the little-endian uint32 sequence number of the
// request (counting from 1 after each plug-in, as bulk OUT's replies do),
// and for an IN request its data stage, at most wLength bytes. It answers
// the standard requests a host's USB stack sends and the vendor requests
// (VendorCommand, VendorStatus); the latency fault delays the answer, and
// a hung device withholds it until Resume. Errors as Endpoints.
func (s *Scanner) ControlEndpoint() (Endpoint, error) {
	if !s.made() {
		return Endpoint{}, errNotMade
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return Endpoint{}, ErrClosed
	case s.gadget != nil:
		return Endpoint{}, fmt.Errorf("usbsim: ControlEndpoint of a USB gadget: %w", ErrNotSupported)
	case s.plug == nil:
		return Endpoint{}, ErrNoDevice
	}
	return s.plug.ctrl.info, nil
}

// endpointLocked finds addr in the current plug-in.
func (s *Scanner) endpointLocked(addr uint8) (*endpoint, error) {
	if s.closed {
		return nil, ErrClosed
	}
	if s.plug == nil {
		return nil, ErrNoDevice
	}
	for _, ep := range s.plug.endpoints() {
		if ep.info.Address == addr {
			return ep, nil
		}
	}
	return nil, fmt.Errorf("usbsim: no endpoint %#02x", addr)
}

// made reports whether s was made by NewScanner (or ServeGadget): a zero
// Scanner has no state to change and no endpoints, and its methods refuse
// it (errNotMade) or, those that return nothing, do nothing. It reads a
// field set once, before s is shared (newScanner gives maxTransfer a
// default): no lock.
func (s *Scanner) made() bool { return s.maxTransfer != 0 }

// errNotMade is the error of a zero Scanner's methods.
var errNotMade = fmt.Errorf("usbsim: %w: a Scanner not made by NewScanner or ServeGadget", ioring.ErrInvalid)

// changedLocked wakes every device goroutine to look at the state again.
func (s *Scanner) changedLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// kick makes an IN goroutine's write waiting for room on a full socket
// return at once, so it plans again: a stall writer must see ClearHalt, and
// a data write planned before an abort, stall or hang gives way at once (it
// re-validates under the lock before it sends in any case). On the gadget
// transport it withdraws the blocking reads and writes that the new state
// forbids (see ffsMustStopLocked).
func (s *Scanner) kick(p *plug) {
	if p == nil {
		return
	}
	if s.gadget != nil {
		s.ffsKick(p)
		return
	}
	past := time.Unix(1, 0)
	_ = p.in.dev.SetWriteDeadline(past)
	_ = p.intr.dev.SetWriteDeadline(past)
}

// update runs f under the lock, wakes the device goroutines and kicks
// blocked writes.
func (s *Scanner) update(f func()) {
	if !s.made() {
		return
	}
	s.mu.Lock()
	f()
	p := s.plug
	s.changedLocked()
	s.mu.Unlock()
	s.kick(p)
}

// SetLatency makes the device wait d before each transfer it answers: each
// IN message and each bulk OUT reply. It applies at once, also to waits in
// progress. 0 turns it off.
func (s *Scanner) SetLatency(d time.Duration) {
	s.update(func() { s.latency = max(d, 0) })
}

// SetBandwidth caps each endpoint's payload rate at bytesPerSec: a message
// of n bytes takes n/bytesPerSec seconds (after the latency). 0 removes the
// cap. It applies at once, also to waits in progress.
func (s *Scanner) SetBandwidth(bytesPerSec int64) {
	s.update(func() { s.bandwidth = max(bytesPerSec, 0) })
}

// Stall halts the endpoint at addr: from now on every host transfer on it
// fails with ErrStall until the host calls ClearHalt. An IN endpoint keeps
// delivering the messages sent before the stall. It fails with ErrNoDevice
// while unplugged.
func (s *Scanner) Stall(addr uint8) error {
	if !s.made() {
		return errNotMade
	}
	var err error
	s.update(func() {
		var ep *endpoint
		if ep, err = s.endpointLocked(addr); err == nil {
			ep.halted = true
		}
	})
	return err
}

// ClearHalt is the host's CLEAR_FEATURE(ENDPOINT_HALT): it ends a stall of
// the endpoint at addr. For an IN endpoint it also discards every message
// the host has not read from that endpoint (the endpoint's FIFO is reset),
// so it must be called with no transfer pending on that endpoint; it returns
// once that is done. Clearing an endpoint that is not halted does no harm. It
// works while the device hangs, and fails with ErrNoDevice while unplugged.
// A scanner served as a USB gadget fails with ErrNotSupported: its host
// clears a halt through USB (USBDEVFS_CLEAR_HALT, libusb_clear_halt).
func (s *Scanner) ClearHalt(addr uint8) error {
	if !s.made() {
		return errNotMade
	}
	return s.clearHalt(nil, addr)
}

// clearHalt is ClearHalt on plug-in want, which must still be the
// current one (ErrNoDevice if not), or on the current one (want nil).
func (s *Scanner) clearHalt(want *plug, addr uint8) error {
	s.mu.Lock()
	ep, err := s.endpointLocked(addr)
	if err == nil && want != nil && s.plug != want {
		err = ErrNoDevice
	}
	if err == nil && s.gadget != nil {
		err = fmt.Errorf("usbsim: ClearHalt of a USB gadget: %w", ErrNotSupported)
	}
	if err != nil {
		s.mu.Unlock()
		return err
	}
	p := s.plug
	done := clearHaltLocked(ep)
	s.changedLocked()
	s.mu.Unlock()
	s.kick(p)
	return awaitCleared(p, done)
}

// clearHaltLocked ends a halt of ep, the current plug-in's endpoint. For
// an IN endpoint its FIFO is reset too: the rest of a message the host
// took part of is dropped, and the IN loop discards what the host has not
// read (stall messages included) and then closes the channel returned;
// nil for an OUT endpoint. s.mu held.
func clearHaltLocked(ep *endpoint) chan struct{} {
	ep.halted = false
	if !ep.info.IsIn() {
		return nil
	}
	ep.rest = nil
	if ep.clearDone == nil {
		ep.clearDone = make(chan struct{})
	}
	return ep.clearDone
}

// awaitCleared waits until the IN loops of plug-in p have reset the FIFOs
// of the halts clearHaltLocked ended (its channels; nil ones are skipped),
// or p is unplugged (ErrNoDevice). s.mu not held; s.kick(p) done.
func awaitCleared(p *plug, dones ...chan struct{}) error {
	for _, done := range dones {
		if done == nil {
			continue
		}
		select {
		case <-done:
		case <-p.gone:
			return ErrNoDevice
		}
	}
	return nil
}

// resetHaltsLocked ends the halts of plug-in p's endpoints, as a
// SET_CONFIGURATION or SET_INTERFACE does on a device (USB 2.0 9.4.5: both
// reset the endpoints of what they select, halts and FIFOs, even when the
// value does not change), and returns clearHaltLocked's channels, for
// awaitCleared. Endpoints that are not halted keep their data. s.mu held.
func resetHaltsLocked(p *plug) []chan struct{} {
	var dones []chan struct{}
	for _, ep := range p.endpoints() {
		if ep.halted {
			dones = append(dones, clearHaltLocked(ep))
		}
	}
	return dones
}

// Hang makes the device stop answering, as a wedged firmware does: nothing
// more is sent on the IN endpoints and bulk OUT messages get no reply, while
// every fd stays open. Pending host transfers stay pending. Resume undoes it.
func (s *Scanner) Hang() {
	s.update(func() { s.hung = true; s.hangAfter = -1 })
}

// HangAfter makes the device hang (as Hang) once it has sent n more bytes
// of bulk IN payload; n <= 0 hangs at once. The message that reaches n is
// cut so exactly n bytes go out.
func (s *Scanner) HangAfter(n int64) {
	s.update(func() {
		if n <= 0 {
			s.hung, s.hangAfter = true, -1
		} else {
			s.hangAfter = n
		}
	})
}

// Resume ends a hang (and disarms HangAfter): the device carries on where it
// stopped, answering the messages that arrived meanwhile.
func (s *Scanner) Resume() {
	s.update(func() { s.hung = false; s.hangAfter = -1 })
}

// PressButton queues an EventButton with Code button on interrupt IN.
func (s *Scanner) PressButton(button uint8) {
	s.update(func() {
		if s.plug != nil {
			s.eventLocked(EventButton, button)
		}
	})
}

// Unplug disconnects the device: every pending host transfer on the
// endpoints completes at once and every later one fails (the host maps
// both to ErrNoDevice with DecodeIn, DecodeWrite or DecodeReply); messages
// the host had not read are discarded. The job is dropped. The host fds stay
// open until Close. Unplug returns when the device goroutines have stopped;
// unplugging an unplugged device does nothing. A scanner served as a USB
// gadget unbinds it from its controller (Gadget.Unplug): the host sees the
// device leave, and its pending and later transfers fail (usbfs: ENODEV,
// EPROTO or ESHUTDOWN). Every Hotplug (WatchHotplug) then reports a
// usb.Left event.
func (s *Scanner) Unplug() error {
	if !s.made() {
		return errNotMade
	}
	s.plugMu.Lock()
	defer s.plugMu.Unlock()
	p, err := s.detach(false)
	if err != nil || p == nil {
		return err
	}
	err = s.teardown(p)
	s.hotplug(usb.Left, p.addr)
	return err
}

// detach takes the current plug-in (nil when unplugged) away for Unplug
// and, with closing, for Close, which also marks s closed. It fails with
// ErrClosed after Close. Call with plugMu held.
func (s *Scanner) detach(closing bool) (*plug, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	s.closed = closing
	return s.unplugLocked(), nil
}

// unplugLocked detaches the current plug-in and resets the device state.
func (s *Scanner) unplugLocked() *plug {
	p := s.plug
	if p == nil {
		return nil
	}
	s.plug = nil
	if s.job != nil && s.job.active() {
		s.job.aborted = true
	}
	s.hung, s.hangAfter = false, -1
	close(p.gone)
	s.changedLocked()
	return p
}

// teardown closes the device ends of p, waits for its goroutines and
// empties the host ends' receive queues, so every host read sees end of
// file from now on; the host fds join s.stale. On the gadget transport it
// unbinds the gadget and stops its goroutines. Call with plugMu held.
func (s *Scanner) teardown(p *plug) error {
	if s.gadget != nil {
		return s.ffsTeardown(p)
	}
	all := p.endpoints()
	eps := append(all[:], p.ctrl)
	for _, ep := range eps {
		ep.dev.Close()
	}
	p.wg.Wait()
	for _, ep := range eps {
		drainFD(ep.info.FD)
		s.stale = append(s.stale, ep.info.FD)
	}
	return nil
}

// Replug plugs the device in again after Unplug, with new socketpairs: the
// host takes the new fds from Endpoints. The device starts idle, with no
// halted endpoint and no hang; latency and bandwidth settings stay.
// Replugging a plugged-in device does nothing. A scanner served as a USB
// gadget binds it to its controller again (Gadget.Plug): the host
// enumerates a new device. Every Hotplug (WatchHotplug) then reports a
// usb.Arrived event.
func (s *Scanner) Replug() error {
	if !s.made() {
		return errNotMade
	}
	s.plugMu.Lock()
	defer s.plugMu.Unlock()
	s.mu.Lock()
	closed, plugged := s.closed, s.plug != nil
	s.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if plugged {
		return nil
	}
	if s.gadget != nil {
		if err := s.ffsPlug(); err != nil {
			return err
		}
	} else {
		p, err := s.newPlug()
		if err != nil {
			return err
		}
		s.install(p, s.outLoop, s.inLoop, s.ctrlLoop)
	}
	s.hotplug(usb.Arrived, s.plugAddr())
	return nil
}

// SimBus is the bus number of a simulated scanner's device (Open's
// DeviceDesc.Bus, and the Bus of its hotplug events): each plug-in has an
// address of its own on it, so that a removal reported late can be told
// from one of the device plugged in again, as on a real bus.
const SimBus = 1

// plugAddr returns the current plug-in's address (0 while unplugged, and
// for a gadget).
func (s *Scanner) plugAddr() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.plug == nil {
		return 0
	}
	return s.plug.addr
}

// BusAddr returns where the current plug-in is: SimBus and its address,
// as Open's DeviceDesc and the hotplug events give them; 0, 0 while
// unplugged and for a scanner served as a USB gadget (the kernel's
// enumeration places that one).
func (s *Scanner) BusAddr() (bus, addr int) {
	if a := s.plugAddr(); a != 0 {
		return SimBus, a
	}
	return 0, 0
}

// install makes p, whose endpoints are set up, the current plug-in (idle,
// not hung, configured, at alternate setting 0) and starts its
// goroutines: out serves bulk OUT, in each IN endpoint, ctrl endpoint 0
// (where p has one). Both transports plug in through it. Call with plugMu
// held.
func (s *Scanner) install(p *plug, out, in, ctrl func(*plug, *endpoint)) {
	s.mu.Lock()
	if s.gadget == nil {
		s.plugs++
		p.addr = 1 + (s.plugs-1)%127
	}
	s.plug = p
	s.hung, s.hangAfter = false, -1
	s.config, s.alt = 1, 0
	s.changedLocked()
	s.mu.Unlock()
	p.wg.Add(3)
	go out(p, p.out)
	go in(p, p.in)
	go in(p, p.intr)
	if p.ctrl != nil {
		p.wg.Add(1)
		go ctrl(p, p.ctrl)
	}
}

// endpointInfos describes the endpoints of a plug-in, in the order of
// plug.slots: bulk OUT, bulk IN, interrupt IN (FD -1: no host fd yet).
func (s *Scanner) endpointInfos() [3]Endpoint {
	return [3]Endpoint{
		{Address: AddrBulkOut, Type: EndpointBulk, MaxPacketSize: BulkMaxPacketSize, MaxTransfer: s.maxTransfer, FD: -1},
		{Address: AddrBulkIn, Type: EndpointBulk, MaxPacketSize: BulkMaxPacketSize, MaxTransfer: s.maxTransfer, FD: -1},
		{Address: AddrInterruptIn, Type: EndpointInterrupt, MaxPacketSize: InterruptMaxPacketSize, MaxTransfer: InterruptMaxPacketSize, FD: -1},
	}
}

// newPlug creates the socketpairs of one plug-in.
func (s *Scanner) newPlug() (*plug, error) {
	p := &plug{gone: make(chan struct{})}
	var made []*endpoint
	fail := func(err error) (*plug, error) {
		for _, ep := range made {
			ep.dev.Close()
			closeFD(ep.info.FD)
		}
		return nil, err
	}
	for i, info := range s.endpointInfos() {
		// Room for two full messages plus the kernel's per-message share.
		sndbuf := HeaderSize + info.MaxTransfer + 4096
		host, dev, maxMsg, err := socketPair(sndbuf)
		if err != nil {
			return fail(err)
		}
		info.MaxTransfer = min(info.MaxTransfer, maxMsg-HeaderSize)
		info.FD = host
		ep := &endpoint{info: info, dev: dev, sndbuf: sndbuf}
		made = append(made, ep)
		if ep.info.MaxTransfer < EventSize {
			return fail(fmt.Errorf("usbsim: socket buffer too small (%d bytes per message)", maxMsg))
		}
		*p.slots()[i] = ep
	}
	// Endpoint 0: room for a whole request, setup and data stage, and for
	// a whole answer.
	host, dev, maxMsg, err := socketPair(HeaderSize + SetupSize + ControlMaxData + 4096)
	if err != nil {
		return fail(err)
	}
	p.ctrl = &endpoint{info: Endpoint{Type: usb.Control, MaxPacketSize: maxPacket0, MaxTransfer: ControlMaxData, FD: host}, dev: dev}
	made = append(made, p.ctrl)
	if maxMsg < HeaderSize+SetupSize+ControlMaxData {
		return fail(fmt.Errorf("usbsim: socket buffer too small for endpoint 0 (%d bytes per message)", maxMsg))
	}
	// Both bulk endpoints carry the same transfer size.
	m := min(p.out.info.MaxTransfer, p.in.info.MaxTransfer)
	p.out.info.MaxTransfer, p.in.info.MaxTransfer = m, m
	return p, nil
}

// Close unplugs the device, stops every goroutine and closes every fd,
// including the host fds of all plug-ins: the host must have stopped using
// them. Later calls return ErrClosed. A scanner served as a USB gadget
// leaves the gadget itself (unplugged) to its owner. A plugged-in scanner's
// Close is its last removal for every Hotplug (a usb.Left event); no
// event follows it.
func (s *Scanner) Close() error {
	if !s.made() {
		return errNotMade
	}
	s.plugMu.Lock()
	defer s.plugMu.Unlock()
	p, err := s.detach(true)
	if err != nil {
		return err
	}
	if p != nil {
		err = s.teardown(p)
		s.hotplug(usb.Left, p.addr)
	}
	for _, fd := range s.stale {
		closeFD(fd)
	}
	s.stale = nil
	return err
}
