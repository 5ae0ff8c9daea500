package ioring

import (
	"fmt"
	"math"
	"sync/atomic"
)

// Registered files: a driver that makes many requests on a few fds
// registers them once (io_uring's IORING_REGISTER_FILES), and requests
// marked Op.FixedFile name them by index: the kernel skips its file lookup
// and reference count per request. The poll backend accepts the same calls:
// it holds a duplicate of each registered fd and runs a request on the
// duplicate of its index, so that, as on io_uring, the request acts on the
// file registered, whatever the caller's fd numbers name by then.

// maxFiles bounds the registered files (the kernel's IORING_MAX_FIXED_FILES).
const maxFiles = 1 << 20

// regFiles is the registered-file table of a Ring.
type regFiles struct {
	n atomic.Int32 // entries in the table (0: none registered), for Op.check
	// held holds the ring's duplicates of the registered fds, -1 for an
	// entry without one: on the poll backend of every fd, on io_uring of
	// the stream sockets (for RecvMultishot's end-of-stream check; nil
	// when there is none). Guarded by r.sqMu.
	held []int32
}

// RegisterFiles registers fds with r, once, for requests marked
// Op.FixedFile, which name them by their index in fds. An fd of -1 leaves
// its entry empty (a request on it completes with EBADF). The kernel (or,
// on the poll backend, the ring) holds a reference to each file until
// UnregisterFiles or Close: closing the caller's fd does not close the
// registered file. It fails with an error wrapping ErrInvalid for an empty
// list or a bad fd, with EBADF for an fd that is not open, and with EBUSY
// when files are registered already.
func (r *Ring) RegisterFiles(fds []int) error {
	if !r.made() {
		return errNoRing("register files", r)
	}
	if len(fds) == 0 || len(fds) > maxFiles {
		return &OpError{Op: "register files", Err: fmt.Errorf("%w: %d files (want 1 to %d)", ErrInvalid, len(fds), maxFiles)}
	}
	table := make([]int32, len(fds))
	for i, fd := range fds {
		if fd < -1 || fd > math.MaxInt32 {
			return &OpError{Op: "register files", Err: fmt.Errorf("%w: fd %d at index %d (want an fd, or -1 for an empty entry)", ErrInvalid, fd, i)}
		}
		table[i] = int32(fd)
	}
	r.sqMu.Lock()
	defer r.unlockSQ()
	if r.closed.Load() {
		return &OpError{Op: "register files", Err: ErrClosed}
	}
	if r.files.n.Load() != 0 {
		return &OpError{Op: "register files", Err: errBusy}
	}
	if err := r.registerFiles(table); err != nil {
		return &OpError{Op: "register files", Err: err}
	}
	r.files.n.Store(int32(len(table)))
	return nil
}

// UnregisterFiles drops the registered files. Requests already accepted
// keep the files they were handed (a request still held in its stream's
// order is handed the table of its turn, and completes with EBADF when
// that is empty). It returns ENXIO when no files are registered.
func (r *Ring) UnregisterFiles() error {
	if !r.made() {
		return errNoRing("unregister files", r)
	}
	r.sqMu.Lock()
	defer r.unlockSQ()
	if r.closed.Load() {
		return &OpError{Op: "unregister files", Err: ErrClosed}
	}
	if r.files.n.Load() == 0 {
		return &OpError{Op: "unregister files", Err: errNoFiles}
	}
	if err := r.unregisterFiles(); err != nil {
		return &OpError{Op: "unregister files", Err: err}
	}
	r.files.n.Store(0)
	return nil
}

// checkFixedFile validates an Op marked FixedFile (Op.check).
func (r *Ring) checkFixedFile(o *Op, d *opDesc) error {
	switch {
	case d.args&argFD == 0 || o.code == OpClose:
		return badOp(d, "FixedFile applies to operations on an fd, not to %s", d.name)
	case o.fd >= int(r.files.n.Load()):
		return badOp(d, "registered file %d of %d (RegisterFiles)", o.fd, r.files.n.Load())
	}
	return nil
}
