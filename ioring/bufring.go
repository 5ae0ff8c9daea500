package ioring

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// maxBufRings bounds the BufRings of one Ring (buffer group ids 0 to
// maxBufRings-1).
const maxBufRings = 1024

// maxBufRingBytes bounds the memory of one BufRing.
const maxBufRingBytes = 1 << 30

// BufRing is a ring of buffers that the ring picks from as data arrives,
// for RecvMultishot: a multishot receive takes a buffer per message, so
// that no buffer is tied up by a request that waits. On io_uring it is a
// provided-buffer ring (IORING_REGISTER_PBUF_RING, kernel 5.19), whose
// entries live in memory mapped for it; on the poll backend the ring hands
// out the buffers itself, in the same order.
//
// Each buffer has an id, 0 to Count-1. A completion with Buffer set hands
// buffer BufID to the caller, who reads it (Bytes) and gives it back with
// Release: until then the kernel cannot use it again. When every buffer is
// out, a RecvMultishot that gets data ends with ENOBUFS (as io_uring
// does). The buffers' memory stays valid while the caller holds a
// reference to the BufRing, even after Close.
//
// A BufRing is safe for concurrent use.
type BufRing struct {
	r     *Ring
	group uint16
	size  int
	count int
	mem   []byte // buffer i is mem[i*size : (i+1)*size]

	users atomic.Int32 // RecvMultishot requests on it whose final completion is not delivered yet

	mu     sync.Mutex
	out    []bool   // handed to the caller, not yet released; guarded by mu
	free   []uint16 // the poll backend's available buffers, a FIFO of count cells; guarded by mu
	fhead  int      // guarded by mu
	fn     int      // guarded by mu
	k      kernelBufRing
	closed bool // guarded by mu
}

// kernelBufRing is the kernel's side of a BufRing (io_uring's provided
// buffer ring), or nil on the poll backend.
type kernelBufRing interface {
	// add puts buffer id back in the kernel's ring and publishes it.
	add(id uint16, buf []byte)
	// close unregisters the ring (unless the kernel ring is gone) and
	// unmaps its memory.
	close(unregister bool) error
}

// NewBufRing makes a ring of count buffers of size bytes each, all
// available to the kernel, for RecvMultishot. count is a power of two from
// 1 to 32768; size is at least 1 and count*size at most 1 GiB. Close it
// when done (Ring.Close closes what is left). On io_uring it fails with
// ErrNotSupported when the kernel lacks provided-buffer rings.
func (r *Ring) NewBufRing(count, size int) (*BufRing, error) {
	if !r.made() {
		return nil, errNoRing("bufring", r)
	}
	if count < 1 || count > 32768 || count&(count-1) != 0 {
		return nil, &OpError{Op: "bufring", Err: fmt.Errorf("%w: count %d (want a power of two from 1 to 32768)", ErrInvalid, count)}
	}
	if size < 1 || size > maxBufRingBytes/count {
		return nil, &OpError{Op: "bufring", Err: fmt.Errorf("%w: %d buffers of %d bytes (want at least 1 byte each, at most 1 GiB in all)", ErrInvalid, count, size)}
	}
	b := &BufRing{r: r, size: size, count: count, out: make([]bool, count)}
	b.mem = make([]byte, count*size)
	r.sqMu.Lock()
	defer r.unlockSQ()
	if r.closed.Load() {
		return nil, &OpError{Op: "bufring", Err: ErrClosed}
	}
	group := -1
	for i, o := range r.bufRings {
		if o == nil {
			group = i
			break
		}
	}
	if group < 0 {
		if len(r.bufRings) >= maxBufRings {
			return nil, &OpError{Op: "bufring", Err: fmt.Errorf("%w: %d buffer rings on this ring already", ErrInvalid, maxBufRings)}
		}
		group = len(r.bufRings)
		r.bufRings = append(r.bufRings, nil)
	}
	b.group = uint16(group)
	k, err := r.newKernelBufRing(b)
	if err != nil {
		return nil, &OpError{Op: "bufring", Err: err}
	}
	b.k = k
	if k == nil {
		b.free = make([]uint16, count)
		for i := range b.free {
			b.free[i] = uint16(i)
		}
		b.fn = count
	}
	r.bufRings[group] = b
	return b, nil
}

// Count returns the number of buffers.
func (b *BufRing) Count() int {
	if b == nil {
		return 0
	}
	return b.count
}

// Size returns the size of each buffer.
func (b *BufRing) Size() int {
	if b == nil {
		return 0
	}
	return b.size
}

// Buf returns buffer id, all Size bytes of it (nil for an id out of range).
func (b *BufRing) Buf(id uint16) []byte {
	if b == nil || int(id) >= b.count {
		return nil
	}
	o := int(id) * b.size
	return b.mem[o : o+b.size : o+b.size]
}

// Bytes returns the data a completion of RecvMultishot carries: the first
// c.N bytes of buffer c.BufID, or nil when c carries no buffer.
func (b *BufRing) Bytes(c Completion) []byte {
	if !c.Buffer || c.N <= 0 {
		return nil
	}
	buf := b.Buf(c.BufID)
	if c.N > len(buf) {
		return buf
	}
	return buf[:c.N]
}

// Release gives buffer id, which a completion handed over, back to the
// ring for the kernel to fill again. Releasing a buffer that is not the
// caller's (never handed over, or released already) is refused with
// ErrInvalid; after Close, with ErrClosed.
func (b *BufRing) Release(id uint16) error {
	if b == nil || b.r == nil {
		return errNoBufRing("bufring release")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return &OpError{Op: "bufring release", Err: ErrClosed}
	}
	if int(id) >= b.count || !b.out[id] {
		return &OpError{Op: "bufring release", Err: fmt.Errorf("%w: buffer %d is not handed out (of %d)", ErrInvalid, id, b.count)}
	}
	b.out[id] = false
	if b.k != nil {
		b.k.add(id, b.Buf(id))
		return nil
	}
	b.free[(b.fhead+b.fn)%b.count] = id
	b.fn++
	return nil
}

// Close unregisters the ring from the kernel and unmaps its memory. It
// fails with an error wrapping EBUSY while a RecvMultishot on it has not
// delivered its final completion (cancel it, and take that first), and with
// ErrClosed when closed already (Ring.Close closes every BufRing left).
// Buffers still out stay readable.
func (b *BufRing) Close() error {
	if b == nil || b.r == nil {
		return errNoBufRing("bufring close")
	}
	r := b.r
	r.sqMu.Lock()
	defer r.unlockSQ()
	if n := b.users.Load(); n > 0 {
		return &OpError{Op: "bufring close", Err: fmt.Errorf("%w: %d multishot receives use it (their final completions not taken yet)", errBusy, n)}
	}
	// Once Ring.Close has fenced the backend off (r.sqMu orders this with
	// it), the kernel ring is being released, its fd with it: nothing is
	// unregistered through it (the number may name another ring by now),
	// and the release takes the buffer group with the ring.
	if err := b.closeLocked(!r.beDead); err != nil {
		return err
	}
	if int(b.group) < len(r.bufRings) && r.bufRings[b.group] == b {
		r.bufRings[b.group] = nil
	}
	return nil
}

// errNoBufRing refuses op on a nil or zero BufRing.
func errNoBufRing(op string) error { return errNotMade(op, "BufRing", "Ring.NewBufRing") }

// closeLocked closes b; unregister is false once the kernel ring is gone
// (Ring.Close). r.sqMu held.
func (b *BufRing) closeLocked(unregister bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return &OpError{Op: "bufring close", Err: ErrClosed}
	}
	b.closed = true
	if b.k != nil {
		if err := b.k.close(unregister); err != nil {
			return &OpError{Op: "bufring close", Err: err}
		}
	}
	return nil
}

// closeBufRings closes every BufRing left, once the backend is closed
// (Ring.Close).
func (r *Ring) closeBufRings() {
	r.sqMu.Lock()
	rings := r.bufRings
	r.bufRings = nil
	r.sqMu.Unlock()
	for _, b := range rings {
		if b != nil {
			b.closeLocked(false)
		}
	}
}

// isClosed reports whether b was closed.
func (b *BufRing) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// handedOut records that buffer id, which the kernel (or the poll
// backend) filled, is the caller's: its completion was delivered.
func (b *BufRing) handedOut(id uint16) {
	if int(id) >= b.count {
		return
	}
	b.mu.Lock()
	b.out[id] = true
	b.mu.Unlock()
}

// takeFree takes the next available buffer, for the poll backend: its id,
// or false when none is left (or b is closed).
func (b *BufRing) takeFree() (uint16, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fn == 0 || b.closed {
		return 0, false
	}
	id := b.free[b.fhead]
	b.fhead = (b.fhead + 1) % b.count
	b.fn--
	return id, true
}

// putBack returns buffer id, taken with takeFree and not used, first in
// line again.
func (b *BufRing) putBack(id uint16) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fhead = (b.fhead - 1 + b.count) % b.count
	b.free[b.fhead] = id
	b.fn++
}
