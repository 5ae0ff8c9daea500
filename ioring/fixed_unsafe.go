//go:build linux

package ioring

import (
	"fmt"
	"unsafe"

	"github.com/cancelio/cancelio/internal/uring"
	"golang.org/x/sys/unix"
)

// Registered buffers: a driver streaming large transfers registers its
// buffers once, and reads and writes into them skip the kernel's per-request
// page pinning (io_uring's READ_FIXED and WRITE_FIXED). The poll backend
// accepts the same calls and runs them as plain reads and writes.

// maxFixed is the kernel's limit on registered buffers (IORING_MAX_REG_BUFFERS).
const maxFixed = 1 << 14

// RegisterBuffers registers bufs with r, once, for ReadFixed and WriteFixed,
// which name them by index. The ring keeps them reachable until
// UnregisterBuffers or Close, and the kernel keeps their pages pinned: do not
// let anything else write to them while requests use them. It fails with
// an error wrapping ErrInvalid for an empty list or an empty buffer, and
// with EBUSY when buffers are registered already.
func (r *Ring) RegisterBuffers(bufs [][]byte) error {
	if !r.made() {
		return errNoRing("register", r)
	}
	if len(bufs) == 0 || len(bufs) > maxFixed {
		return &OpError{Op: "register", Err: fmt.Errorf("%w: %d buffers (want 1 to %d)", ErrInvalid, len(bufs), maxFixed)}
	}
	iovs := make([]unix.Iovec, len(bufs))
	for i, b := range bufs {
		if len(b) == 0 || len(b) > 1<<30 {
			return &OpError{Op: "register", Err: fmt.Errorf("%w: buffer %d of %d bytes (want 1 byte to 1 GiB)", ErrInvalid, i, len(b))}
		}
		iovs[i].Base = &b[0]
		iovs[i].SetLen(len(b))
	}
	r.sqMu.Lock()
	defer r.unlockSQ()
	if r.closed.Load() {
		return &OpError{Op: "register", Err: ErrClosed}
	}
	if r.fixed != nil {
		return &OpError{Op: "register", Err: unix.EBUSY}
	}
	if err := r.registerBuffers(iovs); err != nil {
		return &OpError{Op: "register", Err: err}
	}
	r.fixed = append([][]byte(nil), bufs...)
	return nil
}

// UnregisterBuffers drops the registered buffers. Requests already
// accepted keep the buffers they were handed and complete normally, except
// one still held in its stream's order (see Order): it is handed the
// buffers registered at its turn, and completes with EFAULT when its
// buffer lies in none of them (as UnregisterFiles does for files). It
// returns ENXIO when none are registered.
func (r *Ring) UnregisterBuffers() error {
	if !r.made() {
		return errNoRing("unregister", r)
	}
	r.sqMu.Lock()
	defer r.unlockSQ()
	if r.closed.Load() {
		return &OpError{Op: "unregister", Err: ErrClosed}
	}
	if r.fixed == nil {
		return &OpError{Op: "unregister", Err: unix.ENXIO}
	}
	if err := r.unregisterBuffers(); err != nil {
		return &OpError{Op: "unregister", Err: err}
	}
	r.fixed = nil
	return nil
}

// ReadFixed reads into buf, which lies inside registered buffer index (see
// RegisterBuffers), from fd at offset off (-1: the current position, ordered
// as Read). It completes with the number of bytes read; a buf outside the
// registered buffer, or an index with no buffer registered, completes with
// EFAULT (as io_uring's does).
func ReadFixed(fd int, buf []byte, off int64, index int) Op {
	return Op{code: OpReadFixed, fd: fd, buf: buf, off: off, events: fixedIndex(index)}
}

// WriteFixed writes buf, which lies inside registered buffer index, to fd at
// offset off (-1: the current position), like Write.
func WriteFixed(fd int, buf []byte, off int64, index int) Op {
	return Op{code: OpWriteFixed, fd: fd, buf: buf, off: off, events: fixedIndex(index)}
}

// badFixed stands for a buffer index outside 0..maxFixed-1 in an Op:
// stored as is, an index such as 1<<32 would be truncated into a valid
// one, and the op would use a buffer its caller did not name.
const badFixed = ^uint32(0)

// fixedIndex is index as an Op holds it: badFixed when out of range.
func fixedIndex(index int) uint32 {
	if index < 0 || index >= maxFixed {
		return badFixed
	}
	return uint32(index)
}

func checkFixed(o Op) error {
	if o.events >= maxFixed {
		return fmt.Errorf("buffer index out of range (want 0 to %d)", maxFixed-1)
	}
	return nil
}

// inFixed reports whether slot s's buffer lies inside its registered
// buffer. r.sqMu held.
func (r *Ring) inFixed(s *slot) bool {
	if int(s.events) >= len(r.fixed) {
		return false
	}
	b := r.fixed[s.events]
	lo, hi := uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&b[0]))+uintptr(len(b))
	p := uintptr(unsafe.Pointer(&s.buf[0]))
	return p >= lo && p+uintptr(len(s.buf)) <= hi
}

// registerBuffers hands the buffers to the backend. r.sqMu held.
func (r *Ring) registerBuffers(iovs []unix.Iovec) error {
	if b, ok := r.be.(*uringBackend); ok {
		return b.ring.RegisterBuffers(iovs)
	}
	return nil // the poll backend reads and writes them as plain buffers
}

// unregisterBuffers takes them back. r.sqMu held.
func (r *Ring) unregisterBuffers() error {
	if b, ok := r.be.(*uringBackend); ok {
		return b.ring.UnregisterBuffers()
	}
	return nil
}

func prepFixed(s *slot, sqe *uring.SQE) {
	sqe.Addr = uint64(uintptr(unsafe.Pointer(&s.buf[0])))
	sqe.Len = uint32(len(s.buf))
	sqe.Off = uint64(s.off)
	sqe.BufIndex = uint16(s.events)
}

// rwFixed runs slot s's ReadFixed or WriteFixed once on the poll backend,
// on fd (the request's, or the duplicate it holds), as rw does a Read or
// Write: preadv2/pwritev2 with flags (RWF_NOWAIT, or 0 to block), returning
// the count or -errno.
func rwFixed(s *slot, fd int32, flags int) int32 {
	var iov unix.Iovec
	iov.Base = &s.buf[0]
	iov.SetLen(len(s.buf))
	return rwv(fd, s.code == OpWriteFixed, &iov, 1, s.off, flags)
}
