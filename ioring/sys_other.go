//go:build !linux

package ioring

import "syscall"

// Nothing completes a request on this platform yet (New fails with
// ErrNotSupported: see backend_other.go), so these stand in for the Linux
// types of sys_linux.go only so that the ring's bookkeeping builds, with
// the same public types (IOError.Err is a syscall.Errno, which Plan 9 does
// not have: ioring does not build there). A backend for this platform defines them from its own system:
// a Windows IOCP backend would store the Win32 error of a completion packet
// as a negative result and make eCanceled ERROR_OPERATION_ABORTED (what
// CancelIoEx produces).
type (
	iovec struct {
		Base *byte
		Len  uint64
	}
	timespec struct{}
	sysErrno = syscall.Errno
)

func (v *iovec) SetLen(n int) { v.Len = uint64(n) }

// The codes the ring interprets.
const (
	eCanceled  = syscall.ECANCELED
	eIntr      = syscall.EINTR
	eInval     = syscall.EINVAL
	errBusy    = syscall.EBUSY
	errNoFiles = syscall.ENXIO
	// eTime is what io_uring reports for an OpTimeout that ran its course;
	// no completion carries it here (not every system has ETIME), so it
	// only needs to be an errno the ring never receives.
	eTime sysErrno = 1<<31 - 1
)

// pollResult is res: no backend polls here.
func pollResult(res int32, _ uint32) int32 { return res }

// threadID returns 0: no backend retries here.
func threadID() int32 { return 0 }
