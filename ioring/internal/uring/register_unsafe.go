//go:build linux

package uring

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// RegisterBuffers registers the buffers iovs describes
// (IORING_REGISTER_BUFFERS): the kernel pins their pages once, and
// READ_FIXED and WRITE_FIXED name them by index. EBUSY: some are
// registered already.
func (r *Ring) RegisterBuffers(iovs []unix.Iovec) error {
	if len(iovs) == 0 {
		return unix.EINVAL
	}
	return r.register(RegisterBuffers, unsafe.Pointer(&iovs[0]), uintptr(len(iovs)))
}

// UnregisterBuffers drops the registered buffers (IORING_UNREGISTER_BUFFERS).
func (r *Ring) UnregisterBuffers() error { return r.register(UnregisterBuffers, nil, 0) }
