//go:build linux

package ioring

import (
	"bytes"
	"errors"
	"fmt"
	"math"

	"golang.org/x/sys/unix"
)

// File operations as requests: a device node that takes long to open (or
// close) no longer blocks a thread of the caller's, and the open can be
// canceled. On io_uring they run in the kernel's workers (IORING_OP_OPENAT,
// CLOSE, STATX, each probed alone), where a cancel interrupts an open that
// waits; on the poll backend they run on its worker pool, where a request
// still queued is canceled at once and one already running delivers its
// real result, and an open never waits there for a FIFO's other end (see
// BackendPoll for how each backend opens a FIFO).

// OpenAt opens path relative to the directory fd dirfd (unix.AT_FDCWD: the
// working directory) with flags (unix.O_*; O_CLOEXEC is always added) and
// mode, like openat(2). It completes with the new fd, which belongs to the
// caller (a cancel that loses the race delivers it too: close it). Building
// the Op copies path (one allocation); an empty path (openat(2) says
// ENOENT) and a path with a NUL byte are refused with ErrInvalid.
// dirfd must stay open until the completion, as on io_uring, which reads
// it when the open runs (in a worker, that may be after Submit returned):
// a dirfd closed before then fails the open with EBADF, or, its number
// reused, resolves path in another directory. The same holds for Statx.
func OpenAt(dirfd int, path string, flags int, mode uint32) Op {
	return Op{code: OpOpenAt, fd: dirfd, buf: cString(path), events: uint32(flags | unix.O_CLOEXEC), off: int64(mode)}
}

// Close closes fd. It completes with 0, or with the error close(2)
// reports (the fd is closed even then). Do not close an fd under requests
// still pending on it: cancel them and wait for their completions first.
func Close(fd int) Op {
	o := Op{code: OpClose, fd: fd}
	o.settleArgs()
	return o
}

// Statx stores into st the status of path relative to dirfd (unix.AT_FDCWD,
// or an fd with path "" and unix.AT_EMPTY_PATH in flags), asking for the
// fields in mask (unix.STATX_BASIC_STATS...), like statx(2). It completes
// with 0. st belongs to the Ring until the completion is delivered. Building
// the Op copies path (one allocation).
func Statx(dirfd int, path string, flags int, mask int, st *unix.Statx_t) Op {
	op := Op{code: OpStatx, fd: dirfd, events: uint32(flags), off: int64(uint32(mask))}
	if st != nil {
		// The path and st travel as two buffers: fill pins both.
		op.bufs, op.rare = [][]byte{cString(path), statxBytes(st)}, op.rare|rareFeature
	}
	return op
}

// errnoRestartSys is the kernel's internal ERESTARTSYS, which io_uring
// lets out when it interrupts an open blocked in one of its workers (a FIFO
// waiting for its other end) to cancel it.
const errnoRestartSys sysErrno = 512

// cString returns s with a terminating NUL.
func cString(s string) []byte {
	b := make([]byte, len(s)+1)
	copy(b, s)
	return b
}

// checkPath refuses a dirfd that is neither an fd nor AT_FDCWD, and a path
// with a NUL byte.
func checkPath(o Op, path []byte) error {
	if o.fd != unix.AT_FDCWD && (o.fd < 0 || o.fd > math.MaxInt32) {
		return fmt.Errorf("directory fd %d (want an fd or AT_FDCWD)", o.fd)
	}
	if len(path) == 0 || path[len(path)-1] != 0 {
		return errors.New("no path (use the OpenAt and Statx constructors)")
	}
	if bytes.IndexByte(path, 0) != len(path)-1 {
		return errors.New("path contains a NUL byte")
	}
	return nil
}

func checkOpenAt(o Op) error {
	if err := checkPath(o, o.buf); err != nil {
		return err
	}
	if len(o.buf) == 1 {
		return errors.New("empty path")
	}
	if o.off < 0 || o.off > 0o7777 {
		return fmt.Errorf("mode %#o", o.off)
	}
	return nil
}

func checkStatx(o Op) error {
	if len(o.bufs) != 2 {
		return errors.New("nil Statx_t")
	}
	if err := checkPath(o, o.bufs[0]); err != nil {
		return err
	}
	if len(o.bufs[0]) == 1 && o.events&unix.AT_EMPTY_PATH == 0 {
		return errors.New("empty path without AT_EMPTY_PATH")
	}
	return nil
}
