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
