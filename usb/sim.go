package usb

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"weak"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// OpenSim opens the simulated scanner s as a Device whose transfers are
// real ring I/O on the scanner's endpoint fds (see package usbsim for the
// wire format): an IN transfer is one readv of a message, an OUT transfer
// a writev of one message and the read of the device's reply. The Device
// uses the scanner's current plug-in: after s.Unplug its transfers fail
// with ErrNoDevice for good; after s.Replug, open it again. Closing the
// Device does not close s, which owns the fds; close the Device first.
//
// IN buffers shorter than the endpoint's MaxTransfer are served through a
// bounce buffer, so nothing is lost: a message longer than the buffer fills
// it, and the rest is the data of the endpoint's next transfers (as on a
// real bus, where the device's packets wait for the next IN token). Buffers
// of at least MaxTransfer get the data directly, without a copy. OUT
// buffers longer than MaxTransfer are refused (one OUT transfer is one
// message, one command to the scanner).
func OpenSim(ring *ioring.Ring, s *usbsim.Scanner) (*Device, error) {
	if ring == nil || s == nil {
		return nil, fmt.Errorf("usb: open simulated device: %w: nil ring or scanner", ioring.ErrInvalid)
	}
	eps, err := s.Endpoints()
	if err != nil {
		if errors.Is(err, usbsim.ErrNoDevice) {
			return nil, ErrNoDevice
		}
		return nil, fmt.Errorf("usb: open simulated device: %w", err)
	}
	info := s.Info()
	desc := DeviceDesc{
		VendorID:     info.VendorID,
		ProductID:    info.ProductID,
		Manufacturer: info.Manufacturer,
		Product:      info.Product,
		Serial:       info.Serial,
	}
	fds := make(map[uint8]usbsim.Endpoint, len(eps))
	var seq *simSeq
	for _, ep := range eps {
		if ep.Address == usbsim.AddrBulkOut {
			seq = simSeqOf(s, ep.FD)
		}
		desc.Endpoints = append(desc.Endpoints, EndpointDesc{
			Address:       ep.Address,
			Type:          TransferType(ep.Type),
			MaxPacketSize: ep.MaxPacketSize,
			MaxTransfer:   ep.MaxTransfer,
		})
		fds[ep.Address] = ep
	}
	return newDevice(ring, desc, simTransport{s: s}, func(e *Endpoint) {
		e.sim = &simEndpoint{
			fd:    fds[e.desc.Address].FD,
			seqs:  seq,
			hdr:   make([]byte, usbsim.HeaderSize),
			data:  []byte{usbsim.HeaderData},
			reply: make([]byte, usbsim.ReplySize),
		}
	}), nil
}

// simEndpoint is the host side of one endpoint of the simulated scanner.
// Its fields belong to the endpoint's pump goroutine (and to ClearHalt,
// which runs while the pump is idle and paused).
type simEndpoint struct {
	fd     int
	hdr    []byte    // the header byte of each IN message
	bounce []byte    // MaxTransfer bytes, for IN buffers shorter than that
	left   []byte    // bytes of the last bounced message not yet transferred
	iov    [2][]byte // the readv or writev vector in use
	data   []byte    // {HeaderData}: each OUT message's header
	reply  []byte    // ReplySize: the device's reply to an OUT message
	seq    uint32    // the sequence number of the last OUT message sent
	seqs   *simSeq   // the plug-in's OUT message count, shared by its Devices
}

// simSeq counts the OUT messages sent on one plug-in of a scanner, by every
// Device opened on it: the scanner numbers them from 1 after each plug-in,
// and replies carry that number, so a Device opened on a plug-in another
// Device used must go on from the other's count (the replies the other
// abandoned then still count as stale). The count of the messages written
// is exact where a count taken from replies is not: a reply that arrives
// may answer a message an earlier Device abandoned.
type simSeq struct {
	mu   sync.Mutex
	fd   int    // the plug-in's bulk OUT host fd; guarded by mu
	sent uint32 // messages written on fd; guarded by mu
}

// simSeqs maps each scanner (weakly: the entry goes with the scanner) to
// the message count of its current plug-in.
var simSeqs sync.Map // weak.Pointer[usbsim.Scanner] -> *simSeq

// simSeqOf returns the message count of s's plug-in whose bulk OUT host fd
// is fd, reset if s was replugged since it was last used. A scanner keeps
// the host fds of its earlier plug-ins open until it is closed, so fd
// numbers tell its plug-ins apart.
func simSeqOf(s *usbsim.Scanner, fd int) *simSeq {
	key := weak.Make(s)
	v, loaded := simSeqs.LoadOrStore(key, &simSeq{fd: fd})
	if !loaded {
		runtime.AddCleanup(s, func(k weak.Pointer[usbsim.Scanner]) { simSeqs.Delete(k) }, key)
	}
	q := v.(*simSeq)
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
func (q *simSeq) next(fd int) uint32 {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.fd != fd {
		return 0
	}
	q.sent++
	return q.sent
}

// simTransport runs transfers on the simulated scanner's sockets.
type simTransport struct{ s *usbsim.Scanner }

func (simTransport) check(e *Endpoint, buf []byte) error {
	if !e.desc.IsIn() && len(buf) > e.desc.MaxTransfer {
		return fmt.Errorf("usb: endpoint %#02x: %w: OUT transfer of %d bytes, more than MaxTransfer (%d)",
			e.desc.Address, ioring.ErrInvalid, len(buf), e.desc.MaxTransfer)
	}
	return nil
}

func (t simTransport) run(e *Endpoint, x *xfer) (int, error) {
	if e.desc.IsIn() {
		return t.in(e, x)
	}
	return t.out(e, x)
}

// in is one IN transfer: readv([hdr, buf]) of one message.
func (simTransport) in(e *Endpoint, x *xfer) (int, error) {
	s := e.sim
	if len(s.left) > 0 {
		n := copy(x.buf, s.left)
		s.left = s.left[n:]
		return n, nil
	}
	dst := x.buf
	bounced := len(dst) < e.desc.MaxTransfer
	if bounced {
		if s.bounce == nil {
			s.bounce = make([]byte, e.desc.MaxTransfer)
		}
		dst = s.bounce
	}
	s.iov = [2][]byte{s.hdr, dst}
	c, err := e.startInner(x, ioring.Readv(s.fd, s.iov[:], -1))
	s.iov = [2][]byte{}
	if err != nil {
		return 0, err
	}
	n, err := usbsim.DecodeIn(s.hdr[0], c.N, c.Err)
	if err != nil {
		return 0, simError(err)
	}
	if bounced {
		k := copy(x.buf, s.bounce[:n])
		s.left = s.bounce[k:n]
		n = k
	}
	return n, nil
}

// out is one OUT transfer: writev([HeaderData, buf]) of one message, then
// the device's reply. Replies to messages whose transfer was canceled
// while it waited for them are skipped by their sequence numbers.
func (simTransport) out(e *Endpoint, x *xfer) (int, error) {
	s := e.sim
	s.iov = [2][]byte{s.data, x.buf}
	iov := s.iov[:]
	if len(x.buf) == 0 {
		iov = iov[:1] // a zero-length packet
	}
	c, err := e.startInner(x, ioring.Writev(s.fd, iov, -1))
	s.iov = [2][]byte{}
	if err != nil {
		return 0, err
	}
	if err := usbsim.DecodeWrite(c.N, usbsim.HeaderSize+len(x.buf), c.Err); err != nil {
		return 0, simError(err)
	}
	s.seq = s.seqs.next(s.fd)
	for {
		c, err := e.startInner(x, ioring.Read(s.fd, s.reply, -1))
		if err != nil {
			return 0, err
		}
		if errors.Is(c.Err, ErrCanceled) {
			// The message went out; the device acts on it even though the
			// host stopped waiting for its reply.
			return len(x.buf), c.Err
		}
		seq, err := usbsim.DecodeReply(s.reply, c.N, c.Err)
		if err != nil && !errors.Is(err, usbsim.ErrStall) {
			return 0, simError(err)
		}
		switch {
		case seq < s.seq:
			continue // the reply to a message abandoned earlier
		case seq > s.seq:
			return 0, fmt.Errorf("usb: endpoint %#02x: reply %d to message %d: %w", e.desc.Address, seq, s.seq, usbsim.ErrProtocol)
		case err != nil:
			return 0, ErrStall // the device discarded the message
		}
		return len(x.buf), nil
	}
}

func (t simTransport) clearHalt(e *Endpoint) error {
	e.sim.left = nil // the endpoint's FIFO is reset
	return simError(t.s.ClearHalt(e.desc.Address))
}

func (simTransport) close() error { return nil }

// simError maps usbsim's errors to this package's.
func simError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, usbsim.ErrStall):
		return ErrStall
	case errors.Is(err, usbsim.ErrNoDevice):
		return ErrNoDevice
	}
	return err
}
