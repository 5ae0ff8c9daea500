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
// waits on). The kernel tells such a cancel by its result: EALREADY (the
// request was running) or ENOENT (between the worker's queue and its run),
// and a cancel of everything tells nothing. Those start a sweep
// (kickBlocking), which sends the cancel of every such request canceled
// and still in flight again, every blockingSweep, until none is left.
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
	// flight; completed ones are dropped by the sweep, or when the set
	// has doubled since it was last pruned (pruneAt).
	keys    map[uint64]struct{} // guarded by mu
	pruneAt int                 // guarded by mu
	n       atomic.Int32        // len(keys), read without mu by the cancel paths
	running bool                // a sweep is scheduled; guarded by mu
	resent  atomic.Uint64       // cancels the sweep sent again, for the tests
	// fixed says, for each registered file, whether it is a blocking
	// character device. Guarded by Ring.sqMu.
	fixed []bool
}

// blockingSweep is how long after a cancel that may not have landed the
// sweep looks (and again while a canceled request is not complete): a
// worker that got the notification has long returned by then.
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
		k.keys = make(map[uint64]struct{})
	}
	if len(k.keys) >= k.pruneAt {
		b.pruneBlocking()
		k.pruneAt = max(64, 2*len(k.keys))
	}
	k.keys[key] = struct{}{}
	k.n.Store(int32(len(k.keys)))
	k.mu.Unlock()
}

// pruneBlocking drops the requests of blockingIO that completed. k.mu held.
func (b *uringBackend) pruneBlocking() {
	for key := range b.blk.keys {
		if kk, st := b.r.slots[key&idxMask].keyState(); kk != key || st != stActive {
			delete(b.blk.keys, key)
		}
	}
	b.blk.n.Store(int32(len(b.blk.keys)))
}

// kickBlocking schedules a sweep, unless one is: a cancel that reached a
// request running in a worker (the kernel says EALREADY), or one that
// found nothing at a moment the request was between the worker's queue
// and its run (ENOENT), or a cancel of everything, may not have landed.
// Any goroutine.
func (b *uringBackend) kickBlocking() {
	k := &b.blk
	k.mu.Lock()
	if !k.running {
		k.running = true
		time.AfterFunc(blockingSweep, b.sweepBlocking)
	}
	k.mu.Unlock()
}

// sweepBlocking drops the requests of blockingIO that completed and sends
// the cancel of those canceled and still in flight again. It runs again
// while any such is left, and stops otherwise: a terminal's request that
// nobody cancels costs no wake-ups.
func (b *uringBackend) sweepBlocking() {
	r := b.r
	k := &b.blk
	resend := false
	k.mu.Lock()
	b.pruneBlocking()
	for key := range k.keys {
		if r.slots[key&idxMask].flags.Load()&(flCancelReq|flTimedOut) != 0 {
			r.pushDeferred(kindCancel, key)
			k.resent.Add(1)
			resend = true
		}
	}
	k.running = resend
	if resend {
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
