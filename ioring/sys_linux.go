package ioring

import (
	"github.com/cancelio/cancelio/internal/uring"
	"golang.org/x/sys/unix"
)

// The ring's bookkeeping speaks the kernel's language: a completion's
// result is a count or a negative errno (io_uring's cqe.res, and what the
// poll backend's system calls return), and vectored and timed requests keep
// the iovecs and timespecs the kernel reads in their slot until the CQE.
type (
	iovec    = unix.Iovec
	timespec = uring.Timespec // io_uring's __kernel_timespec: 64-bit fields everywhere
	sysErrno = unix.Errno
)

// The errnos the ring itself interprets (see slot.result).
const (
	eCanceled  = unix.ECANCELED // the request was canceled
	eIntr      = unix.EINTR     // the poll backend's worker was interrupted by a cancel
	eTime      = unix.ETIME     // an OpTimeout ran its course
	eInval     = unix.EINVAL    // a held request could not be handed to the kernel again
	errBusy    = unix.EBUSY     // a BufRing in use, files registered already
	errNoFiles = unix.ENXIO     // no files registered
)

// pollResult is the events a poll completes with, from its result res: the
// ones asked for (events) plus POLLERR and POLLHUP, as poll(2) and the poll
// backend report them. io_uring arms every poll for POLLRDHUP and POLLNVAL
// as well and reports them unasked. An errno (res < 0) is kept.
func pollResult(res int32, events uint32) int32 {
	if res <= 0 {
		return res
	}
	return res & int32(events&pollableMask|unix.POLLERR|unix.POLLHUP)
}

// threadID returns the id of the calling goroutine's thread of the moment.
func threadID() int32 { return int32(unix.Gettid()) }

// threadGone reports whether this process's thread tid has exited.
// A retry's path only: the pid is asked for here, not at start-up.
func threadGone(tid int32) bool { return unix.Tgkill(unix.Getpid(), int(tid), 0) == unix.ESRCH }
