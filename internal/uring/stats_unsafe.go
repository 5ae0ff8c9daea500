//go:build linux

package uring

import (
	"sync/atomic"
	"unsafe"
)

// Enters returns how many io_uring_enter calls the ring made (submissions,
// waits and overflow flushes). Any goroutine.
func (r *Ring) Enters() uint64 { return r.enters.Load() }

// CQOverflows returns the kernel's count of completions that did not fit
// the CQ ring (io_cqring_offsets.overflow; with IORING_FEAT_NODROP they
// were kept and flushed later, not lost). Any goroutine.
func (r *Ring) CQOverflows() uint32 {
	mem := r.cqMem
	if mem == nil { // IORING_FEAT_SINGLE_MMAP
		mem = r.ringMem
	}
	return atomic.LoadUint32((*uint32)(unsafe.Pointer(&mem[r.params.CQOff.Overflow])))
}
