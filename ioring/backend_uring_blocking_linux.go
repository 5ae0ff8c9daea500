//go:build linux

package ioring

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/cancelio/cancelio/internal/uring"
	"golang.org/x/sys/unix"
)

// Reads and writes at the current position on a blocking character device
// (a terminal, a serial port, opened without O_NONBLOCK) on io_uring.
//
// io_uring tries such a request without waiting first (IOCB_NOWAIT), in
// io_uring_enter itself or in the submitting thread's task work once poll
// says the file is ready. A terminal on a blocking description ignores
// that and waits: on a Go thread, inside the system call, holding the
// ring's submission lock in the kernel, so that every other call into the
// ring waits too and, since the submission is a raw system call, the
// thread keeps its P: a stop of the world never completes and the process
// stalls. These requests go to io_uring's workers instead (IOSQE_ASYNC),
// where waiting is what they are for. A cancel interrupts a worker with a
// signal-like notification, which the worker can consume before it starts
// to wait (the kernel then has nothing more to interrupt, and the request
// waits on); so, while such a request stays canceled and not completed,
// its cancel is sent again (blockingIO.sweep) until its completion comes.
//
// The check costs an fstat (and, for a character device, an fcntl) per
// request at the current position that the ring hands to the kernel, and
// nothing for the others: positioned reads and writes (files, block
// devices) and every other operation. Registered files are checked once,
// when RegisterFiles registers them.

// blockingIO is the io_uring backend's record of the requests it handed to
// its workers because their file may wait regardless of IOCB_NOWAIT.
type blockingIO struct {
	mu sync.Mutex
	// keys holds the requests sent with IOSQE_ASYNC that may still be in
	// flight, each with the number of sweeps that found it canceled.
	keys    map[uint64]uint8 // guarded by mu
	running bool             // a sweep is scheduled; guarded by mu
	resent  atomic.Uint64    // cancels the sweep sent again, for the tests
	// fixed says, for each registered file, whether it is a blocking
	// character device. Guarded by Ring.sqMu.
	fixed []bool
}

// blockingSweep is how often the requests of blockingIO are looked at; a
// cancel is sent again once a request was found canceled and not complete
// twice in a row (after 5 to 10 ms: a worker that got the first one has
// long returned by then).
const blockingSweep = 5 * time.Millisecond

// blockingReq reports whether slot s, a request at the current position
// (offset -1), is a read or write on a blocking character device, which
// goes to io_uring's workers. Its deadline is then kept by a timer of the
// ring, not by a linked timeout: the kernel did not fire the linked
// timeout of a terminal's write waiting in a worker (6.18). r.sqMu held.
func (b *uringBackend) blockingReq(s *slot) bool {
	if s.code.desc().args&argOff == 0 {
		return false
	}
	if s.fixedFD {
		return int(s.fd) < len(b.blk.fixed) && b.blk.fixed[s.fd]
	}
	return blockingChar(s.fd)
}

// queueBlocking marks the SQE of the request key, which blockingReq
// admitted, for io_uring's workers, and records it for the sweep. r.sqMu
// held.
func (b *uringBackend) queueBlocking(key uint64, sqe *uring.SQE) {
	sqe.Flags |= uring.SQEAsync
	k := &b.blk
	k.mu.Lock()
	if k.keys == nil {
		k.keys = make(map[uint64]uint8)
	}
	k.keys[key] = 0
	if !k.running {
		k.running = true
		time.AfterFunc(blockingSweep, b.sweepBlocking)
	}
	k.mu.Unlock()
}

// sweepBlocking forgets the requests of blockingIO that completed and
// sends the cancel of those canceled since the sweep before again. It
// runs while any is left.
func (b *uringBackend) sweepBlocking() {
	r := b.r
	k := &b.blk
	resend := false
	k.mu.Lock()
	for key, seen := range k.keys {
		s := &r.slots[key&idxMask]
		if kk, st := s.keyState(); kk != key || st != stActive {
			delete(k.keys, key)
			continue
		}
		if s.flags.Load()&(flCancelReq|flTimedOut) == 0 {
			continue
		}
		if seen < 2 {
			seen++
			k.keys[key] = seen
		}
		if seen == 2 {
			r.pushDeferred(kindCancel, key)
			k.resent.Add(1)
			resend = true
		}
	}
	k.running = len(k.keys) > 0
	if k.running {
		time.AfterFunc(blockingSweep, b.sweepBlocking)
	}
	k.mu.Unlock()
	if resend {
		// The holder of r.sqMu sends them when another goroutine has it.
		r.submitDeferred()
	}
}

// registerBlocking notes which files of a table RegisterFiles hands to the
// kernel are blocking character devices. r.sqMu held.
func (b *uringBackend) registerBlocking(table []int32) {
	b.blk.fixed = nil
	for i, fd := range table {
		if fd >= 0 && blockingChar(fd) {
			if b.blk.fixed == nil {
				b.blk.fixed = make([]bool, len(table))
			}
			b.blk.fixed[i] = true
		}
	}
}

// blockingChar reports whether fd is a character device opened without
// O_NONBLOCK. An fd it cannot look at is not one: the request fails on
// its own.
func blockingChar(fd int32) bool {
	var st unix.Stat_t
	if unix.Fstat(int(fd), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return false
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	return err == nil && fl&unix.O_NONBLOCK == 0
}
